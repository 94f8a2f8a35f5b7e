"""The manifold score: how far off the prior's learned distribution an activation is, per vector.

``prior.score(x)`` (:meth:`~tl_diffusion_prior.priors.base.DiffusionPrior.score`) and the monitor
hook (:mod:`tl_diffusion_prior.steering.monitor`) compute, for every vector, the prior's denoising
error at a few fixed noise levels, in the prior's normalised space:

    score(x) = mean_k mean_i (eps_k,i - eps_hat_k,i)^2,   z = normalise(x),
    z_k = a_k z + s_k eps_k,   eps_hat_k = (z_k - a_k E[z | z_k]) / s_k,

with ``E[z | z_k]`` the design's one-evaluation ``posterior_mean``. So the score is the
noise-prediction error per dimension, ``(a_k / s_k)^2 = SNR_k`` times the squared error of the
denoised vector, averaged over the levels. Levels spaced evenly in log-SNR make the average a
quadrature of the diffusion term of the ELBO (``-log p(x) <= C + (d/2) \\int eps-MSE dlog SNR``)
over the levels' range, so it is an (unnormalised, truncated) negative log-likelihood estimate:
larger means less typical. The default levels ``t = 0.1, 0.25, 0.5`` (log-SNR 4.4, 2.2, 0) cover
the low-noise half, where the denoiser's pull towards the manifold decides the error; lower levels
add cost but no separation with the shipped prior, whose error there is that of no denoising at
all (about 1 at ``t = 0.02``). ``method="one_step"`` uses ``t = 0.25`` only, the best single level
on the shipped prior's activations (noised or shifted along a direction, against clean).
``method="ode"`` is the exact negative log-likelihood per dimension by the probability-flow ODE
with a Hutchinson trace (:mod:`~tl_diffusion_prior.priors.score_ode`; flow-matching priors only,
about 100 evaluations' worth per vector).

**Cost per token:** one prior network evaluation per level: 3 for ``"elbo"``, 1 for
``"one_step"`` (no integration, no gradients; ``"ode"`` costs ~100). For the shipped MLP prior
(depth 3, width 1152, about 13M multiply-adds per evaluation) the default costs about 40M
multiply-adds per token: less than SmolLM2-135M's 14 blocks after layer 15 (about 49M, the
unembedding not counted).

**Noise:** the score is exactly deterministic given ``seed``. Each vector's noise comes from a
counter-based hash (:mod:`tl_diffusion_prior.core.counter_noise`) of the seed and of the vector's
own bits (``prior.score``), or of its token (the monitor: the row's content up to the position and
the position, as steering keys its noise), never from a generator's state or the vector's place in
the batch: a vector scores the same alone or among others. Across seeds the score is a noisy
estimate: on 500 layer-15 activations of SmolLM2-135M with the shipped prior, its standard
deviation across seeds is 0.021 per token for ``"elbo"`` (mean score 0.61, spread from token to
token 0.078) and 0.036 for ``"one_step"`` (mean 0.65, spread 0.11); average several seeds where a
single token's score must be precise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tl_diffusion_prior.core.counter_noise import (
    MASK32,
    PositionNoise,
    check_seed,
    fmix32,
    vector_fingerprints,
)
from tl_diffusion_prior.core.validation import check_choice, check_float, check_positive_int
from tl_diffusion_prior.priors.score_ode import ode_nll

# ``prior`` arguments are DiffusionPriors, annotated ``Any``: base.py imports this module, and the
# package allows no import cycle, not even one under TYPE_CHECKING.

#: Mixed into every key so the score's noise is independent of steering's for the same token.
_SCORE_STREAM = 0x5C0FE11D


@dataclass(frozen=True)
class ScoreConfig:
    """How the manifold score is computed.

    Attributes:
        method: ``"elbo"`` (the denoising error averaged over ``levels``; the default),
            ``"one_step"`` (one level: cheaper, noisier) or ``"ode"`` (the probability-flow ODE
            negative log-likelihood, :mod:`~tl_diffusion_prior.priors.score_ode`: flow-matching
            priors only, about 30x the default's cost).
        levels: Noise levels ``t`` in (0, 1) (0 clean, 1 noise), any sequence (stored as a
            tuple); None takes the method's default (:attr:`DEFAULT_LEVELS`). Each costs one
            prior evaluation per vector. ``"ode"`` integrates over all levels and takes none.
        seed: Seed of the noise, any int in [0, 2**63).
        ode_steps: Euler steps of ``"ode"`` (each one forward and one backward pass).
    """

    METHODS: ClassVar[tuple[str, ...]] = ("elbo", "one_step", "ode")
    DEFAULT_LEVELS: ClassVar[dict[str, tuple[float, ...]]] = {
        "elbo": (0.1, 0.25, 0.5),
        "one_step": (0.25,),
        "ode": (),
    }

    method: str = "elbo"
    levels: Sequence[float] | None = None
    seed: int = 0
    ode_steps: int = 32

    def __post_init__(self) -> None:
        check_choice("method", self.method, self.METHODS)
        check_seed(self.seed)
        check_positive_int("ode_steps", self.ode_steps)
        if self.method == "ode" and self.levels is not None:
            raise ValueError(
                f"method='ode' integrates over every noise level; pass levels=None, not "
                f"{self.levels!r} (ode_steps sets its resolution)."
            )
        if self.levels is None:
            object.__setattr__(self, "levels", self.DEFAULT_LEVELS[self.method])
        if isinstance(self.levels, str) or not hasattr(self.levels, "__iter__"):
            raise TypeError(f"levels must be a sequence of floats, got {self.levels!r}.")
        levels = tuple(
            check_float("levels[]", t, 0.0, 1.0, min_open=True, max_open=True) for t in self.levels
        )
        if not levels and self.method != "ode":
            raise ValueError("levels must hold at least one noise level, e.g. (0.1, 0.25, 0.5).")
        if self.method == "one_step" and len(levels) != 1:
            raise ValueError(
                f"method='one_step' scores at one noise level, got levels={levels}; pass one "
                "level or use method='elbo'."
            )
        object.__setattr__(self, "levels", levels)

    @property
    def noise_vectors(self) -> int:
        """Standard-normal vectors each scored vector needs: one per level, or the ODE's one
        Hutchinson probe."""
        return len(self.levels) or 1


def as_score_config(
    method: str | ScoreConfig, levels: Sequence[float] | None, seed: int
) -> ScoreConfig:
    """``method`` if it is a :class:`ScoreConfig` (then ``levels`` must be None and ``seed`` 0,
    their defaults), else ``ScoreConfig(method, levels, seed)``."""
    if not isinstance(method, ScoreConfig):
        return ScoreConfig(method, levels, seed)
    if levels is not None or seed != 0:
        raise ValueError(
            "Pass levels and seed inside the ScoreConfig given as method, not beside it."
        )
    return method


def check_score_method(prior: Any, config: ScoreConfig) -> None:
    """Raise ValueError if ``prior``'s design cannot compute ``config.method``."""
    if config.method == "ode" and not callable(getattr(prior.network, "velocity", None)):
        raise ValueError(
            f"method='ode' integrates a flow-matching prior's velocity, and "
            f"{type(prior).__name__} has none (a DDPM UNet prior predicts noise); use "
            "method='elbo' or 'one_step'."
        )


class ScoreNoise:
    """The score's standard-normal noise, ``[n, config.noise_vectors, d_model]`` (one vector per
    level, or the ODE's probe), for vectors or for tokens.

    Args:
        config: The :class:`ScoreConfig` (its seed and ``noise_vectors``).
        d_model: Width of the scored vectors.
        device: Where the noise is made.
    """

    def __init__(
        self, config: ScoreConfig, d_model: int, device: torch.device | str = "cpu"
    ) -> None:
        self.n_levels = config.noise_vectors
        self.d_model = d_model
        self._noise = PositionNoise(config.seed, self.n_levels * d_model, device)

    def for_tokens(
        self, keys: Int[Tensor, " n"], positions: Int[Tensor, " n"]
    ) -> Float[Tensor, "n n_noise d_model"]:
        """Noise keyed by each token's sequence key and position (the monitor's keying)."""
        keys = fmix32((keys.to(torch.int64) & MASK32) ^ _SCORE_STREAM)
        return self._noise(keys, positions).reshape(-1, self.n_levels, self.d_model)

    def for_vectors(self, x: Float[Tensor, "n d_model"]) -> Float[Tensor, "n n_noise d_model"]:
        """Noise keyed by each vector's exact bits (``prior.score``'s keying)."""
        keys = vector_fingerprints(x)
        return self.for_tokens(keys, torch.zeros_like(keys))


def _affine_coefficients(prior: Any, t: float, device: torch.device) -> tuple[float, float]:
    """``(a, s)`` of the design's ``add_noise(z, eps, t) = a z + s eps`` (both designs are affine),
    read off two one-element calls instead of assuming a schedule."""
    one = torch.ones(1, 1, device=device, dtype=torch.float32)
    a = float(prior.add_noise(one, torch.zeros_like(one), t))
    s = float(prior.add_noise(torch.zeros_like(one), one, t))
    return a, s


@torch.no_grad()
def manifold_score(
    prior: Any,
    x: Float[Tensor, "*batch d_model"],
    config: ScoreConfig,
    noise: Float[Tensor, "*batch n_noise d_model"] | None = None,
) -> Float[Tensor, " *batch"]:
    """The score of each RAW vector of ``x`` (see the module docstring), float32 on ``x``'s device.

    Args:
        prior: The prior whose distribution the vectors are scored against.
        x: Activations of any leading shape.
        config: Method, levels and seed.
        noise: Standard-normal noise in normalised space, ``x.shape[:-1] + (levels, d_model)``
            (``(1, d_model)``, the Hutchinson probe, for ``"ode"``); None draws it from
            ``config.seed`` and each vector's bits.
    """
    prior._check_activations(x, "x")
    check_score_method(prior, config)
    d_model = prior.config.d_model
    n_noise = config.noise_vectors
    flat = x.reshape(-1, d_model)
    if noise is None:
        noise = ScoreNoise(config, d_model, flat.device).for_vectors(flat)
    else:
        expected = (*x.shape[:-1], n_noise, d_model)
        if not isinstance(noise, Tensor) or not noise.is_floating_point():
            raise TypeError(f"noise must be a float tensor, got {type(noise).__name__}.")
        if tuple(noise.shape) != expected:
            raise ValueError(
                f"noise must have shape {expected} (x's leading shape, "
                f"{'probes' if config.method == 'ode' else 'levels'}, d_model), got "
                f"{tuple(noise.shape)}."
            )
        noise = noise.reshape(-1, n_noise, d_model)
    z = prior._to_normalized(flat)
    if config.method == "ode":
        probe = noise[:, 0].to(z.device).sign()  # Rademacher: less variance than Gaussian
        total = ode_nll(prior.network.velocity, z, probe, config.ode_steps, prior.dtype)
        return total.reshape(x.shape[:-1]).to(x.device)
    total = torch.zeros(z.shape[0], device=z.device, dtype=torch.float32)
    for k, t in enumerate(config.levels):
        a, s = _affine_coefficients(prior, t, z.device)
        z_t = prior.add_noise(z, noise[:, k].to(z.device, z.dtype), t)
        error = prior.posterior_mean(z_t, t).float() - z.float()
        total += (a / s) ** 2 * error.square().mean(dim=-1)
    return (total / len(config.levels)).reshape(x.shape[:-1]).to(x.device)
