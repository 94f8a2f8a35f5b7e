"""A TopK sparse autoencoder over normalised activations (the SAE baseline).

Standard TopK SAE (Gao et al., 2024): ``pre = (z - b_dec) W_enc + b_enc``, keep the ``k`` largest
pre-activations (ReLU'd), ``z_hat = sum_i a_i W_dec[i] + b_dec`` with unit-norm decoder rows. The
decoder is evaluated as an ``embedding_bag`` over the ``k`` active rows, so its cost is ``k * d``
per token instead of ``d_sae * d``. It lives in the priors' normalised space and takes and returns
RAW activations. Training is in :mod:`tl_diffusion_prior.evaluate.baselines.sae_training`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn

from tl_diffusion_prior.core.validation import check_positive_int
from tl_diffusion_prior.evaluate.baselines.base import (
    Baseline,
    BaselineConfig,
    register_baseline,
)


@dataclass(kw_only=True)
class TopKSAEConfig(BaselineConfig):
    """Config of :class:`TopKSAE`.

    Attributes:
        d_sae: Number of latents (dictionary size), e.g. ``8 * d_model``.
        k: Number of active latents per token.
    """

    expected_kind: ClassVar[str | None] = "topk_sae"
    kind: str = "topk_sae"
    d_sae: int = 0
    k: int = 32

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive_int("d_sae", self.d_sae)
        check_positive_int("k", self.k)
        if self.k > self.d_sae:
            raise ValueError(f"k={self.k} must not exceed d_sae={self.d_sae}.")


@dataclass
class SAEEncoding:
    """A batch's sparse code: ``values[n, j]`` is the activation of latent ``indices[n, j]``."""

    values: Float[Tensor, "n k"]
    indices: Int[Tensor, "n k"]
    pre_activations: Float[Tensor, "n d_sae"]


@register_baseline("topk_sae")
class TopKSAE(Baseline):
    """TopK SAE in normalised space; ``reconstruct`` maps RAW activations to RAW reconstructions."""

    config_class = TopKSAEConfig
    config: TopKSAEConfig

    def __init__(self, config: TopKSAEConfig) -> None:
        super().__init__(config)
        d, m = config.d_model, config.d_sae
        self.W_enc = nn.Parameter(torch.zeros(d, m))
        self.b_enc = nn.Parameter(torch.zeros(m))
        self.W_dec = nn.Parameter(torch.zeros(m, d))
        self.b_dec = nn.Parameter(torch.zeros(d))

    @property
    def name(self) -> str:
        return f"sae_d{self.config.d_sae}_k{self.config.k}"

    @torch.no_grad()
    def initialize(self, data_mean: Float[Tensor, " d_model"], generator=None) -> None:
        """Random unit-norm decoder rows, encoder tied to the decoder's transpose, ``b_dec`` at
        the data mean (in normalised space) and a zero encoder bias."""
        device = generator.device if generator is not None else self.W_dec.device
        w = torch.randn(self.W_dec.shape, generator=generator, device=device)
        w = w.to(self.W_dec.device) / w.norm(dim=1, keepdim=True).to(self.W_dec.device)
        self.W_dec.copy_(w)
        self.W_enc.copy_(w.T)
        self.b_enc.zero_()
        self.b_dec.copy_(data_mean.to(self.b_dec))

    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8))

    def encode(self, z: Float[Tensor, "n d_model"], k: int | None = None) -> SAEEncoding:
        """Top-``k`` (default ``config.k``) ReLU'd pre-activations of normalised ``z``."""
        k = self.config.k if k is None else k
        pre = (z - self.b_dec) @ self.W_enc + self.b_enc
        values, indices = pre.topk(k, dim=-1, sorted=False)
        return SAEEncoding(values=F.relu(values), indices=indices, pre_activations=pre)

    def decode(
        self, values: Float[Tensor, "n k"], indices: Int[Tensor, "n k"]
    ) -> Float[Tensor, "n d_model"]:
        return F.embedding_bag(indices, self.W_dec, per_sample_weights=values, mode="sum") + (
            self.b_dec
        )

    def forward(self, z: Float[Tensor, "n d_model"]) -> Float[Tensor, "n d_model"]:
        """Reconstruction of normalised ``z`` (differentiable; used by the trainer)."""
        code = self.encode(z)
        return self.decode(code.values, code.indices)

    @torch.no_grad()
    def reconstruct(
        self, x: Float[Tensor, "*batch d_model"], chunk_size: int = 8192
    ) -> Float[Tensor, "*batch d_model"]:
        """RAW ``x`` -> RAW reconstruction, same shape, dtype and device."""
        self.check_activations(x)
        flat = x.reshape(-1, self.config.d_model)
        out = torch.empty(flat.shape, dtype=torch.float32, device=self.device)
        for start in range(0, flat.shape[0], chunk_size):
            rows = flat[start : start + chunk_size].to(self.device, torch.float32)
            z = self.normalizer.normalize(rows).to(self.W_dec.dtype)
            out[start : start + chunk_size] = self.normalizer.denormalize(self(z).float())
        return out.reshape(x.shape).to(device=x.device, dtype=x.dtype)
