"""Per-dimension z-scoring of activations, stored with the prior.

Priors are trained on z-scored activations, so the statistics are part of the model: they live in
its state dict as buffers (``normalizer.mean``, ``normalizer.std``, ``normalizer.fitted``) and are
saved in ``model.safetensors`` with the weights. ``std = sqrt(var + eps)``: the epsilon keeps dead
or near-constant dimensions from blowing up (the reference code divides by ``sqrt(var)``).

The statistics always stay float32, even when the prior is cast to bf16: rounding the mean of a
residual stream with massive activations to 8 mantissa bits would shift every normalised vector.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from jaxtyping import Float
from torch import Tensor, nn

from tl_diffusion_prior.core.validation import check_float, check_int


class Float32BuffersMixin(nn.Module):
    """A module whose own buffers keep their dtype (float32) when the model is cast.

    ``.to()``/``.cuda()`` move the buffers to the new device, but ``.to(dtype)``/``.half()``/
    ``.bfloat16()`` leave their dtype alone: rounding statistics such as a mean, a covariance
    eigenbasis or a noise schedule to bf16's 8 mantissa bits would bias every output. Subclasses
    cast to the input's dtype per call instead. Submodules are cast as usual.
    """

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> Float32BuffersMixin:
        saved = {name: buf for name, buf in self._buffers.items() if buf is not None}
        super()._apply(fn, recurse)
        for name, old in saved.items():
            new = self._buffers[name]
            if new is not None and new.dtype != old.dtype:
                self._buffers[name] = old.to(new.device)
        return self


class Normalizer(Float32BuffersMixin):
    """Per-dimension z-score ``(x - mean) / sqrt(var + eps)`` with float32 statistics.

    Args:
        d_model: Size of the last dimension of the activations.
        eps: Added to the variance before the square root; must be positive.

    A fresh normalizer is the identity (mean 0, std 1) with ``is_fitted`` False until
    :meth:`set_stats` is called. ``normalize``/``denormalize`` compute in float32 on the module's
    device and return the input's dtype.
    """

    mean: Tensor
    std: Tensor
    fitted: Tensor

    def __init__(self, d_model: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.d_model = check_int("d_model", d_model, minimum=1)
        self.eps = check_float("eps", eps, minimum=0.0, min_open=True)
        self.register_buffer("mean", torch.zeros(d_model, dtype=torch.float32))
        self.register_buffer("std", torch.ones(d_model, dtype=torch.float32))
        self.register_buffer("fitted", torch.tensor(False))

    @property
    def is_fitted(self) -> bool:
        """Whether :meth:`set_stats` has been called (or fitted stats were loaded)."""
        return bool(self.fitted)

    def set_stats(self, mean: Float[Tensor, " d_model"], var: Float[Tensor, " d_model"]) -> None:
        """Set the statistics from a mean and a (population) variance of any float dtype."""
        for name, value in (("mean", mean), ("var", var)):
            if not isinstance(value, Tensor) or not value.is_floating_point():
                raise TypeError(f"{name} must be a float tensor, got {type(value).__name__}.")
            if value.shape != (self.d_model,):
                raise ValueError(
                    f"{name} must have shape ({self.d_model},) to match d_model, got "
                    f"{tuple(value.shape)}; pass per-dimension statistics of the activations."
                )
            if not torch.isfinite(value).all():
                raise ValueError(f"{name} contains NaN or inf; recompute the statistics.")
        var64 = var.detach().to("cpu", torch.float64)
        if (var64 < 0).any():
            raise ValueError(
                f"var must be non-negative, got a minimum of {var64.min().item():.3g}; pass the "
                "variance, not a centred second moment that went negative by round-off."
            )
        std = torch.sqrt(var64 + self.eps)
        with torch.no_grad():
            self.mean.copy_(mean.detach().to(self.mean.device, torch.float64))
            self.std.copy_(std.to(self.std.device))
            self.fitted.fill_(True)

    def normalize(self, x: Float[Tensor, "*batch d_model"]) -> Float[Tensor, "*batch d_model"]:
        """``(x - mean) / std`` computed in float32, returned in ``x``'s dtype."""
        self._check_last_dim(x, "x")
        z = (x.to(self.mean.device, torch.float32) - self.mean) / self.std
        return z.to(x.dtype)

    def denormalize(self, z: Float[Tensor, "*batch d_model"]) -> Float[Tensor, "*batch d_model"]:
        """``z * std + mean`` computed in float32, returned in ``z``'s dtype."""
        self._check_last_dim(z, "z")
        x = torch.addcmul(self.mean, z.to(self.std.device, torch.float32), self.std)
        return x.to(z.dtype)

    def _check_last_dim(self, x: Tensor, name: str) -> None:
        if x.ndim == 0 or x.shape[-1] != self.d_model:
            raise ValueError(
                f"{name} must end in d_model={self.d_model}, got shape {tuple(x.shape)}; pass "
                "activations from the hook this normalizer was fitted on."
            )

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, eps={self.eps}, fitted={self.is_fitted}"
