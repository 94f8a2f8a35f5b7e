"""Read a checkpoint folder of the paper's release (``generative_latent_prior``) into a GLPPrior.

The release's folders (``generative-latent-prior/glp-llama1b-d6`` on the Hugging Face Hub, or a
run folder of its ``glp_train.py``) hold:

* ``config.yaml``: the OmegaConf training config, saved resolved. The prior is described by
  ``glp_kwargs.denoiser_config`` (``d_input``, ``d_model``, ``d_mlp``, ``n_layers``,
  ``multi_layer_n_layers``), ``glp_kwargs.tracedict_config`` (``layer_prefix: model.layers``,
  ``layers: [L, ...]``, ``retain: output``) and ``model_name``. Every other top-level key is a
  training setting, kept in the prior's ``training_record``; an unknown key inside those three
  sections is an error, since it would describe a model this reader does not build.
* ``final.safetensors`` (or ``checkpoints/epoch_N.safetensors``): the denoiser's state dict, keys
  ``model.in_proj.*``, ``model.layers.{i}.{ln,up_proj,gate_proj,time_proj,down_proj}.*``,
  ``model.time_embed.{0,2}.*``, ``model.layer_embed.{0,2}.*`` (multi-layer only), ``model.ln.*``,
  ``model.out_proj.*``; ``nn.Linear`` weights are ``[out, in]``.
* ``rep_statistics.pt``: a pickled dict ``{"mean", "var"}`` of shape ``[d]`` (or ``[1, d]``), or
  ``[layers, d]`` for a multi-layer prior; ``var`` is a population variance. It is read with
  ``torch.load(..., weights_only=True)``, which rebuilds tensors and plain containers only and
  never runs code from the file; this is the one place in the package that reads a pickle, and the
  result is saved in our safetensors format by ``save_pretrained``.

Their layer ``L`` (``model.layers[L]``'s output) is TransformerLens ``blocks.L.hook_resid_post``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from pickle import UnpicklingError  # the exception only: nothing here calls pickle
from typing import Any

import torch
import yaml
from safetensors import SafetensorError, safe_open
from torch import Tensor

from tl_diffusion_prior.constants import (
    GLP_CHECKPOINTS_DIRNAME,
    GLP_CONFIG_NAME,
    GLP_FINAL_CHECKPOINT,
    GLP_STATS_NAME,
)
from tl_diffusion_prior.core.integrity import check_finite
from tl_diffusion_prior.core.serialization import load_safetensors
from tl_diffusion_prior.priors.glp import ANY_LAYER, GLPPrior, GLPPriorConfig, hook_for_layer

#: What the release's ``retain`` records -> the TransformerLens hook point of that tensor.
RETAIN_TO_HOOK_POINT = {"output": "hook_resid_post", "input": "hook_resid_pre"}
#: The release's name for the decoder layers of a Hugging Face causal LM: TransformerLens blocks.
LAYER_PREFIX = "model.layers"

_SECTIONS = {
    "denoiser_config": {"d_input", "d_model", "d_mlp", "n_layers", "multi_layer_n_layers"},
    "normalizer_config": {"rep_statistic"},
    "tracedict_config": {"layer_prefix", "layers", "retain"},
}
_REQUIRED = {"denoiser_config": {"d_input", "d_model", "d_mlp", "n_layers"}}


def is_glp_checkpoint_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` looks like a release folder: ``config.yaml`` and ``rep_statistics.pt``."""
    path = Path(path)
    return (path / GLP_CONFIG_NAME).is_file() and (path / GLP_STATS_NAME).is_file()


def _fail(directory: Path, message: str) -> ValueError:
    return ValueError(f"{directory / GLP_CONFIG_NAME}: {message}")


def _section(directory: Path, glp_kwargs: Mapping, name: str) -> dict[str, Any]:
    section = glp_kwargs.get(name) or {}
    if not isinstance(section, Mapping):
        raise _fail(directory, f"glp_kwargs.{name} must be a mapping, got {section!r}.")
    unknown = sorted(set(section) - _SECTIONS[name])
    if unknown:
        raise _fail(
            directory,
            f"unknown field(s) {unknown} in glp_kwargs.{name}; the release's fields are "
            f"{sorted(_SECTIONS[name])}. This reader builds the released architecture only: remove "
            "them if they are annotations, or use the code that wrote this checkpoint.",
        )
    missing = sorted(_REQUIRED.get(name, set()) - set(section))
    if missing:
        raise _fail(directory, f"glp_kwargs.{name} lacks {missing}; it cannot size the network.")
    for key, value in section.items():
        if isinstance(value, str) and "${" in value:
            raise _fail(
                directory,
                f"glp_kwargs.{name}.{key} is an unresolved interpolation {value!r}; save the "
                "config with OmegaConf.save(..., resolve=True) or write the value in.",
            )
    return dict(section)


def read_glp_config(directory: str | os.PathLike) -> tuple[GLPPriorConfig, dict[str, Any]]:
    """The prior's config from a release folder's ``config.yaml``, and the training settings.

    Raises:
        ValueError: the YAML is unreadable, a model-defining field is missing, unknown or
            invalid, or the layers do not map onto TransformerLens hooks.
    """
    directory = Path(directory)
    try:
        data = yaml.safe_load((directory / GLP_CONFIG_NAME).read_text())
    except yaml.YAMLError as exc:
        raise _fail(directory, f"not valid YAML ({exc}).") from exc
    if not isinstance(data, Mapping) or not isinstance(data.get("glp_kwargs"), Mapping):
        raise _fail(directory, "no glp_kwargs mapping: is this a generative_latent_prior config?")
    glp_kwargs = data["glp_kwargs"]
    unknown = sorted(set(glp_kwargs) - set(_SECTIONS))
    if unknown:
        raise _fail(
            directory, f"unknown glp_kwargs field(s) {unknown}; known: {sorted(_SECTIONS)}."
        )
    denoiser = _section(directory, glp_kwargs, "denoiser_config")
    _section(directory, glp_kwargs, "normalizer_config")  # its path is replaced by the folder's
    trace = _section(directory, glp_kwargs, "tracedict_config")
    layers, point = _layers_and_hook_point(directory, trace)
    positions = denoiser.get("multi_layer_n_layers")
    model_name = data.get("model_name")
    if not isinstance(model_name, str) or not model_name or "${" in model_name:
        raise _fail(
            directory,
            f"model_name must name the source model (its Hugging Face id), got {model_name!r}.",
        )
    single = positions is None and len(layers) == 1
    try:
        config = GLPPriorConfig(
            d_model=denoiser["d_input"],
            d_hidden=denoiser["d_model"],
            d_mlp=denoiser["d_mlp"],
            depth=denoiser["n_layers"],
            layer_positions=positions,
            layers=tuple(layers),
            hook_name=hook_for_layer(layers[0] if single else ANY_LAYER, point),
            model_name=model_name,
        )
    except (TypeError, ValueError) as exc:
        raise _fail(directory, f"it describes no valid GLP ({exc})") from exc
    training = {k: v for k, v in data.items() if k != "glp_kwargs"}
    return config, json.loads(json.dumps(training, default=str))


def _layers_and_hook_point(directory: Path, trace: Mapping[str, Any]) -> tuple[list[int], str]:
    layers = trace.get("layers")
    if (
        not isinstance(layers, list)
        or not layers
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in layers)
    ):
        raise _fail(
            directory,
            f"glp_kwargs.tracedict_config.layers must list the modelled layer numbers, got "
            f"{layers!r}; without it the prior's TransformerLens hook is unknown.",
        )
    prefix = trace.get("layer_prefix", LAYER_PREFIX)
    if prefix != LAYER_PREFIX:
        raise _fail(
            directory,
            f"layer_prefix {prefix!r} is not {LAYER_PREFIX!r} (a Hugging Face causal LM's decoder "
            "layers), so it maps onto no TransformerLens hook.",
        )
    retain = trace.get("retain", "output")
    if retain not in RETAIN_TO_HOOK_POINT:
        raise _fail(
            directory, f"retain must be one of {sorted(RETAIN_TO_HOOK_POINT)}, got {retain!r}."
        )
    return layers, RETAIN_TO_HOOK_POINT[retain]


def expected_weight_shapes(config: GLPPriorConfig) -> dict[str, tuple[int, ...]]:
    """Every key of the release's weights file for ``config``, with its shape."""
    d, h, m = config.d_model, config.d_hidden, config.d_mlp
    shapes: dict[str, tuple[int, ...]] = {
        "model.in_proj.weight": (h, d),
        "model.in_proj.bias": (h,),
        "model.ln.weight": (h,),
        "model.ln.bias": (h,),
        "model.out_proj.weight": (d, h),
        "model.out_proj.bias": (d,),
    }
    embeds = ["time_embed"] + (["layer_embed"] if config.layer_positions is not None else [])
    for embed in embeds:
        for i in ("0", "2"):
            shapes[f"model.{embed}.{i}.weight"] = (h, h)
            shapes[f"model.{embed}.{i}.bias"] = (h,)
    for i in range(config.depth):
        block = f"model.layers.{i}"
        shapes.update({f"{block}.ln.weight": (h,), f"{block}.ln.bias": (h,)})
        for name in ("up_proj", "gate_proj", "time_proj"):
            shapes.update({f"{block}.{name}.weight": (m, h), f"{block}.{name}.bias": (m,)})
        shapes.update({f"{block}.down_proj.weight": (h, m), f"{block}.down_proj.bias": (h,)})
    return shapes


def check_weight_file(path: Path, config: GLPPriorConfig) -> None:
    """Compare the weights file's keys and shapes with ``config`` from its header (no tensor is
    read), raising ValueError that names every missing, unexpected or misshapen tensor."""
    expected = expected_weight_shapes(config)
    try:
        with safe_open(str(path), framework="pt") as f:
            found = {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
    except SafetensorError as exc:
        raise ValueError(
            f"{path} is not a readable safetensors file ({exc}); download it again."
        ) from exc
    problems = []
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing:
        problems.append(f"missing keys {missing[:8]}{' ...' if len(missing) > 8 else ''}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}")
    for key in sorted(set(expected) & set(found)):
        if found[key] != expected[key]:
            problems.append(f"{key} has shape {list(found[key])}, expected {list(expected[key])}")
    if problems:
        raise ValueError(
            f"{path} does not match {GLP_CONFIG_NAME} (d_input={config.d_model}, "
            f"d_model={config.d_hidden}, d_mlp={config.d_mlp}, n_layers={config.depth}, "
            f"multi_layer_n_layers={config.layer_positions}): "
            + "; ".join(problems[:12])
            + ". Check that the config and the weights come from the same checkpoint."
        )


def read_statistics(path: Path, config: GLPPriorConfig) -> tuple[Tensor, Tensor]:
    """``(mean, var)`` from ``rep_statistics.pt``, float64, ``[d]`` or ``[layers, d]``.

    The pickle is read with ``weights_only=True``: only tensors and plain containers can come out
    of it, and no code in it runs. Round-off in ``E[x^2] - E[x]^2`` can leave a constant
    dimension's variance a hair below zero; such values become 0, clearly negative ones are errors.
    """
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    # UnpicklingError: an object the weights-only reader refuses; the others: a damaged file.
    except (UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        raise ValueError(
            f"{path} could not be read as plain tensors ({type(exc).__name__}: {exc}); the "
            "release stores a dict {'mean': tensor, 'var': tensor} and nothing else is loaded."
        ) from exc
    if not isinstance(data, dict) or set(data) != {"mean", "var"}:
        keys = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{path} must hold a dict with keys ['mean', 'var'], got {keys}.")
    rows = 1 if config.layer_positions is None else config.layer_positions
    out = []
    for name in ("mean", "var"):
        value = data[name]
        if not isinstance(value, Tensor) or not value.is_floating_point():
            raise ValueError(f"{path}: {name} must be a float tensor, got {type(value).__name__}.")
        value = value.detach().to(torch.float64)
        if value.shape == (config.d_model,) and rows == 1:
            value = value[None]
        if value.shape != (rows, config.d_model):
            raise ValueError(
                f"{path}: {name} has shape {list(value.shape)}, expected [{config.d_model}]"
                + (f" or [1, {config.d_model}]" if rows == 1 else f" or [{rows}, {config.d_model}]")
                + f" (d_input={config.d_model} and {rows} layer(s) in {GLP_CONFIG_NAME})."
            )
        if not torch.isfinite(value).all():
            raise ValueError(f"{path}: {name} contains NaN or inf.")
        out.append(value)
    mean, var = out
    tolerance = 1e-6 * max(float(var.abs().max()), 1e-30)
    if float(var.min()) < -tolerance:
        raise ValueError(f"{path}: var has negative entries (minimum {float(var.min()):.3g}).")
    return mean, var.clamp_min(0.0)


def checkpoint_file(directory: Path, checkpoint: str) -> Path:
    """``<checkpoint>.safetensors`` in the folder or its ``checkpoints/`` (``"final"``,
    ``"epoch_1024"`` or ``"checkpoints/epoch_1024"``)."""
    name = checkpoint.removesuffix(".safetensors")
    candidates = [directory / f"{name}.safetensors"]
    if "/" not in name:
        candidates.append(directory / GLP_CHECKPOINTS_DIRNAME / f"{name}.safetensors")
    for path in candidates:
        if path.is_file():
            return path
    found = sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*.safetensors"))
    raise FileNotFoundError(
        f"No weights for checkpoint {checkpoint!r} in {directory} (looked for "
        f"{[p.relative_to(directory).as_posix() for p in candidates]}); found {found}. Pass "
        f"checkpoint={GLP_FINAL_CHECKPOINT!r} or one of those names."
    )


# The release's module names -> GLPNetwork's, blocks apart (layer_embed: multi-layer only).
_RENAMES = {
    "in_proj": "in_proj",
    "out_proj": "out_proj",
    "ln": "final_norm",
    "time_embed.0": "time_mlp.0",
    "time_embed.2": "time_mlp.2",
    "layer_embed.0": "layer_embed.0",
    "layer_embed.2": "layer_embed.2",
}


def to_network_state_dict(tensors: Mapping[str, Tensor], depth: int) -> dict[str, Tensor]:
    """The release's ``model.*`` tensors under :class:`GLPNetwork`'s names (``gate_up`` is
    ``gate_proj`` stacked over ``up_proj``: the fused layer's first half is the gate)."""
    state = {}
    for theirs, ours in _RENAMES.items():
        for param in ("weight", "bias"):
            key = f"model.{theirs}.{param}"
            if key in tensors:
                state[f"{ours}.{param}"] = tensors[key]
    for i in range(depth):
        block = f"model.layers.{i}"
        for param in ("weight", "bias"):
            state[f"blocks.{i}.norm.{param}"] = tensors[f"{block}.ln.{param}"]
            state[f"blocks.{i}.gate_up.{param}"] = torch.cat(
                [tensors[f"{block}.gate_proj.{param}"], tensors[f"{block}.up_proj.{param}"]]
            )
            state[f"blocks.{i}.time_proj.{param}"] = tensors[f"{block}.time_proj.{param}"]
            state[f"blocks.{i}.down.{param}"] = tensors[f"{block}.down_proj.{param}"]
    return state


def load_glp_checkpoint(
    directory: str | os.PathLike,
    checkpoint: str = GLP_FINAL_CHECKPOINT,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> GLPPrior:
    """A :class:`GLPPrior` from a release folder (see the module docstring), in eval mode.

    Everything is checked before the weights are read: the config's fields, the weight file's
    keys and shapes, the statistics' shapes. The weights load in float32 (then ``dtype``). A
    multi-layer checkpoint comes back with no layer picked: call ``.at_layer(L)``.

    Args:
        directory: The folder (a hub download is one).
        checkpoint: ``"final"`` or an intermediate checkpoint's name (``"epoch_0032"``).
        device, dtype: Where to put the prior and the weights' dtype (None: CPU, float32).
        provenance: Where the folder came from (hub repo, revision, commit), for the record.
    """
    directory = Path(directory)
    config, training = read_glp_config(directory)
    weights = checkpoint_file(directory, checkpoint)
    check_weight_file(weights, config)
    mean, var = read_statistics(directory / GLP_STATS_NAME, config)
    prior = GLPPrior(config)
    tensors = {k: v.float() for k, v in load_safetensors(weights).items()}
    prior.network.load_state_dict(to_network_state_dict(tensors, config.depth), strict=True)
    if prior.layer_stats is None:
        prior.set_normalization(mean[0], var[0])
    else:
        prior.layer_stats.set_stats(mean, var)
    check_finite(prior.state_dict(), weights)
    # A hub download is named by repository and commit, not by this machine's cache path.
    source = dict(provenance) if provenance else {"path": str(directory.resolve())}
    source.update(checkpoint=weights.relative_to(directory).as_posix())
    prior.record_training(
        {
            "format": "generative_latent_prior release (converted on load)",
            "source": source,
            "statistics": f"{GLP_STATS_NAME}: mean and population variance, read with "
            "torch.load(weights_only=True)",
            "release_config": training,
        }
    )
    prior.eval()
    return prior.to(device=device, dtype=dtype)
