import pytest
import torch

from tl_diffusion_prior.priors.grid import (
    GRID_PATHS,
    GridLayout,
    choose_grid_shape,
    correlation_matrix,
    grid_path,
    layout_from_order,
    layout_from_samples,
    neighbour_correlation,
    spectral_order,
    validate_cell_of_dim,
)

D_MODELS = (130, 576, 768, 2048, 4096, 5120)


@pytest.mark.parametrize("d_model", D_MODELS)
@pytest.mark.parametrize("multiple", (4, 8))
def test_grid_shape_fits_and_round_trips(d_model, multiple):
    height, width = choose_grid_shape(d_model, multiple)
    assert height % multiple == 0 and width % multiple == 0
    assert d_model <= height * width
    assert height <= width <= 4 * height
    layout = GridLayout(d_model, height, width)
    # a random permutation layout as well as the identity one
    for cells in (None, torch.randperm(height * width)[:d_model]):
        if cells is not None:
            layout.set_layout(cells)
        z = torch.randn(3, d_model)
        grid = layout.to_grid(z)
        assert grid.shape == (3, 1, height, width)
        assert torch.equal(layout.from_grid(grid), z)
        mask = layout.mask()
        assert int(mask.sum()) == d_model
        assert torch.all(grid[:, 0][:, ~mask] == 0)


def test_grid_shape_known_values():
    assert choose_grid_shape(576, 4) == (24, 24)
    # the write-up's 5120-d activation: no padding, squarer than its 32x160
    assert choose_grid_shape(5120, 4) == (64, 80)
    assert choose_grid_shape(130, 4) == (12, 12)
    assert choose_grid_shape(24, 2) == (4, 6)


@pytest.mark.parametrize("d_model", (1, 7, 130, 576))
def test_grid_shape_has_least_padding(d_model):
    height, width = choose_grid_shape(d_model, 4)
    brute = min(
        h * w - d_model
        for h in range(4, 4 * d_model + 8, 4)
        for w in range(h, 4 * h + 1, 4)
        if h * w >= d_model
    )
    assert height * width - d_model == brute


def test_grid_shape_rejects_bad_arguments():
    with pytest.raises(ValueError, match="d_model"):
        choose_grid_shape(0, 4)
    with pytest.raises(ValueError, match="multiple"):
        choose_grid_shape(10, 0)


@pytest.mark.parametrize("path", GRID_PATHS)
@pytest.mark.parametrize("shape", [(24, 24), (12, 20), (32, 160), (5, 7), (8, 4)])
def test_paths_visit_every_cell_once(path, shape):
    height, width = shape
    cells = grid_path(height, width, path)
    assert sorted(cells.tolist()) == list(range(height * width))
    if path != "row_major":
        rows, cols = cells // width, cells % width
        steps = rows.diff().abs() + cols.diff().abs()
        assert torch.all(steps == 1), "consecutive path cells must be grid neighbours"


def _block_correlated(
    n: int, d: int, blocks: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Samples whose dims form correlated blocks, with the dims shuffled."""
    gen = torch.Generator().manual_seed(seed)
    factors = torch.randn(n, blocks, generator=gen)
    x = factors.repeat_interleave(d // blocks, dim=1) + 0.3 * torch.randn(n, d, generator=gen)
    perm = torch.randperm(d, generator=gen)
    return x[:, perm], perm


def test_spectral_layout_puts_correlated_dims_together():
    d, height, width = 64, 8, 8
    x, _ = _block_correlated(2000, d, blocks=4)
    corr = correlation_matrix(x)
    identity = neighbour_correlation(corr, torch.arange(d), height, width)
    for path in ("hilbert", "snake"):
        fitted = neighbour_correlation(
            corr, layout_from_samples(x, height, width, path), height, width
        )
        assert fitted > 0.6 > 0.4 > identity, (path, fitted, identity)


def test_spectral_order_recovers_blocks():
    x, perm = _block_correlated(2000, 40, blocks=2)
    order = spectral_order(correlation_matrix(x))
    block_of_position = (perm[order] // 20).tolist()
    # the order visits one whole block, then the other: a single switch
    switches = sum(a != b for a, b in zip(block_of_position, block_of_position[1:], strict=False))
    assert switches == 1


def test_layout_from_order_places_along_path():
    order = torch.tensor([2, 0, 1])
    cells = layout_from_order(order, 2, 2, "snake")
    # snake visits cells 0, 1, 3, 2; dim order[k] goes to the k-th of them
    assert cells.tolist() == [1, 3, 0]


def test_invalid_layouts_are_rejected():
    with pytest.raises(ValueError, match="different cell"):
        validate_cell_of_dim(torch.tensor([0, 0, 1]), 3, 2, 2)
    with pytest.raises(ValueError, match="lie in"):
        validate_cell_of_dim(torch.tensor([0, 1, 4]), 3, 2, 2)
    with pytest.raises(ValueError, match="int64"):
        validate_cell_of_dim(torch.tensor([0.0, 1.0, 2.0]), 3, 2, 2)
    layout = GridLayout(3, 2, 2)
    with pytest.raises(ValueError, match="different cell"):
        layout.load_state_dict({"cell_of_dim": torch.tensor([3, 3, 1])})
    with pytest.raises(ValueError, match="fewer than d_model"):
        GridLayout(5, 2, 2)


def test_layout_state_dict_round_trip():
    layout = GridLayout(5, 2, 4)
    layout.set_layout(torch.tensor([7, 0, 3, 5, 1]))
    other = GridLayout(5, 2, 4)
    other.load_state_dict(layout.state_dict())
    assert torch.equal(other.cell_of_dim, layout.cell_of_dim)
    z = torch.randn(2, 5)
    assert torch.equal(other.to_grid(z), layout.to_grid(z))
