"""Placing an activation vector on a 2-D grid so a convolutional UNet can read it as an image.

Activation dimensions have no spatial order, so a grid is a choice. Three pieces live here:

* :func:`choose_grid_shape` picks ``(height, width)`` for ``d_model`` cells: both sides divisible by
  the UNet's total downsampling factor, as little padding as possible, then as square as possible
  (576 -> 24x24, 5120 -> 64x80 with a 3-block UNet).
* Paths through the grid (:func:`grid_path`): row-major (the write-up's plain ``reshape``), snake
  (boustrophedon) or a generalised Hilbert curve, along which a 1-D order of dimensions is laid out.
  On snake and Hilbert paths consecutive cells are 2-D neighbours.
* :func:`spectral_order` orders dimensions so strongly correlated ones are adjacent (the Fiedler
  vector of the |correlation| graph); :func:`layout_from_samples` lays that order along a path.

A layout is one integer tensor, ``cell_of_dim`` (``[d_model]``, values in ``[0, height*width)``,
all distinct): dimension ``i`` sits in flat row-major cell ``cell_of_dim[i]``. Cells no dimension
occupies are padding. :class:`GridLayout` keeps it as a buffer (so it is saved in safetensors with
the weights) and converts vectors to grids and back.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from tl_diffusion_prior.core.moments import covariance
from tl_diffusion_prior.core.validation import check_choice, check_float, check_int

GRID_PATHS = ("row_major", "snake", "hilbert")


def choose_grid_shape(d_model: int, multiple: int, max_aspect: float = 4.0) -> tuple[int, int]:
    """Smallest-padding ``(height, width)`` grid holding ``d_model`` cells.

    Both sides are multiples of ``multiple`` (``2 ** (n_blocks - 1)`` for a UNet with ``n_blocks``
    resolutions) and the long side is at most ``max_aspect`` times the short one. Among grids with
    the least padding the most square one wins, with height <= width.
    """
    check_int("d_model", d_model, minimum=1)
    check_int("multiple", multiple, minimum=1)
    check_float("max_aspect", max_aspect, minimum=1.0)
    best: tuple[int, float, int, int] | None = None
    height = multiple
    # height <= width, so height never needs to exceed the side of the smallest square that fits
    while (height - multiple) ** 2 < d_model:
        width = max(height, -(-d_model // height))
        width = -(-width // multiple) * multiple
        aspect = width / height
        key = (height * width - d_model, aspect, height, width)
        if aspect <= max_aspect and (best is None or key[:2] < best[:2]):
            best = key
        height += multiple
    assert best is not None  # the square candidate always has aspect 1
    return best[2], best[3]


def _sign(v: int) -> int:
    return (v > 0) - (v < 0)


def _gilbert(x: int, y: int, ax: int, ay: int, bx: int, by: int) -> Iterator[tuple[int, int]]:
    """Generalised Hilbert curve (J. Cervený's "gilbert") over a rectangle spanned by a and b."""
    w = abs(ax + ay)
    h = abs(bx + by)
    dax, day = _sign(ax), _sign(ay)
    dbx, dby = _sign(bx), _sign(by)
    if h == 1:
        for _ in range(w):
            yield x, y
            x, y = x + dax, y + day
        return
    if w == 1:
        for _ in range(h):
            yield x, y
            x, y = x + dbx, y + dby
        return
    ax2, ay2 = ax // 2, ay // 2
    bx2, by2 = bx // 2, by // 2
    w2 = abs(ax2 + ay2)
    h2 = abs(bx2 + by2)
    if 2 * w > 3 * h:
        if w2 % 2 and w > 2:
            ax2, ay2 = ax2 + dax, ay2 + day
        yield from _gilbert(x, y, ax2, ay2, bx, by)
        yield from _gilbert(x + ax2, y + ay2, ax - ax2, ay - ay2, bx, by)
    else:
        if h2 % 2 and h > 2:
            bx2, by2 = bx2 + dbx, by2 + dby
        yield from _gilbert(x, y, bx2, by2, ax2, ay2)
        yield from _gilbert(x + bx2, y + by2, ax, ay, bx - bx2, by - by2)
        yield from _gilbert(
            x + (ax - dax) + (bx2 - dbx),
            y + (ay - day) + (by2 - dby),
            -bx2,
            -by2,
            -(ax - ax2),
            -(ay - ay2),
        )


def grid_path(height: int, width: int, path: str) -> Int[Tensor, " cells"]:
    """Flat row-major indices of the cells of a ``height x width`` grid, in ``path`` order."""
    check_choice("path", path, GRID_PATHS)
    check_int("height", height, minimum=1)
    check_int("width", width, minimum=1)
    cells = torch.arange(height * width).view(height, width)
    if path == "row_major":
        return cells.reshape(-1)
    if path == "snake":
        cells = cells.clone()
        cells[1::2] = cells[1::2].flip(1)
        return cells.reshape(-1)
    if width >= height:
        points = _gilbert(0, 0, width, 0, 0, height)
    else:
        points = _gilbert(0, 0, 0, height, width, 0)
    return torch.tensor([y * width + x for x, y in points], dtype=torch.long)


def _fiedler_vector(affinity: Tensor) -> Tensor:
    """Second eigenvector of the normalised Laplacian of ``affinity``, in node coordinates."""
    n = affinity.shape[0]
    inv_sqrt = affinity.sum(1).clamp_min(1e-12).rsqrt()
    laplacian = torch.eye(n, dtype=affinity.dtype) - inv_sqrt[:, None] * affinity * inv_sqrt
    _, vectors = torch.linalg.eigh(laplacian)
    return inv_sqrt * vectors[:, 1]


def spectral_order(correlation: Float[Tensor, "d d"], leaf_size: int = 4) -> Int[Tensor, " d"]:
    """Order dims so strongly ``|correlated|`` ones are adjacent, by recursive spectral bisection.

    The Fiedler vector of the graph weighted by ``|correlation|`` is the smooth 1-D embedding that
    keeps strongly connected nodes close. One vector alone can interleave several equally
    separate clusters, so the dims are split at its median and each half is ordered the same way,
    recursively: every cluster ends up contiguous, and halves map onto the Hilbert curve's
    quadrants.
    """
    if correlation.ndim != 2 or correlation.shape[0] != correlation.shape[1]:
        raise ValueError(
            f"correlation must be a square matrix, got shape {tuple(correlation.shape)}."
        )
    affinity = correlation.detach().to("cpu", torch.float64).abs().nan_to_num(0.0)
    affinity.fill_diagonal_(0.0)

    def order(nodes: Tensor) -> Tensor:
        if nodes.numel() <= leaf_size:
            return nodes
        fiedler = _fiedler_vector(affinity[nodes][:, nodes])
        ranked = nodes[torch.argsort(fiedler, stable=True)]
        half = nodes.numel() // 2
        return torch.cat([order(ranked[:half]), order(ranked[half:])])

    return order(torch.arange(affinity.shape[0]))


def correlation_matrix(samples: Float[Tensor, "n d"]) -> Float[Tensor, "d d"]:
    """Pearson correlation of the columns of ``samples`` (float64; constant columns get 0)."""
    if samples.ndim != 2 or samples.shape[0] < 2:
        raise ValueError(f"samples must be [n >= 2, d], got shape {tuple(samples.shape)}.")
    _, cov = covariance(samples.detach(), correction=1, device=samples.device)
    std = cov.diagonal().clamp_min(0).sqrt()
    safe = torch.where(std > 0, std, torch.ones_like(std))
    corr = cov / safe[:, None] / safe[None, :]
    dead = std == 0
    corr[dead, :] = 0.0
    corr[:, dead] = 0.0
    return corr


def layout_from_order(
    order: Int[Tensor, " d"], height: int, width: int, path: str
) -> Int[Tensor, " d"]:
    """``cell_of_dim`` with ``order[k]`` in the k-th cell of ``path``; the tail is padding."""
    d = order.shape[0]
    if height * width < d:
        raise ValueError(f"A {height}x{width} grid cannot hold {d} dimensions.")
    cells = grid_path(height, width, path)[:d]
    cell_of_dim = torch.empty(d, dtype=torch.long)
    cell_of_dim[order.to(torch.long)] = cells
    return cell_of_dim


def layout_from_samples(
    samples: Float[Tensor, "n d"], height: int, width: int, path: str = "hilbert"
) -> Int[Tensor, " d"]:
    """Data-driven layout: spectral order of ``|corr(samples)|`` laid along ``path``."""
    return layout_from_order(spectral_order(correlation_matrix(samples)), height, width, path)


def neighbour_correlation(
    correlation: Float[Tensor, "d d"], cell_of_dim: Int[Tensor, " d"], height: int, width: int
) -> float:
    """Mean ``|correlation|`` of dims in 4-adjacent cells: what a 3x3 conv sees together."""
    d = cell_of_dim.shape[0]
    dim_at = torch.full((height * width,), -1, dtype=torch.long)
    dim_at[cell_of_dim] = torch.arange(d)
    dim_at = dim_at.view(height, width)
    pairs = [
        (dim_at[:, :-1].reshape(-1), dim_at[:, 1:].reshape(-1)),
        (dim_at[:-1, :].reshape(-1), dim_at[1:, :].reshape(-1)),
    ]
    a = torch.cat([p[0] for p in pairs])
    b = torch.cat([p[1] for p in pairs])
    real = (a >= 0) & (b >= 0)
    if not real.any():
        return 0.0
    return correlation[a[real], b[real]].abs().mean().item()


def validate_cell_of_dim(cell_of_dim: Tensor, d_model: int, height: int, width: int) -> None:
    if cell_of_dim.dtype != torch.long or cell_of_dim.shape != (d_model,):
        raise ValueError(
            f"cell_of_dim must be an int64 tensor of shape ({d_model},), got dtype "
            f"{cell_of_dim.dtype} and shape {tuple(cell_of_dim.shape)}."
        )
    if d_model and (cell_of_dim.min() < 0 or cell_of_dim.max() >= height * width):
        raise ValueError(
            f"cell_of_dim values must lie in [0, {height * width}) for a {height}x{width} grid, "
            f"got range [{cell_of_dim.min().item()}, {cell_of_dim.max().item()}]."
        )
    if torch.unique(cell_of_dim).numel() != d_model:
        raise ValueError(
            "cell_of_dim must put every dimension in a different cell; it repeats cells."
        )


class GridLayout(nn.Module):
    """Vector <-> one-channel image conversion with padding, under a stored layout.

    Padding cells are filled with zeros in every grid this module builds, at every noise level, so
    the network sees a constant 0 there (it can tell them apart through the optional position
    channels, and the zeros carry no information it could overfit). What it predicts there is
    dropped by :meth:`from_grid`, so padding never enters a loss.
    """

    cell_of_dim: Tensor

    def __init__(self, d_model: int, height: int, width: int) -> None:
        super().__init__()
        if height * width < d_model:
            raise ValueError(
                f"grid {height}x{width} has {height * width} cells, fewer than d_model={d_model}; "
                "choose a larger grid_shape."
            )
        self.d_model = d_model
        self.height = height
        self.width = width
        self.register_buffer("cell_of_dim", torch.arange(d_model, dtype=torch.long))

    @property
    def num_cells(self) -> int:
        return self.height * self.width

    def set_layout(self, cell_of_dim: Int[Tensor, " d"]) -> None:
        cell_of_dim = cell_of_dim.detach().to(device="cpu", dtype=torch.long)
        validate_cell_of_dim(cell_of_dim, self.d_model, self.height, self.width)
        self.cell_of_dim.copy_(cell_of_dim.to(self.cell_of_dim.device))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        key = prefix + "cell_of_dim"
        if key in state_dict:
            validate_cell_of_dim(state_dict[key].to("cpu"), self.d_model, self.height, self.width)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def mask(self) -> Bool[Tensor, "h w"]:
        """True on cells that hold a dimension, False on padding."""
        flat = torch.zeros(self.num_cells, dtype=torch.bool, device=self.cell_of_dim.device)
        flat[self.cell_of_dim] = True
        return flat.view(self.height, self.width)

    def to_grid(self, z: Float[Tensor, "n d_model"]) -> Float[Tensor, "n 1 h w"]:
        flat = z.new_zeros(z.shape[0], self.num_cells)
        flat[:, self.cell_of_dim] = z
        return flat.view(z.shape[0], 1, self.height, self.width)

    def from_grid(self, grid: Float[Tensor, "n 1 h w"]) -> Float[Tensor, "n d_model"]:
        return grid.reshape(grid.shape[0], self.num_cells)[:, self.cell_of_dim]

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, grid={self.height}x{self.width}"
