"""The paper's released priors (GLP checkpoints) as a prior of this package.

:class:`GLPPrior` runs the released network (:mod:`~tl_diffusion_prior.priors.glp_network`) with
the release's conventions, so that a checkpoint read by
:func:`~tl_diffusion_prior.priors.glp_format.load_glp_checkpoint` denoises, samples and steers as
the paper's code does:

* noise ``z_t = (1 - t) x + t eps`` with ``t`` in float32, target velocity ``eps - x`` (the code's
  ``u`` is ``1 - t``);
* timestep ``1000 t`` into the sinusoid, Euler steps on diffusers' flow-matching schedule (levels
  evenly spaced down to ``sigma_min = 0.001``, then one step to 0);
* training levels on that scheduler's 1000-point grid;
* z-scoring with the released mean and population variance and no epsilon (``norm_eps`` is
  1e-30, below float64's resolution of any variance over 1e-14, so ``std = sqrt(var)`` exactly,
  while a dead dimension still gets a finite scale);
* on-manifold steering as the release runs it: :func:`paper_steering_schedule` gives the
  ``t_start``/``num_steps`` (0.4742, 10 steps) of its "noise to 0.5, 20-step schedule".

It is its own class rather than an :class:`~tl_diffusion_prior.priors.mlp.MLPPrior` with another
config because the schedule, the training grid, the layer embedding and the normaliser epsilon all
differ; the network itself is ``FlowMLP``'s.

**Multi-layer checkpoints** (``glp-llama1b-d12-multi``) model layers ``0..n-1`` with one network,
conditioned on the layer. Such a prior holds every layer's statistics; pick a layer with
:meth:`GLPPrior.at_layer` (``prior.at_layer(7)``), which returns a prior of that layer's hook
sharing the weights (``prior.at_hook("blocks.7.hook_resid_post")`` does the same from a hook name).
An unpicked multi-layer prior refuses to denoise, sample or attach, saying so; it trains on rows of
all its layers at once (:mod:`~tl_diffusion_prior.priors.glp_layers`). A prior trained here may
cover any increasing subset of ``0 .. layer_positions - 1`` (:func:`~tl_diffusion_prior.priors.
multi_layer.glp_prior_for_hooks` builds one).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import ClassVar

import torch
from jaxtyping import Float
from torch import Tensor

from tl_diffusion_prior.core.validation import check_int, check_positive_int
from tl_diffusion_prior.priors.base import (
    DiffusionPrior,
    PriorConfig,
    check_cov_eigenvalues,
    register_prior,
)
from tl_diffusion_prior.priors.glp_layers import LayerStatistics, check_rows, multi_layer_loss
from tl_diffusion_prior.priors.glp_network import (
    GLPNetwork,
    euler_sigmas,
    paper_steering_schedule,
    training_sigmas,
)
from tl_diffusion_prior.priors.mlp import MLPPriorConfig

__all__ = ["GLPPrior", "GLPPriorConfig", "hook_for_layer", "paper_steering_schedule"]

#: The hook an unpicked multi-layer prior names: a pattern, never a real hook point.
ANY_LAYER = "*"
_HOOK = re.compile(r"blocks\.(\d+|\*)\.(hook_resid_post|hook_resid_pre)")


def hook_for_layer(layer: int | str, point: str = "hook_resid_post") -> str:
    """The TransformerLens hook of the release's layer ``layer``: its decoder layer's output is
    ``blocks.L.hook_resid_post`` (its input, ``retain: input``, is ``blocks.L.hook_resid_pre``)."""
    return f"blocks.{layer}.{point}"


@dataclass(kw_only=True)
class GLPPriorConfig(PriorConfig):
    """Config of :class:`GLPPrior`; the release's ``denoiser_config`` under our names.

    Attributes:
        d_model: Activation size (the release's ``d_input``).
        hook_name: ``blocks.L.hook_resid_post`` of the modelled layer ``L``; ``blocks.*.<point>``
            for a multi-layer prior with no layer picked.
        d_hidden: Width of the network's residual stream and timestep embedding (the release's
            ``d_model``; ``2 * d_model`` in every released checkpoint).
        d_mlp: Hidden size of each block's gated MLP (``4 * d_model`` in the release).
        depth: Number of blocks (the release's ``n_layers``: 3, 6, 12 or 24).
        layer_positions: The release's ``multi_layer_n_layers``: how many layers a multi-layer
            prior covers (its layer depth is ``L / (layer_positions - 1)``); None: single layer.
        layers: The model layers the prior covers (``tracedict_config.layers``): one for a
            single-layer prior; ``0 .. layer_positions - 1`` for a multi-layer one.
        layer: The layer this prior denoises at; None on a multi-layer prior with no layer picked
            (see :meth:`GLPPrior.at_layer`). A single-layer prior always has its one layer.
        num_train_timesteps: Steps of the release's flow-matching scheduler (1000).
        sample_steps: Euler steps :meth:`GLPPrior.sample` takes by default (the release's 20).
        norm_eps: Added to the variance; 1e-30 reproduces the release's ``sqrt(var)``.
    """

    expected_architecture: ClassVar[str | None] = "glp"

    architecture: str = "glp"
    norm_eps: float = 1e-30
    d_hidden: int
    d_mlp: int
    depth: int
    layers: tuple[int, ...]
    layer_positions: int | None = None
    layer: int | None = None
    num_train_timesteps: int = 1000
    sample_steps: int = 20

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("d_hidden", "d_mlp", "depth", "num_train_timesteps", "sample_steps"):
            check_positive_int(name, getattr(self, name))
        if self.d_hidden % 2:
            raise ValueError(f"d_hidden must be even (cos and sin halves), got {self.d_hidden}.")
        if not isinstance(self.layers, tuple) or not self.layers:
            raise ValueError(f"layers must be a non-empty tuple of ints, got {self.layers!r}.")
        for value in self.layers:
            check_int("layers[i]", value, minimum=0)
        if self.layer_positions is None:
            self._check_single_layer()
        else:
            self._check_multi_layer()
        match = _HOOK.fullmatch(self.hook_name)
        expected = hook_for_layer(ANY_LAYER if self.layer is None else self.layer, "<point>")
        if match is None or match.group(1) != expected.split(".")[1]:
            raise ValueError(
                f"hook_name must be {expected} with <point> hook_resid_post or hook_resid_pre "
                f"(the layer the prior models), got {self.hook_name!r}."
            )

    def _check_single_layer(self) -> None:
        if len(self.layers) != 1:
            raise ValueError(
                f"A single-layer prior (layer_positions None) covers one layer, got layers="
                f"{list(self.layers)}; set layer_positions for a multi-layer prior."
            )
        if self.layer is None:
            self.layer = self.layers[0]
        elif self.layer != self.layers[0]:
            raise ValueError(f"layer must be {self.layers[0]} (layers), got {self.layer}.")

    def _check_multi_layer(self) -> None:
        check_int("layer_positions", self.layer_positions, minimum=2)
        # The depth fed to the layer embedding is L / (layer_positions - 1): the release covers
        # every layer 0..n-1; a prior trained here may cover a subset (e.g. 9, 12, 15, 18 of 30).
        # Statistics rows follow `layers`, so their order must be fixed: strictly increasing.
        layers, top = list(self.layers), self.layer_positions - 1
        if layers != sorted(set(layers)) or layers[-1] > top or len(layers) < 2:
            raise ValueError(
                f"A multi-layer prior must cover layers 0..{top} or a strictly increasing subset "
                f"of two or more of them (layer_positions={self.layer_positions}), got {layers}."
            )
        if self.layer is not None and self.layer not in self.layers:
            raise ValueError(f"layer must be one of {list(self.layers)}, got {self.layer}.")

    @property
    def hook_point(self) -> str:
        """``hook_resid_post`` (the release's ``retain: output``) or ``hook_resid_pre``."""
        return self.hook_name.rsplit(".", 1)[1]

    def network_config(self) -> MLPPriorConfig:
        """The sizes of the equivalent ``FlowMLP``: timestep embedding and MLP ``d_hidden`` wide."""
        return MLPPriorConfig(
            d_model=self.d_model,
            hook_name=self.hook_name,
            model_name=self.model_name,
            depth=self.depth,
            d_hidden=self.d_hidden,
            d_mlp=self.d_mlp,
            time_embed_dim=self.d_hidden,
            d_time=self.d_hidden,
            gaussian_skip=False,
        )


def _plain_model_name(name: str) -> str:
    """``org/Meta-Llama-3.1-8B`` -> ``llama-3.1-8b``: the name without organisation, case or the
    Hub's renamed ``Meta-`` prefix of Llama 3.1."""
    plain = name.rsplit("/", 1)[-1].lower()
    return plain.removeprefix("meta-") if plain.startswith("meta-llama-3.1") else plain


@register_prior("glp")
class GLPPrior(DiffusionPrior):
    """A released GLP (see the module docstring). Usually built by
    :func:`~tl_diffusion_prior.priors.glp_format.load_glp_checkpoint` or ``load_prior``.

    Args:
        config: A :class:`GLPPriorConfig`.
        network: Weights to share instead of building new ones (what :meth:`at_layer` passes).
        layer_stats: Per-layer statistics to share (multi-layer priors).
    """

    config_class = GLPPriorConfig
    config: GLPPriorConfig

    def __init__(
        self,
        config: GLPPriorConfig,
        network: GLPNetwork | None = None,
        layer_stats: LayerStatistics | None = None,
    ) -> None:
        super().__init__(config)
        if network is None:
            network = GLPNetwork(config.network_config(), config.layer_positions)
        self.network = network
        self.layer_stats = None
        if config.layer_positions is not None:
            if layer_stats is None:
                layer_stats = LayerStatistics(len(config.layers), config.d_model, config.norm_eps)
            self.layer_stats = layer_stats

    @property
    def is_multi_layer(self) -> bool:
        return self.config.layer_positions is not None

    @property
    def layer_hooks(self) -> tuple[str, ...]:
        """The hook of every covered layer, in ``layers`` order (a buffer's ``hook_names``)."""
        return tuple(hook_for_layer(layer, self.config.hook_point) for layer in self.config.layers)

    def at_hook(self, hook_name: str) -> GLPPrior:
        """:meth:`at_layer` of the layer ``hook_name`` (``blocks.L.<this prior's point>``) names."""
        match = _HOOK.fullmatch(hook_name) if isinstance(hook_name, str) else None
        if match is None or match.group(1) == ANY_LAYER or match.group(2) != self.config.hook_point:
            raise ValueError(
                f"hook_name must be one of this prior's hooks {list(self.layer_hooks)}, got "
                f"{hook_name!r}."
            )
        return self.at_layer(int(match.group(1)))

    def set_normalization(self, mean: Tensor, var: Tensor) -> None:
        """Unpicked multi-layer prior: every layer's statistics, ``[layers, d_model]`` in
        ``layers`` order (a buffer's ``mean(hooks)``/``var(hooks)``); else one hook's ``[d]``."""
        if self.layer_stats is None or self.config.layer is not None:
            return super().set_normalization(mean, var)
        self.layer_stats.set_stats(mean, var)
        self.normalizer.fitted.fill_(True)  # what the trainer reads as "statistics are set"

    def loss(
        self, x: Tensor, generator: torch.Generator | None = None, levels: Tensor | None = None
    ) -> Float[Tensor, ""]:
        """:meth:`DiffusionPrior.loss`; an unpicked multi-layer prior takes RAW rows of all its
        layers, ``[batch, layers, d_model]`` (see :func:`~tl_diffusion_prior.priors.glp_layers.
        multi_layer_loss`: one layer drawn per row, or every layer when ``levels`` is given)."""
        cfg = self.config
        if self.layer_stats is None or cfg.layer is not None:
            return super().loss(x, generator, levels)
        check_rows(x, levels, len(cfg.layers), cfg.d_model, self.layer_hooks)
        return multi_layer_loss(self, x, generator, levels)

    @property
    def default_sample_steps(self) -> int:
        return self.config.sample_steps

    def at_layer(self, layer: int) -> GLPPrior:
        """This prior at model layer ``layer``: its hook, its statistics, the shared weights.

        On a single-layer prior, its own layer returns itself and any other is an error.
        """
        cfg = self.config
        check_int("layer", layer, minimum=0)
        if layer not in cfg.layers:
            raise ValueError(
                f"This prior covers layers {list(cfg.layers)}, not layer {layer}; pick one of "
                "those (or load a prior trained on that layer)."
            )
        if not self.is_multi_layer:
            return self
        config = dataclasses.replace(
            cfg, layer=layer, hook_name=hook_for_layer(layer, cfg.hook_point)
        )
        view = GLPPrior(config, network=self.network, layer_stats=self.layer_stats)
        stats = self.layer_stats
        row = cfg.layers.index(layer)
        view.normalizer.to(stats.mean.device)
        with torch.no_grad():
            view.normalizer.mean.copy_(stats.mean[row])
            view.normalizer.std.copy_(stats.std[row])
            view.normalizer.fitted.fill_(True)
        view.record_training(self.training_record)
        return view.train(self.training)

    def check_compatible(self, *, model_name: str | None = None, **kwargs) -> None:
        """:meth:`DiffusionPrior.check_compatible`, after checking a layer is picked.

        The release names its model by its Hugging Face id (``meta-llama/Llama-3.2-1B``); a
        ``HookedTransformer``'s ``cfg.model_name`` drops the organisation (``Llama-3.2-1B``) and a
        ``TransformerBridge``'s keeps it, so the names are compared without it, and without the
        ``Meta-`` the Hub dropped when it renamed ``Meta-Llama-3.1-*`` to ``Llama-3.1-*`` (the 8B
        release says ``meta-llama/Meta-Llama-3.1-8B``, TransformerLens ``Llama-3.1-8B``).
        """
        self._require_layer()
        own = self.config.model_name
        if model_name is not None and _plain_model_name(model_name) == _plain_model_name(own):
            model_name = own
        super().check_compatible(model_name=model_name, **kwargs)

    def _require_layer(self) -> None:
        if self.config.layer is None:
            example = self.config.layers[0]
            raise ValueError(
                f"This multi-layer prior covers layers {list(self.config.layers)} and no layer is "
                f"picked; use prior.at_layer(L) (e.g. prior.at_layer({example}) for "
                f"{hook_for_layer(example, self.config.hook_point)}) before denoising, sampling, "
                "training or steering with it."
            )

    def _layer_depth(self, device: torch.device) -> Tensor | None:
        """The release's ``layer_idx.float() / (multi_layer_n_layers - 1)``, as a [1] tensor."""
        if not self.is_multi_layer:
            return None
        index = torch.tensor([self.config.layer], dtype=torch.float32, device=device)
        return index / (self.config.layer_positions - 1)

    def _loss_normalized(
        self,
        z: Float[Tensor, "batch d_model"],
        generator: torch.Generator | None,
        levels: Float[Tensor, " batch"] | None = None,
        layer_depth: Float[Tensor, " batch"] | None = None,
    ) -> Float[Tensor, ""]:
        """``layer_depth``: each row's own layer (multi-layer training); default the picked one."""
        if layer_depth is None:
            self._require_layer()
            layer_depth = self._layer_depth(z.device)
        batch, n = z.shape[0], self.config.num_train_timesteps
        if levels is None:
            levels = torch.rand(batch, generator=generator, device=z.device, dtype=torch.float32)
        grid = training_sigmas(n).to(z.device)
        t = grid[(levels * n).long().clamp_(max=n - 1)]
        eps = torch.randn(z.shape, generator=generator, device=z.device, dtype=torch.float32)
        x = z.float()
        z_t = ((1.0 - t[:, None]) * x + t[:, None] * eps).to(z.dtype)
        mods = self.network.time_modulation(t, layer_depth)
        v = self.network(z_t, mods, t)
        return (v.float() - (eps - x)).square().mean()

    def add_noise(
        self, z: Float[Tensor, "n d_model"], noise: Float[Tensor, "n d_model"], t: float
    ) -> Float[Tensor, "n d_model"]:
        # The release's (1 - sigma) x + sigma eps with sigma a float32 tensor, not a lerp: the
        # same roundings as its code.
        sigma = torch.tensor(t, dtype=torch.float32, device=z.device)
        return ((1.0 - sigma) * z.float() + sigma * noise.float()).to(z.dtype)

    def posterior_mean(
        self, z_t: Float[Tensor, "n d_model"], t: float
    ) -> Float[Tensor, "n d_model"]:
        return self._integrate(z_t, float(t), 1)

    def _denoise_normalized(
        self,
        z: Float[Tensor, "n d_model"],
        t_start: float,
        num_steps: int,
        noise: Float[Tensor, "n d_model"],
    ) -> Float[Tensor, "n d_model"]:
        self._require_layer()
        return self._integrate(self.add_noise(z, noise, t_start), t_start, num_steps)

    def _sample_normalized(
        self, noise: Float[Tensor, "n d_model"], num_steps: int
    ) -> Float[Tensor, "n d_model"]:
        return self._integrate(noise, 1.0, num_steps)

    def _integrate(self, z_t: Tensor, t_start: float, num_steps: int) -> Tensor:
        """Euler steps ``z + (sigma_next - sigma) v(z, sigma)`` over :func:`euler_sigmas`.

        The update is the scheduler's, in float32; unlike the release, a bf16 network's state is
        not rounded to bf16 between steps.
        """
        self._require_layer()
        dtype = self.dtype
        sigmas = euler_sigmas(t_start, num_steps, self.config.num_train_timesteps)
        sigmas = sigmas.to(z_t.device)
        state = z_t.to(torch.promote_types(dtype, torch.float32), copy=True)
        mods = self.network.time_modulation(sigmas[:-1], self._layer_depth(z_t.device))
        mods = mods.transpose(0, 1).unsqueeze(2).contiguous()  # [steps, depth, 1, d_mlp]
        for k in range(num_steps):
            v = self.network(state.to(dtype), mods[k], sigmas[k : k + 1])
            state = state + (sigmas[k + 1] - sigmas[k]) * v
        return state.to(dtype)

    def gaussian_reference_loss(
        self,
        cov_eigenvalues: Float[Tensor, " d"],
        data_second_moments: Float[Tensor, " d"] | None = None,
    ) -> float:
        """The optimal linear (Gaussian) velocity's loss, averaged over the training grid.

        Per level ``t`` the MMSE is ``lam / ((1 - t)^2 lam + t^2)``; with ``data_second_moments``
        ``m`` it is the same predictor's error on data of second moment ``m`` (see
        :meth:`MLPPrior.gaussian_reference_loss <tl_diffusion_prior.priors.mlp.MLPPrior.
        gaussian_reference_loss>`). The grid replaces the continuous ``t ~ U(0, 1)``.
        """
        lam = check_cov_eigenvalues(cov_eigenvalues, self.config.d_model)[None, :]
        m = lam
        if data_second_moments is not None:
            m = check_cov_eigenvalues(
                data_second_moments, self.config.d_model, "data_second_moments"
            )[None, :]
        t = training_sigmas(self.config.num_train_timesteps).double()[:, None]
        denom = (1 - t) ** 2 * lam + t**2
        gain = (t - (1 - t) * lam) / denom
        mse = 1 + m - 2 * gain * (t - (1 - t) * m) + gain**2 * ((1 - t) ** 2 * m + t**2)
        return float(mse.mean())
