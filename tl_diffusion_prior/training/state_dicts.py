"""Optimizer, RNG and nested state dicts split into tensors (for safetensors) and the JSON rest.

A checkpoint holds no pickle: every state the trainer restores is taken apart here into named
tensors and JSON-able values, and put back together exactly on resume.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor


def split_state(state: Mapping[str, Any], prefix: str) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split a flat state dict into prefixed tensors (for safetensors) and the rest (for JSON)."""
    tensors = {f"{prefix}{k}": v for k, v in state.items() if isinstance(v, Tensor)}
    rest = {k: v for k, v in state.items() if not isinstance(v, Tensor)}
    return tensors, rest


def join_state(tensors: Mapping[str, Tensor], rest: Mapping[str, Any], prefix: str) -> dict:
    """Inverse of :func:`split_state`."""
    state = {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}
    state.update(rest)
    return state


def optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """AdamW (or any torch optimizer) state as safetensors tensors plus JSON.

    Per-parameter tensors (``exp_avg``, ``exp_avg_sq``, ``step``) become
    ``optimizer/<param index>/<name>``; non-tensor entries and the parameter groups go to JSON.
    """
    state = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entries in state["state"].items():
        for name, value in entries.items():
            if isinstance(value, Tensor):
                tensors[f"optimizer/{index}/{name}"] = value
            else:
                scalars.setdefault(str(index), {})[name] = value
    groups = [
        {k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()}
        for g in state["param_groups"]
    ]
    return tensors, {"param_groups": groups, "scalars": scalars}


def load_optimizer_state(
    optimizer: torch.optim.Optimizer, tensors: Mapping[str, Tensor], meta: Mapping[str, Any]
) -> None:
    """Restore what :func:`optimizer_state` produced."""
    per_param: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if not key.startswith("optimizer/"):
            continue
        _, index, name = key.split("/", 2)
        per_param.setdefault(int(index), {})[name] = value
    for index, entries in meta["scalars"].items():
        per_param.setdefault(int(index), {}).update(entries)
    groups = []
    for group in meta["param_groups"]:
        group = dict(group)
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
        groups.append(group)
    optimizer.load_state_dict({"state": per_param, "param_groups": groups})


def rng_state(generators: Mapping[str, torch.Generator]) -> tuple[dict[str, Tensor], dict]:
    """Every RNG a training step may touch: named generators, torch CPU/CUDA, python, numpy."""
    tensors = {f"rng/{name}": gen.get_state() for name, gen in generators.items()}
    tensors["rng/torch_cpu"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng/torch_cuda"] = torch.cuda.get_rng_state()
    version, internal, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    meta = {
        "python": [version, list(internal), gauss],
        "numpy": [np_name, np_keys.tolist(), np_pos, np_has_gauss, np_gauss],
    }
    return tensors, meta


def load_rng_state(
    generators: Mapping[str, torch.Generator], tensors: Mapping[str, Tensor], meta: Mapping
) -> None:
    """Restore what :func:`rng_state` produced."""
    for name, gen in generators.items():
        key = f"rng/{name}"
        if key not in tensors:
            raise ValueError(f"The checkpoint has no state for generator {name!r}.")
        gen.set_state(tensors[key])
    torch.set_rng_state(tensors["rng/torch_cpu"])
    if "rng/torch_cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng/torch_cuda"])
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = meta["numpy"]
    np.random.set_state(
        (np_name, np.asarray(np_keys, dtype=np.uint32), np_pos, np_has_gauss, np_gauss)
    )


# ------------------------------------------------------------------ the trainer's state
