"""bf16 against float32 where the package computes outside training: capture and denoising.

On a CPU with hardware bf16 (AVX512-BF16 or AMX) a large bf16 matmul runs ~3x faster than
float32, and training already uses it by default (``TrainConfig.autocast="auto"``). This measures
the two other hot paths, each in the same run, on the default model:

* capture: activations/s of the forward pass up to the hook with the model in float32 and in
  bfloat16, and how far the bf16 activations are from the float32 ones (relative error);
* denoising (what steering does at every steered position): rows/s of ``prior.denoise`` with the
  shipped prior in float32 and in bfloat16, and the relative difference of the results.

Not a test: nothing asserts a speed.

    .venv/bin/python benchmarks/bf16.py
"""

from __future__ import annotations

import argparse
import copy
import platform
import time
from datetime import date

import torch

from tl_diffusion_prior.constants import DEFAULT_HOOK
from tl_diffusion_prior.core.precision import cpu_has_fast_bf16
from tl_diffusion_prior.data import load_default_model
from tl_diffusion_prior.priors import load_default_prior


def timed(fn, repeats: int) -> tuple[float, torch.Tensor]:
    """Median seconds of ``fn()`` over ``repeats`` calls (after one warm-up) and its last result."""
    out = fn()
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        timings.append(time.perf_counter() - start)
    return sorted(timings)[repeats // 2], out


def relative_error(got: torch.Tensor, ref: torch.Tensor) -> float:
    """Mean over rows of ``|got - ref| / |ref|``."""
    got, ref = got.float().flatten(0, -2), ref.float().flatten(0, -2)
    return float(((got - ref).norm(dim=-1) / ref.norm(dim=-1)).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=8, help="sequences per capture forward")
    parser.add_argument("--ctx", type=int, default=128)
    parser.add_argument("--rows", type=int, default=1024, help="rows per denoise call")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    model = load_default_model()
    tokens = torch.randint(100, 40_000, (args.batch, args.ctx), generator=torch.Generator())
    layer = int(DEFAULT_HOOK.split(".")[1])

    def capture(m):
        return lambda: m.run_with_cache(
            tokens, names_filter=DEFAULT_HOOK, stop_at_layer=layer + 1, return_type=None
        )[1][DEFAULT_HOOK][:, 1:]

    with torch.no_grad():
        fp32_s, fp32_acts = timed(capture(model), args.repeats)
        model_bf16 = copy.deepcopy(model).to(torch.bfloat16)
        bf16_s, bf16_acts = timed(capture(model_bf16), args.repeats)
    n_tokens = args.batch * args.ctx

    prior = load_default_prior(dtype=torch.float32)
    rows = fp32_acts.reshape(-1, fp32_acts.shape[-1])[: args.rows].float()
    noise = torch.randn(rows.shape, generator=torch.Generator().manual_seed(0))
    results = {}
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        p = copy.deepcopy(prior).to(dtype)
        results[name] = timed(
            lambda p=p: p.denoise(rows, t_start=0.5, num_steps=20, noise=noise), args.repeats
        )

    print(
        f"{date.today()} | {platform.machine()} | torch {torch.__version__} | threads "
        f"{torch.get_num_threads()} | hardware bf16: {cpu_has_fast_bf16()}"
    )
    print("| path | float32 | bfloat16 | speed-up | relative difference |")
    print("|---|---:|---:|---:|---:|")
    print(
        f"| capture forward to layer {layer} ({args.batch} x {args.ctx} tokens) | "
        f"{n_tokens / fp32_s:,.0f} act/s | {n_tokens / bf16_s:,.0f} act/s | "
        f"{fp32_s / bf16_s:.2f}x | {relative_error(bf16_acts, fp32_acts):.4f} |"
    )
    (f32_s, f32_out), (b16_s, b16_out) = results["float32"], results["bfloat16"]
    print(
        f"| denoise, shipped prior, t 0.5, 20 steps ({len(rows)} rows) | "
        f"{len(rows) / f32_s:,.0f} rows/s | {len(rows) / b16_s:,.0f} rows/s | "
        f"{f32_s / b16_s:.2f}x | {relative_error(b16_out, f32_out):.4f} |"
    )


if __name__ == "__main__":
    main()
