"""A tiny checkpoint folder in exactly the layout of the paper's release, and an independent
reference of its maths, for the GLP tests.

The folder is written the way the release's ``glp_train.py`` writes one: ``config.yaml`` (its
OmegaConf config, here dumped as plain YAML with the same keys), ``final.safetensors`` (the
denoiser's state dict under ``model.*``) and ``rep_statistics.pt`` (``torch.save`` of a dict of
plain tensors). The reference below restates the release's equations in float64 with nothing
taken from the package: sinusoid ``[cos, sin]`` of ``timestep * 10000^(-k/half)``, time MLP,
optional layer MLP of the sinusoid of ``L / (n - 1)``, blocks
``x + down(SiLU(gate(ln x) * time_proj(emb)) * up(ln x))``, final LayerNorm and projection, and
diffusers' flow-matching Euler scheduler for the schedule.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from diffusers import FlowMatchEulerDiscreteScheduler
from safetensors.torch import save_file

D_INPUT, D_MODEL, D_MLP, N_LAYERS = 6, 12, 16, 2


def release_tensors(
    d_input=D_INPUT, d_model=D_MODEL, d_mlp=D_MLP, n_layers=N_LAYERS, multi=False, seed=0
) -> dict[str, torch.Tensor]:
    """Random float32 weights under the release's keys and shapes (Linear weights [out, in])."""
    gen = torch.Generator().manual_seed(seed)
    shapes = {
        "model.in_proj": (d_model, d_input),
        "model.out_proj": (d_input, d_model),
        "model.time_embed.0": (d_model, d_model),
        "model.time_embed.2": (d_model, d_model),
    }
    if multi:
        shapes.update({"model.layer_embed.0": (d_model, d_model)})
        shapes.update({"model.layer_embed.2": (d_model, d_model)})
    for i in range(n_layers):
        for name in ("up_proj", "gate_proj", "time_proj"):
            shapes[f"model.layers.{i}.{name}"] = (d_mlp, d_model)
        shapes[f"model.layers.{i}.down_proj"] = (d_model, d_mlp)
    tensors = {}
    for name, (out, inp) in shapes.items():
        tensors[f"{name}.weight"] = torch.randn(out, inp, generator=gen) / math.sqrt(inp)
        tensors[f"{name}.bias"] = 0.1 * torch.randn(out, generator=gen)
    for name in ["model.ln", *(f"model.layers.{i}.ln" for i in range(n_layers))]:
        tensors[f"{name}.weight"] = 1 + 0.1 * torch.randn(d_model, generator=gen)
        tensors[f"{name}.bias"] = 0.1 * torch.randn(d_model, generator=gen)
    return tensors


def release_config(
    layers=(7,), multi_layer_n_layers=None, model_name="meta-llama/Llama-3.2-1B", **denoiser
) -> dict:
    """The release's config.yaml keys (training settings included, as glp_train.py saves them)."""
    denoiser_config = dict(d_input=D_INPUT, d_model=D_MODEL, d_mlp=D_MLP, n_layers=N_LAYERS)
    denoiser_config.update(denoiser)
    if multi_layer_n_layers is not None:
        denoiser_config["multi_layer_n_layers"] = multi_layer_n_layers
    return {
        "save_root": ".",
        "model_name": model_name,
        "run_name": "glp-llama1b-d2-static",
        "train_dataset": "./data/llama1b-layer07-fineweb-1M",
        "rep_statistic": "./data/llama1b-layer07-fineweb-1M/rep_statistics.pt",
        "glp_kwargs": {
            "normalizer_config": {"rep_statistic": "./data/rep_statistics.pt"},
            "denoiser_config": denoiser_config,
            "tracedict_config": {
                "layer_prefix": "model.layers",
                "layers": list(layers),
                "retain": "output",
            },
        },
        "use_bf16": True,
        "learning_rate": 5e-5,
        "batch_size": 4096,
        "lr_scheduler": {"scheduler_cls": "cosine_scheduler_with_warmup", "warmup_ratio": 0.01},
    }


def release_statistics(rows: int | None, d_input=D_INPUT, seed=1) -> dict[str, torch.Tensor]:
    """``{"mean", "var"}``: ``[d]`` for ``rows=None``, else ``[rows, d]``."""
    gen = torch.Generator().manual_seed(seed)
    shape = (d_input,) if rows is None else (rows, d_input)
    return {
        "mean": 3 * torch.randn(shape, generator=gen),
        "var": torch.rand(shape, generator=gen) * 4 + 0.5,
    }


def write_release(folder: Path, config=None, tensors=None, stats=None, name="final") -> Path:
    """Write a release folder; unspecified parts are a consistent single-layer checkpoint."""
    config = release_config() if config is None else config
    multi = "multi_layer_n_layers" in config["glp_kwargs"]["denoiser_config"]
    rows = config["glp_kwargs"]["denoiser_config"].get("multi_layer_n_layers")
    tensors = release_tensors(multi=multi) if tensors is None else tensors
    stats = release_statistics(rows) if stats is None else stats
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (folder / f"{name}.safetensors").parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, folder / f"{name}.safetensors")
    torch.save(stats, folder / "rep_statistics.pt")
    return folder


# ----------------------------------------------------------------- reference of the release
def _sinusoid(values: torch.Tensor, dim: int) -> torch.Tensor:
    # In float32, as the release computes it (its frequencies and arguments are float32).
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    args = values.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1).double()


def reference_velocity(w, latents, timesteps, layer_idx=None, n_positions=None):
    """The release's denoiser output for normalised ``latents`` [n, d] at ``timesteps`` [n]
    (``1000 * sigma``), in float64."""
    w = {k: v.double() for k, v in w.items()}

    def lin(x, name):
        return x @ w[f"{name}.weight"].T + w[f"{name}.bias"]

    def norm(x, name):
        return F.layer_norm(x, x.shape[-1:], w[f"{name}.weight"], w[f"{name}.bias"], eps=1e-5)

    dim = w["model.in_proj.weight"].shape[0]
    emb = lin(F.silu(lin(_sinusoid(timesteps, dim), "model.time_embed.0")), "model.time_embed.2")
    if layer_idx is not None:
        index = torch.full((latents.shape[0],), layer_idx, dtype=torch.long)
        depth = index.float() / (n_positions - 1)  # float32, as the release divides
        layer = lin(
            F.silu(lin(_sinusoid(depth, dim), "model.layer_embed.0")), "model.layer_embed.2"
        )
        emb = emb + layer
    x = lin(latents.double(), "model.in_proj")
    n_blocks = len({k.split(".")[2] for k in w if k.startswith("model.layers.")})
    for i in range(n_blocks):
        block = f"model.layers.{i}"
        h = norm(x, f"{block}.ln")
        gate = lin(h, f"{block}.gate_proj") * lin(emb, f"{block}.time_proj")
        x = x + lin(F.silu(gate) * lin(h, f"{block}.up_proj"), f"{block}.down_proj")
    return lin(norm(x, "model.ln"), "model.out_proj")


def reference_on_manifold(w, stats_mean, stats_var, x, noise, u=0.5, num_timesteps=20, **layer):
    """The release's on-manifold post-processing of RAW ``x`` with the given ``noise``: z-score
    with ``sqrt(var)``, set a ``num_timesteps`` schedule, noise to the level at index
    ``int(u * num_timesteps)``, step through the rest of the schedule, un-z-score."""
    scheduler = FlowMatchEulerDiscreteScheduler()
    scheduler.set_timesteps(num_timesteps)
    z = (x.double() - stats_mean.double()) / stats_var.double().sqrt()
    start = int(u * num_timesteps)
    sigma = scheduler.sigmas[start].double()
    z = (1 - sigma) * z + sigma * noise.double()
    for k in range(start, num_timesteps):
        t = scheduler.timesteps[k].double().expand(z.shape[0])
        v = reference_velocity(w, z, t, **layer)
        z = z + (scheduler.sigmas[k + 1].double() - scheduler.sigmas[k].double()) * v
    return z * stats_var.double().sqrt() + stats_mean.double()


def reference_sample(w, stats_mean, stats_var, noise, num_timesteps=20, **layer):
    """The release's ``sample`` from ``noise``, denormalised."""
    scheduler = FlowMatchEulerDiscreteScheduler()
    scheduler.set_timesteps(num_timesteps)
    z = noise.double()
    for k in range(num_timesteps):
        t = scheduler.timesteps[k].double().expand(z.shape[0])
        z = z + (scheduler.sigmas[k + 1].double() - scheduler.sigmas[k].double()) * (
            reference_velocity(w, z, t, **layer)
        )
    return z * stats_var.double().sqrt() + stats_mean.double()


def flat_stats(stats, row=None):
    mean, var = stats["mean"], stats["var"]
    if row is not None:
        return mean[row], var[row]
    return mean.reshape(-1), var.reshape(-1)
