"""A preallocated ring buffer of activations on the model's device.

Capture writes every forward pass straight into one tensor allocated once, ``[capacity, n_hooks,
d_model]``. The write pointer and every counter are device tensors and rows are selected with masks
and a scatter, never with boolean indexing or ``.item()``, so ``push`` never waits for the device.
Rows that are masked out (or non-finite) are scattered into one spare "trash" row past the end.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from tl_diffusion_prior.constants import FORMAT_VERSION
from tl_diffusion_prior.core.moments import RunningMoments
from tl_diffusion_prior.core.resources import check_fits_in_memory, tensor_bytes
from tl_diffusion_prior.core.serialization import atomic_save_safetensors, load_safetensors
from tl_diffusion_prior.core.validation import check_int

STORAGE_DTYPES = (torch.float32, torch.bfloat16)


class ActivationRingBuffer:
    """Ring buffer of ``capacity`` rows, each the activations of one token at ``n_hooks`` hooks.

    Args:
        capacity: number of rows kept; older rows are overwritten once it is full.
        d_model: width of each activation.
        hook_names: the hook point each slot of the ``n_hooks`` axis holds.
        device: where storage and counters live (the model's device for zero-copy capture).
        dtype: storage dtype, ``torch.float32`` or ``torch.bfloat16``. Statistics are float64.
    """

    def __init__(
        self,
        capacity: int,
        d_model: int,
        hook_names: Sequence[str] = ("activation",),
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ):
        check_int("capacity", capacity, minimum=1)
        check_int("d_model", d_model, minimum=1)
        if isinstance(hook_names, str):
            hook_names = (hook_names,)
        if len(hook_names) == 0 or len(set(hook_names)) != len(hook_names):
            raise ValueError(f"hook_names must be non-empty and unique, got {list(hook_names)}.")
        if dtype not in STORAGE_DTYPES:
            raise ValueError(
                f"dtype must be torch.float32 or torch.bfloat16, got {dtype}. "
                "Statistics are always accumulated in float64 whatever the storage dtype."
            )
        self.capacity = capacity
        self.d_model = d_model
        self.hook_names = tuple(hook_names)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = dtype
        shape = (capacity + 1, self.n_hooks, d_model)
        check_fits_in_memory(  # a clear error, not an attempted allocation of what cannot fit
            tensor_bytes(shape, dtype),
            self.device,
            f"An ActivationRingBuffer of capacity {capacity:,} x {self.n_hooks} hook(s) x "
            f"d_model {d_model} ({dtype})",
            "lower the capacity (--n-activations on the command line) or store bfloat16 (--dtype)",
        )
        # One spare row at index `capacity` receives every rejected row of a scatter.
        self._storage = torch.zeros(
            capacity + 1, self.n_hooks, d_model, dtype=dtype, device=self.device
        )
        self._write_ptr = torch.zeros((), dtype=torch.long, device=self.device)
        self._n_written = torch.zeros((), dtype=torch.long, device=self.device)
        self._n_dropped_nonfinite = torch.zeros((), dtype=torch.long, device=self.device)
        self._n_masked = torch.zeros((), dtype=torch.long, device=self.device)
        self.moments = RunningMoments((self.n_hooks, d_model), device=self.device)
        self._known_nonempty = False

    @property
    def n_hooks(self) -> int:
        return len(self.hook_names)

    @property
    def data(self) -> Float[Tensor, "capacity n_hooks d_model"]:
        """The storage, in slot order (not time order); only ``num_filled`` leading... slots
        hold data until the buffer has wrapped once."""
        return self._storage[: self.capacity]

    def hook_index(self, hook: str | int) -> int:
        if isinstance(hook, int):
            if not 0 <= hook < self.n_hooks:
                raise ValueError(f"hook index {hook} out of range for {self.n_hooks} hooks.")
            return hook
        if hook not in self.hook_names:
            raise ValueError(
                f"hook {hook!r} is not in this buffer; it holds {list(self.hook_names)}."
            )
        return self.hook_names.index(hook)

    def _check_rows(self, rows: Tensor) -> Tensor:
        if not isinstance(rows, Tensor):
            raise TypeError(f"push expects a torch.Tensor, got {type(rows).__name__}.")
        if not rows.is_floating_point():
            raise TypeError(f"push expects floating-point activations, got dtype {rows.dtype}.")
        if rows.device != self.device:
            raise ValueError(
                f"activations are on {rows.device} but the buffer lives on {self.device}; "
                f"create the buffer with device={str(rows.device)!r} (same device as the model)."
            )
        if rows.ndim == 2 and self.n_hooks == 1:
            rows = rows.unsqueeze(1)
        if rows.ndim != 3 or rows.shape[1:] != (self.n_hooks, self.d_model):
            raise ValueError(
                f"push expects [n, {self.n_hooks}, {self.d_model}] (n_hooks, d_model) activations"
                + (f" or [n, {self.d_model}]" if self.n_hooks == 1 else "")
                + f", got shape {tuple(rows.shape)}. Is this the buffer for this hook and model?"
            )
        return rows

    def push(self, rows: Tensor, mask: Tensor | None = None) -> None:
        """Append the rows where ``mask`` is True, dropping (and counting) non-finite rows.

        ``rows`` is ``[n, n_hooks, d_model]`` (or ``[n, d_model]`` for one hook) and ``mask`` a
        ``[n]`` bool tensor; both are validated here with errors that say what to fix, so they are
        deliberately not jaxtyping-annotated.

        Never synchronises with the device. Batches larger than ``capacity`` are split by shape.
        """
        rows = self._check_rows(rows)
        if mask is not None and (mask.shape != rows.shape[:1] or mask.dtype != torch.bool):
            raise ValueError(
                f"mask must be a bool tensor of shape [{rows.shape[0]}], "
                f"got {mask.dtype} {tuple(mask.shape)}."
            )
        for start in range(0, rows.shape[0], self.capacity):
            chunk = rows[start : start + self.capacity]
            chunk_mask = None if mask is None else mask[start : start + self.capacity]
            self._push_chunk(chunk, chunk_mask)

    def _push_chunk(self, rows: Tensor, mask: Tensor | None) -> None:
        finite = torch.isfinite(rows).flatten(1).all(dim=1)
        requested = torch.ones_like(finite) if mask is None else mask
        keep = requested & finite
        self._n_dropped_nonfinite += (requested & ~finite).sum()
        self._n_masked += (~requested).sum()
        self.moments.update(rows, keep)
        offsets = torch.cumsum(keep.to(torch.long), 0) - 1
        slots = torch.remainder(self._write_ptr + offsets, self.capacity)
        slots = torch.where(keep, slots, torch.full_like(slots, self.capacity))
        self._storage.index_copy_(0, slots, rows.to(self.dtype))
        n_kept = keep.sum()
        self._write_ptr = torch.remainder(self._write_ptr + n_kept, self.capacity)
        self._n_written += n_kept

    @property
    def num_pushed(self) -> int:
        """Rows accepted so far (synchronises)."""
        return int(self._n_written)

    @property
    def num_filled(self) -> int:
        """Slots holding data (synchronises)."""
        return min(self.num_pushed, self.capacity)

    @property
    def num_dropped_nonfinite(self) -> int:
        return int(self._n_dropped_nonfinite)

    @property
    def num_masked(self) -> int:
        """Rows the caller's mask rejected (excluded positions, padding, outliers)."""
        return int(self._n_masked)

    def __len__(self) -> int:
        return self.num_filled

    def sample(
        self,
        batch_size: int,
        generator: torch.Generator | None = None,
        hook: str | int | None = None,
    ) -> Float[Tensor, "batch n_hooks d_model"] | Float[Tensor, "batch d_model"]:
        """Draw ``batch_size`` rows uniformly (with replacement) from the filled slots.

        With ``hook`` given, returns that hook's ``[batch, d_model]`` slice.
        """
        check_int("batch_size", batch_size, minimum=1)
        if not self._known_nonempty:
            if self.num_pushed == 0:
                raise ValueError(
                    "The buffer is empty: fill it first (tl_diffusion_prior.fill_buffer)."
                )
            self._known_nonempty = True
        filled = torch.clamp(self._n_written, max=self.capacity)
        u = torch.rand(batch_size, generator=generator, device=self.device, dtype=torch.float64)
        index = torch.clamp((u * filled).to(torch.long), max=self.capacity - 1)
        rows = self._storage.index_select(0, index)
        if hook is not None:
            rows = rows[:, self.hook_index(hook)]
        return rows

    def filled_rows(self, hook: str | int | None = None) -> Tensor:
        """All filled rows in slot order (synchronises once)."""
        rows = self._storage[: self.num_filled]
        return rows if hook is None else rows[:, self.hook_index(hook)]

    def mean(self, hook: str | int | None = None) -> Float[Tensor, "..."]:
        """Per-dimension mean of every accepted row ever pushed (float64)."""
        mean = self.moments.mean
        return mean if hook is None else mean[self.hook_index(hook)]

    def var(self, hook: str | int | None = None) -> Float[Tensor, "..."]:
        """Per-dimension population variance of every accepted row ever pushed (float64)."""
        var = self.moments.var()
        return var if hook is None else var[self.hook_index(hook)]

    def state_dict(self) -> dict[str, Tensor]:
        state = {
            "storage": self._storage[: self.capacity],
            "write_ptr": self._write_ptr,
            "n_written": self._n_written,
            "n_dropped_nonfinite": self._n_dropped_nonfinite,
            "n_masked": self._n_masked,
        }
        state.update(self.moments.state_dict(prefix="moments."))
        return state

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        storage = state["storage"]
        expected = (self.capacity, self.n_hooks, self.d_model)
        if tuple(storage.shape) != expected:
            raise ValueError(
                f"Saved buffer has shape {tuple(storage.shape)}, this buffer is {expected}."
            )
        self._storage[: self.capacity].copy_(storage.to(self.device, self.dtype))
        for name in ("write_ptr", "n_written", "n_dropped_nonfinite", "n_masked"):
            setattr(self, f"_{name}", state[name].to(self.device, torch.long).clone())
        self.moments.load_state_dict(state, prefix="moments.")
        self._known_nonempty = False

    def save(self, path: str | os.PathLike) -> None:
        """Write contents, pointer and statistics to one safetensors file, atomically."""
        metadata = {
            "format_version": str(FORMAT_VERSION),
            "hook_names": json.dumps(list(self.hook_names)),
            "dtype": str(self.dtype).removeprefix("torch."),
        }
        atomic_save_safetensors(path, self.state_dict(), metadata=metadata)

    @classmethod
    def load(
        cls, path: str | os.PathLike, device: torch.device | str | None = None
    ) -> ActivationRingBuffer:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        if int(metadata.get("format_version", -1)) > FORMAT_VERSION:
            raise ValueError(
                f"{path} was written by a newer tl-diffusion-prior (format "
                f"{metadata['format_version']}); upgrade the package to load it."
            )
        state = load_safetensors(path)
        capacity, n_hooks, d_model = state["storage"].shape
        buffer = cls(
            capacity=capacity,
            d_model=d_model,
            hook_names=json.loads(metadata["hook_names"]),
            device=device,
            dtype=getattr(torch, metadata.get("dtype", "float32")),
        )
        buffer.load_state_dict(state)
        return buffer

    def __repr__(self) -> str:
        return (
            f"ActivationRingBuffer(capacity={self.capacity}, hooks={list(self.hook_names)}, "
            f"d_model={self.d_model}, dtype={self.dtype}, device={self.device})"
        )
