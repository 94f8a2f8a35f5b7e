"""Train SAELens SAE baselines to convergence on a saved buffer and save them for ``eval --sae``.

Each SAE is trained by SAELens's own trainer
(:func:`~tl_diffusion_prior.evaluate.baselines.sae_lens_training.train_sae_lens_sae`) until its
held-out NMSE stops improving (or the sample cap), then saved under ``--out/<label>``; a JSON of
every convergence record is written next to them. The README's SAE figures come from::

    .venv/bin/tl-diffusion-prior capture --n-activations 120000 --out buffer.safetensors
    .venv/bin/python benchmarks/sae_convergence.py --buffer buffer.safetensors --out saes \\
        --run topk:32:1500000 --run topk:128:1000000 --run standard:5.0:524288

A run is ``topk:<k>:<max samples>`` or ``standard:<l1 coefficient>:<max samples>``. The saved
folders are then given to ``tl-diffusion-prior eval --sae saes/<label>`` (with ``--buffer`` the
same buffer, so the Gaussian baseline shares the SAEs' normalisation).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tl_diffusion_prior.capture.buffer import ActivationRingBuffer
from tl_diffusion_prior.core.serialization import atomic_write_json
from tl_diffusion_prior.evaluate.baselines import fit_normalizer
from tl_diffusion_prior.evaluate.baselines.sae_lens_training import (
    SAELensTrainConfig,
    train_sae_lens_sae,
)


def parse_run(spec: str, convergence: dict) -> SAELensTrainConfig:
    """``topk:<k>:<max samples>`` or ``standard:<l1>:<max samples>`` as a train config."""
    try:
        architecture, knob, max_samples = spec.split(":")
        caps = {**convergence, "max_samples": int(max_samples)}
        if architecture == "topk":
            return SAELensTrainConfig(architecture="topk", k=int(knob), convergence=caps)
        if architecture == "standard":
            return SAELensTrainConfig(
                architecture="standard", l1_coefficient=float(knob), convergence=caps
            )
    except ValueError as error:
        raise SystemExit(f"--run {spec!r}: {error}") from error
    raise SystemExit(f"--run {spec!r}: expected topk:<k>:<max samples> or standard:<l1>:<max>.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--buffer", required=True, help="a buffer saved by the capture command")
    parser.add_argument("--out", required=True, help="folder for the SAEs and results.json")
    parser.add_argument("--run", action="append", required=True, help="see the module docstring")
    parser.add_argument("--eval-every", type=int, default=131_072, help="samples per evaluation")
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--min-rel-improvement", type=float, default=0.01)
    parser.add_argument("--heldout-rows", type=int, default=8192)
    args = parser.parse_args()
    convergence = dict(
        eval_every_samples=args.eval_every,
        patience=args.patience,
        min_rel_improvement=args.min_rel_improvement,
        heldout_rows=args.heldout_rows,
    )
    configs = [parse_run(spec, convergence) for spec in args.run]  # all checked before work
    buffer = ActivationRingBuffer.load(args.buffer)
    normalizer = fit_normalizer(buffer)
    hook_name = buffer.hook_names[0]
    out = Path(args.out)
    results = []
    for config in configs:
        started = time.perf_counter()
        sae = train_sae_lens_sae(
            buffer,
            normalizer,
            config,
            hook_name=hook_name,
            model_name=buffer.provenance.get("model_name", ""),
            progress=True,
        )
        sae.record_training({**sae.training_record, **buffer.provenance})
        sae.save_pretrained(out / config.label())
        record = sae.training_record["convergence"]
        results.append(
            {"label": config.label(), "wall_s": round(time.perf_counter() - started, 1), **record}
        )
        print(json.dumps({k: v for k, v in results[-1].items() if k != "history"}), flush=True)
        atomic_write_json(out / "results.json", results)


if __name__ == "__main__":
    main()
