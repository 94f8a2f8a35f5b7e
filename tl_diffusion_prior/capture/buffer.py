"""A preallocated ring buffer of activations on the model's device.

Capture writes every forward pass straight into one tensor allocated once, ``[capacity, n_hooks,
d_model]``. The write pointer and every counter are device tensors and rows are selected with masks
and a scatter, never with boolean indexing or ``.item()``, so ``push`` never waits for the device.
Rows that are masked out (or non-finite) are scattered into one spare "trash" row past the end.

A saved buffer is one safetensors file whose header metadata also records the sha256 of each
tensor's bytes and where the rows came from (``provenance``: the model's name and weight
fingerprint, :func:`~tl_diffusion_prior.core.fingerprint.model_fingerprint`). Loading (``load``,
and ``load_state_dict`` from a checkpoint) refuses a file whose bytes changed, rows holding NaN/inf
and counters no buffer of this capacity can reach, each with an error naming the file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from tl_diffusion_prior.constants import (
    BUFFER_SHA256_KEY,
    FORMAT_VERSION,
    MODEL_FINGERPRINT_KEY,
    MODEL_NAME_KEY,
)
from tl_diffusion_prior.core.integrity import (
    CorruptFileError,
    tensor_sha256,
    verify_tensor_sha256,
)
from tl_diffusion_prior.core.moments import RunningMoments
from tl_diffusion_prior.core.resources import check_fits_in_memory, tensor_bytes
from tl_diffusion_prior.core.serialization import (
    atomic_save_safetensors,
    load_safetensors,
    read_safetensors_metadata,
)
from tl_diffusion_prior.core.validation import check_int

STORAGE_DTYPES = (torch.float32, torch.bfloat16)
# What ``provenance`` may record, saved as metadata of the same names.
PROVENANCE_KEYS = (MODEL_NAME_KEY, MODEL_FINGERPRINT_KEY)
_COUNTERS = ("write_ptr", "n_written", "n_dropped_nonfinite", "n_masked")
#: One hook (name or slot index) or several, e.g. a multi-layer prior's hooks.
Hooks = str | int | Sequence[str | int]


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
        # Where the rows came from (PROVENANCE_KEYS -> str), set by capture and saved with them.
        self.provenance: dict[str, str] = {}

    @property
    def n_hooks(self) -> int:
        return len(self.hook_names)

    @property
    def data(self) -> Float[Tensor, "capacity n_hooks d_model"]:
        """The storage, in slot order (not time order); only ``num_filled`` leading... slots
        hold data until the buffer has wrapped once."""
        return self._storage[: self.capacity]

    def hook_index(self, hook: Hooks) -> int | list[int]:
        """The slot of ``hook`` (a name or an index); a sequence gives a list (several hooks)."""
        if isinstance(hook, list | tuple):
            return [self.hook_index(h) for h in hook]
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
        hook: Hooks | None = None,
    ) -> Float[Tensor, "batch n_hooks d_model"] | Float[Tensor, "batch d_model"]:
        """Draw ``batch_size`` rows uniformly (with replacement) from the filled slots.

        With ``hook`` given, returns that hook's ``[batch, d_model]`` slice (a sequence of hooks:
        ``[batch, len(hook), d_model]``, for a multi-layer prior).
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

    def filled_rows(self, hook: Hooks | None = None) -> Tensor:
        """All filled rows in slot order (synchronises once)."""
        rows = self._storage[: self.num_filled]
        return rows if hook is None else rows[:, self.hook_index(hook)]

    def mean(self, hook: Hooks | None = None) -> Float[Tensor, "..."]:
        """Per-dimension mean of every accepted row ever pushed (float64)."""
        mean = self.moments.mean
        return mean if hook is None else mean[self.hook_index(hook)]

    def var(self, hook: Hooks | None = None) -> Float[Tensor, "..."]:
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

    def load_state_dict(self, state: dict[str, Tensor], source: str = "The saved buffer") -> None:
        """Restore what :meth:`state_dict` returned, after checking it (see :meth:`check_state`).

        ``source`` names where ``state`` came from in the errors (a file, a checkpoint).
        """
        self.check_state(state, source)
        self._storage[: self.capacity].copy_(state["storage"].to(self.device, self.dtype))
        for name in _COUNTERS:
            setattr(self, f"_{name}", state[name].to(self.device, torch.long).clone())
        self.moments.load_state_dict(state, prefix="moments.")
        self._known_nonempty = False

    def check_state(self, state: dict[str, Tensor], source: str = "The saved buffer") -> None:
        """Refuse a state this buffer could not have written (synchronises once per check).

        Raises:
            ValueError: missing tensors or another shape (capacity, hooks, width).
            CorruptFileError: NaN/inf rows or statistics, or impossible counters (negative, a
                write pointer that does not follow from the number of rows written, moments
                over another number of rows).
        """
        missing = sorted({"storage", *_COUNTERS, *self.moments.state_dict("moments.")} - set(state))
        if missing:
            raise ValueError(f"{source} lacks {missing}; it was not written by a buffer's save.")
        storage = state["storage"]
        expected = (self.capacity, self.n_hooks, self.d_model)
        if tuple(storage.shape) != expected:
            raise ValueError(
                f"{source} has shape {tuple(storage.shape)} (capacity, n_hooks, d_model), this "
                f"buffer is {expected}; load it into a buffer of that capacity and width."
            )
        counters = {}
        for name in _COUNTERS:
            value = state[name]
            if value.numel() != 1 or value.is_floating_point() or value.is_complex():
                raise CorruptFileError(
                    f"{source}: counter {name!r} must be one integer, got {value.dtype} "
                    f"{tuple(value.shape)}; the file is damaged."
                )
            counters[name] = int(value)
        self._check_counters(counters, float(state["moments.count"]), source)
        bad = ~torch.isfinite(storage).flatten(1).all(dim=1)
        if bool(bad.any()):
            raise CorruptFileError(
                f"{source} holds {int(bad.sum())} row(s) with NaN/inf (first: row "
                f"{int(bad.nonzero()[0])}); capture never stores such rows, so the file is "
                "damaged. Capture the buffer again."
            )
        mean, m2 = state["moments.mean"], state["moments.m2"]
        if not bool(torch.isfinite(mean).all() & torch.isfinite(m2).all() & (m2 >= 0).all()):
            raise CorruptFileError(
                f"{source}: the running statistics (moments.mean, moments.m2) hold NaN/inf or "
                "negative sums of squares; the file is damaged. Capture the buffer again."
            )

    def _check_counters(self, counters: dict[str, int], moment_count: float, source: str) -> None:
        negative = sorted(k for k, v in counters.items() if v < 0)
        written, pointer = counters["n_written"], counters["write_ptr"]
        problem = None
        if negative:
            problem = f"negative counters {negative}"
        elif pointer != written % self.capacity:
            problem = (
                f"write_ptr={pointer}, but {written} rows written into capacity {self.capacity} "
                f"put it at {written % self.capacity}"
            )
        elif moment_count != written:
            problem = f"statistics over {moment_count:g} rows, but n_written={written}"
        if problem is not None:
            raise CorruptFileError(
                f"{source} has impossible counters ({problem}); the file is damaged or was edited. "
                "Capture the buffer again."
            )

    def save(self, path: str | os.PathLike) -> None:
        """Write contents, pointer and statistics to one safetensors file, atomically."""
        metadata = {
            "format_version": str(FORMAT_VERSION),
            "hook_names": json.dumps(list(self.hook_names)),
            "dtype": str(self.dtype).removeprefix("torch."),
            **self.provenance,
        }
        state = self.state_dict()
        metadata[BUFFER_SHA256_KEY] = json.dumps(tensor_sha256(state))
        atomic_save_safetensors(path, state, metadata=metadata)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        device: torch.device | str | None = None,
        *,
        verify: bool = True,
    ) -> ActivationRingBuffer:
        """Read a buffer written by :meth:`save`, checked (see the module docstring).

        ``verify`` compares each tensor with the sha256 its file recorded (False skips hashing,
        for speed; files written before checksums existed are never hashed). Rows and counters
        are checked either way.

        Raises:
            CorruptFileError: (a ``ValueError``) changed bytes, NaN/inf rows, impossible counters.
        """
        metadata = read_safetensors_metadata(path)  # names the file if it is damaged
        if int(metadata.get("format_version", -1)) > FORMAT_VERSION:
            raise ValueError(
                f"{path} was written by a newer tl-diffusion-prior (format "
                f"{metadata['format_version']}); upgrade the package to load it."
            )
        state = load_safetensors(path)
        if verify and BUFFER_SHA256_KEY in metadata:
            verify_tensor_sha256(state, _json_object(metadata, BUFFER_SHA256_KEY, path), path)
        if "storage" not in state or state["storage"].ndim != 3:
            raise ValueError(f"{path} holds no [capacity, n_hooks, d_model] buffer storage.")
        capacity, n_hooks, d_model = state["storage"].shape
        buffer = cls(
            capacity=capacity,
            d_model=d_model,
            hook_names=json.loads(metadata["hook_names"]),
            device=device,
            dtype=getattr(torch, metadata.get("dtype", "float32")),
        )
        buffer.load_state_dict(state, source=str(path))
        buffer.provenance = {k: metadata[k] for k in PROVENANCE_KEYS if metadata.get(k)}
        return buffer

    def __repr__(self) -> str:
        return (
            f"ActivationRingBuffer(capacity={self.capacity}, hooks={list(self.hook_names)}, "
            f"d_model={self.d_model}, dtype={self.dtype}, device={self.device})"
        )


def _json_object(metadata: dict[str, str], key: str, path: str | os.PathLike) -> dict:
    try:
        value = json.loads(metadata[key])
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise CorruptFileError(
            f"{path}: the header's {key!r} entry is not a JSON object; the file is damaged."
        )
    return value
