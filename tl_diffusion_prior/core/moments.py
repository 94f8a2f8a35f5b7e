"""Moments of activations in float64: per-dimension running statistics and full covariances.

``RunningMoments``: a per-dimension running mean and variance, merged exactly in float64 without
leaving the device. Chan et al.'s pairwise update merges a batch's (count, mean, M2) into the
running totals, so the statistics cover every row ever pushed, not a first chunk. Each batch may
carry a row mask, which lets the capture path drop rows (position 0, padding, outliers) without a
boolean-index compaction, which would force a host-device synchronisation.

``covariance`` (and the ``CovarianceSums`` it accumulates): the one kernel for a full mean and
covariance. Rows are summed in chunks, in float64, about a shift (by default the first chunk's
mean): residual-stream activations have means far larger than their spread, and the textbook
``E[x x^T] - mu mu^T`` about zero would cancel away most of float64's digits.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
from jaxtyping import Bool, Float
from torch import Tensor

from tl_diffusion_prior.core import distributed
from tl_diffusion_prior.core.validation import check_int

DEFAULT_CHUNK = 8192  # rows converted to float64 at a time: bounds the extra memory


class RunningMoments:
    """Running per-dimension mean and (population) variance of rows of shape ``feature_shape``."""

    def __init__(self, feature_shape: tuple[int, ...], device: torch.device | str | None = None):
        self.feature_shape = tuple(feature_shape)
        device = torch.device(device) if device is not None else torch.device("cpu")
        self.count = torch.zeros((), dtype=torch.float64, device=device)
        self.mean = torch.zeros(self.feature_shape, dtype=torch.float64, device=device)
        self.m2 = torch.zeros(self.feature_shape, dtype=torch.float64, device=device)

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def update(
        self,
        rows: Float[Tensor, " n *features"],
        mask: Bool[Tensor, " n"] | None = None,
    ) -> None:
        """Merge ``rows`` (only those where ``mask`` is True) into the running statistics."""
        x = rows.to(torch.float64)
        if mask is None:
            weight = torch.ones(x.shape[0], dtype=torch.float64, device=x.device)
        else:
            weight = mask.to(torch.float64)
        weight = weight.reshape((-1,) + (1,) * len(self.feature_shape))
        n_batch = weight.sum()
        # Zeroing masked rows first keeps NaN/inf in dropped rows from poisoning the sums.
        x = torch.where(weight > 0, x, torch.zeros((), dtype=x.dtype, device=x.device))
        safe_n = n_batch.clamp_min(1.0)
        batch_mean = (x * weight).sum(0) / safe_n
        batch_m2 = (((x - batch_mean) ** 2) * weight).sum(0)
        self._merge(n_batch, batch_mean, batch_m2)

    def _merge(self, n_b: Tensor, mean_b: Tensor, m2_b: Tensor) -> None:
        total = self.count + n_b
        safe_total = total.clamp_min(1.0)
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / safe_total)
        self.m2 = self.m2 + m2_b + delta**2 * (self.count * n_b / safe_total)
        self.count = total

    def merge(self, other: RunningMoments) -> None:
        """Fold another accumulator's statistics into this one."""
        if other.feature_shape != self.feature_shape:
            raise ValueError(
                f"Cannot merge moments of shape {other.feature_shape} into {self.feature_shape}."
            )
        self._merge(
            other.count.to(self.device), other.mean.to(self.device), other.m2.to(self.device)
        )

    def all_reduce(self, group=None) -> None:
        """Merge the statistics of every rank in ``group`` so all ranks hold the global moments.

        Uses the sum form (count, sum, sum of squares about a shared shift) so a single
        all_reduce suffices; the shift is rank 0's mean, broadcast first, which keeps the
        float64 sums well conditioned.
        """
        shift = self.mean.clone()
        dist.broadcast(shift, src=0, group=group)
        n = self.count.clone()
        s1 = (self.mean - shift) * n
        s2 = self.m2 + n * (self.mean - shift) ** 2
        packed = torch.cat([n.reshape(1), s1.reshape(-1), s2.reshape(-1)])
        dist.all_reduce(packed, op=dist.ReduceOp.SUM, group=group)
        numel = s1.numel()
        n_tot = packed[0]
        s1_tot = packed[1 : 1 + numel].reshape(self.feature_shape)
        s2_tot = packed[1 + numel :].reshape(self.feature_shape)
        safe = n_tot.clamp_min(1.0)
        mean_offset = s1_tot / safe
        self.count = n_tot
        self.mean = shift + mean_offset
        self.m2 = (s2_tot - n_tot * mean_offset**2).clamp_min(0.0)

    def var(self) -> Float[Tensor, "*features"]:
        """Population variance (zero where fewer than one row was seen)."""
        return self.m2 / self.count.clamp_min(1.0)

    def state_dict(self, prefix: str = "") -> dict[str, Tensor]:
        return {f"{prefix}count": self.count, f"{prefix}mean": self.mean, f"{prefix}m2": self.m2}

    def load_state_dict(self, state: dict[str, Tensor], prefix: str = "") -> None:
        mean = state[f"{prefix}mean"]
        if tuple(mean.shape) != self.feature_shape:
            raise ValueError(
                f"Saved moments have shape {tuple(mean.shape)}, expected {self.feature_shape}."
            )
        self.count = state[f"{prefix}count"].to(self.device, torch.float64)
        self.mean = mean.to(self.device, torch.float64)
        self.m2 = state[f"{prefix}m2"].to(self.device, torch.float64)


class CovarianceSums:
    """Count, sum and sum of outer products of rows about a shift, in float64 on ``device``.

    These are the sufficient statistics of a mean and a covariance: batches can be added in any
    order (``update``) and summed over ranks (``all_reduce``) before ``mean_cov`` turns them into
    moments.

    Args:
        d: Width of the rows.
        device: Where the sums live (and where each batch is moved to).
        shift: The point the rows are summed about. None takes the first non-empty batch's mean,
            which keeps the sums well conditioned whatever the data's offset; ranks summed by
            ``all_reduce`` must share one, so pass it explicitly there.
    """

    def __init__(
        self,
        d: int,
        device: torch.device | str | None = "cpu",
        shift: Float[Tensor, " d"] | None = None,
    ) -> None:
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.fixed_shift = shift is not None
        self.shift = None if shift is None else shift.to(self.device, torch.float64)
        self.count = torch.zeros((), dtype=torch.float64, device=self.device)
        self.total = torch.zeros(d, dtype=torch.float64, device=self.device)
        self.outer = torch.zeros(d, d, dtype=torch.float64, device=self.device)

    @property
    def n(self) -> int:
        """Rows summed so far (a device sync when the sums live on an accelerator)."""
        return int(self.count.item())

    def update(self, rows: Float[Tensor, "n d"]) -> None:
        """Add ``rows`` (any float dtype; cast to float64 on ``device``)."""
        z = rows.to(self.device, torch.float64)
        if self.shift is None:
            if z.shape[0] == 0:
                return
            self.shift = z.mean(0)
        z = z - self.shift
        self.count += z.shape[0]
        self.total += z.sum(0)
        self.outer += z.T @ z

    def all_reduce(self) -> None:
        """Sum the statistics of every rank (a no-op outside ``torch.distributed``)."""
        if distributed.is_distributed() and not self.fixed_shift:
            raise ValueError(
                "CovarianceSums.all_reduce needs every rank to sum about the same point; build "
                "it with shift= (e.g. zeros for normalised rows)."
            )
        d = self.total.shape[0]
        packed = distributed.all_reduce_sum(
            torch.cat([self.count.reshape(1), self.total, self.outer.reshape(-1)])
        )
        self.count = packed[0]
        self.total = packed[1 : 1 + d]
        self.outer = packed[1 + d :].reshape(d, d)

    def mean_cov(self, correction: int = 0) -> tuple[Float[Tensor, " d"], Float[Tensor, "d d"]]:
        """The mean and the covariance, divided by ``n - correction`` (0: population, as in
        ``torch.cov``), symmetrised against round-off."""
        n = self.n
        if n <= correction or n == 0:
            raise ValueError(
                f"A covariance with correction={correction} needs more than "
                f"{max(correction, 0)} rows, got {n}; pass more rows."
            )
        centred_mean = self.total / n
        cov = self.outer / (n - correction) - torch.outer(centred_mean, centred_mean) * (
            n / (n - correction)
        )
        mean = centred_mean if self.shift is None else self.shift + centred_mean
        return mean, 0.5 * (cov + cov.T)


@torch.no_grad()
def covariance(
    x: Float[Tensor, "n d"],
    normalize: Callable[[Tensor], Tensor] | None = None,
    *,
    chunk: int = DEFAULT_CHUNK,
    correction: int = 0,
    device: torch.device | str | None = "cpu",
) -> tuple[Float[Tensor, " d"], Float[Tensor, "d d"]]:
    """Mean and covariance of the rows of ``x`` in float64, computed by chunks about a shift.

    Args:
        x: The rows, of any float dtype and device.
        normalize: Applied to each chunk of ``x`` before it is cast to float64 (e.g.
            ``normalizer.normalize``), so the moments are those of the normalised rows.
        chunk: Rows per chunk.
        correction: Divide by ``n - correction``: 0 for the population covariance, 1 for the
            unbiased one (``torch.cov``'s convention).
        device: Where to accumulate (and return); None: ``x``'s device.
    """
    if not isinstance(x, Tensor) or x.ndim != 2 or not x.is_floating_point():
        raise ValueError(f"x must be a float [n, d] tensor, got {getattr(x, 'shape', type(x))}.")
    check_int("chunk", chunk, minimum=1)
    sums = CovarianceSums(x.shape[1], x.device if device is None else device)
    for rows in x.split(chunk):
        sums.update(rows if normalize is None else normalize(rows))
    return sums.mean_cov(correction)
