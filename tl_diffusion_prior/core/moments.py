"""Per-dimension running mean and variance, merged exactly in float64 without leaving the device.

Chan et al.'s pairwise update merges a batch's (count, mean, M2) into the running totals, so the
statistics cover every row ever pushed, not a first chunk. Each batch may carry a row mask, which
lets the capture path drop rows (position 0, padding, outliers) without a boolean-index compaction,
which would force a host-device synchronisation.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from jaxtyping import Bool, Float
from torch import Tensor


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
