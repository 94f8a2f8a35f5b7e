"""Where bfloat16 computes faster than float32, and the ``"auto"`` dtype that follows it.

On a CPU with AVX512-BF16 or AMX a large bf16 matmul runs ~3x faster than float32 (830 against
225-285 GFLOP/s for 2048 x 2048 on the 2-core development machine), and the prior's small
per-token matmuls during steering run ~2.6x faster because they read half the bytes
(``benchmarks/steer.py``); without those units bf16 is emulated and slower than float32. CUDA GPUs
compute bf16 natively from Ampere on. Training's ``autocast="auto"`` and the priors'
``dtype="auto"`` both follow :func:`has_fast_bf16`.
"""

from __future__ import annotations

import torch

#: The dtype name that means bfloat16 where :func:`has_fast_bf16`, else float32.
AUTO_DTYPE = "auto"


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (AVX512-BF16 or AMX)."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    # torch.cpu exposes these probes with a leading underscore; a torch without them gets fp32.
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def has_fast_bf16(device: str | torch.device | None) -> bool:
    """Whether ``device`` (None: the CPU) computes bf16 natively and faster than float32."""
    device = torch.device("cpu" if device is None else device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    return device.type == "cpu" and cpu_has_fast_bf16()


def resolve_auto_dtype(
    dtype: torch.dtype | str | None, device: str | torch.device | None
) -> torch.dtype | None:
    """``"auto"`` as bfloat16 where :func:`has_fast_bf16` on ``device``, else float32; any other
    value (a ``torch.dtype`` or None) unchanged."""
    if isinstance(dtype, str):
        if dtype != AUTO_DTYPE:
            raise ValueError(
                f"dtype must be a torch.dtype, None or {AUTO_DTYPE!r}, got {dtype!r}; pass "
                "torch.float32 or torch.bfloat16 to choose one."
            )
        return torch.bfloat16 if has_fast_bf16(device) else torch.float32
    return dtype
