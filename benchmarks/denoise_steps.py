"""How many Euler steps does denoising need? Accuracy and cost of ``prior.denoise`` per step count.

Steering denoises every steered position at every decode step, so the prior's step count (and the
dtype of its weights) sets what the prior adds to generation time. This measures, on held-out
activations of the default model at the shipped prior's hook, for each ``t_start`` and each step
count and dtype, with one fixed noise draw:

* ``error``: ``|D_k(x) - D_ref(x)| / |D_ref(x) - x|``, the distance to a ``--reference-steps``
  float32 solution of the same ODE from the same noisy point, as a fraction of the change the
  prior makes to the activation (mean over rows);
* ``seed spread``: the same ratio for two float32 ``D_ref`` runs that differ only in their noise:
  how much the result moves anyway, because the noise is random. A step count whose error is far
  below the seed spread changes nothing a user could tell apart from another seed;
* ``ms/row``: wall-clock of one ``denoise`` call over all rows, divided by the rows.

Not a test: nothing here asserts a speed.

    .venv/bin/python benchmarks/denoise_steps.py [--rows 2048] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import platform
import time
from datetime import date

import torch

from tl_diffusion_prior.data import load_default_model
from tl_diffusion_prior.priors import load_default_prior
from tl_diffusion_prior.recipes import capture_corpus


def relative_change(result: torch.Tensor, reference: torch.Tensor, x: torch.Tensor) -> float:
    """Mean over rows of ``|result - reference| / |reference - x|``."""
    return float(((result - reference).norm(dim=-1) / (reference - x).norm(dim=-1)).mean())


def timed_denoise(prior, x, t_start, steps, noise) -> tuple[torch.Tensor, float]:
    prior.denoise(x[:64], t_start, steps, noise=noise[:64])  # warm-up
    start = time.perf_counter()
    out = prior.denoise(x, t_start, steps, noise=noise)
    return out.float(), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2048, help="held-out activations")
    parser.add_argument("--t-starts", type=float, nargs="+", default=[0.3, 0.5])
    parser.add_argument("--steps", type=int, nargs="+", default=[2, 4, 5, 10, 20])
    parser.add_argument("--reference-steps", type=int, default=200)
    parser.add_argument("--threads", type=int, help="torch threads")
    parser.add_argument("--out", help="also write the table to this markdown file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model = load_default_model()
    priors = {
        "float32": load_default_prior(dtype=torch.float32),
        "bfloat16": load_default_prior(dtype=torch.bfloat16),
    }
    hook = priors["float32"].config.hook_name
    buffer, _, _ = capture_corpus(model, "heldout", args.rows, ctx=64, hook=hook, progress=False)
    x = buffer.filled_rows(hook).float()
    del model
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    other_noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))

    lines = [
        f"# Denoising steps ({date.today()}, {platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads)",
        "",
        f"Shipped prior at `{hook}`, {args.rows} held-out rows, one noise draw; reference: "
        f"{args.reference_steps} float32 Euler steps. Command: `.venv/bin/python "
        "benchmarks/denoise_steps.py` (see its docstring for the columns).",
        "",
        "| t_start | steps | dtype | error vs reference | seed spread | ms/row |",
        "|---:|---:|---|---:|---:|---:|",
    ]
    with torch.inference_mode():
        for t_start in args.t_starts:
            reference, _ = timed_denoise(priors["float32"], x, t_start, args.reference_steps, noise)
            other, _ = timed_denoise(
                priors["float32"], x, t_start, args.reference_steps, other_noise
            )
            spread = relative_change(other, reference, x)
            for steps in args.steps:
                for name, prior in priors.items():
                    out, seconds = timed_denoise(prior, x, t_start, steps, noise)
                    lines.append(
                        f"| {t_start:g} | {steps} | {name} | "
                        f"{relative_change(out, reference, x):.4f} | {spread:.3f} | "
                        f"{1000 * seconds / args.rows:.3f} |"
                    )
                    print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text)


if __name__ == "__main__":
    main()
