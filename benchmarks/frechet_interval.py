"""Target (c) of issue 14 with its 95% interval, without the rest of the evaluation.

``eval`` computes the normalised Frechet distance of a prior's samples to the held-out activations
over the train-vs-held-out floor, and since 2026-12-01 a bootstrap interval of that ratio
(``EvalSettings.n_fd_bootstrap``). Running all of ``eval`` for that one figure takes half an hour
here, most of it in the delta-LM measurements; this script runs only the parts (c) reads, with the
same settings, data, seeds and functions: the held-out windows of the corpus's held-out split, the
Gaussian baseline's normaliser fitted on ``--buffer``, the training rows of the floor and the
prior's samples. With the same buffer and settings it reproduces ``eval``'s ratio to the last digit
(the SAE and PCA reconstructions' rows are left out; they do not enter the prior's figure).

    .venv/bin/tl-diffusion-prior capture --n-activations 120000 --out broad_buffer.safetensors
    .venv/bin/python benchmarks/frechet_interval.py --buffer broad_buffer.safetensors \\
        --settings '{"max_sequences": 24}' --out benchmarks/results/frechet_interval
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tl_diffusion_prior import priors as prior_package
from tl_diffusion_prior.capture import ActivationRingBuffer
from tl_diffusion_prior.data import models
from tl_diffusion_prior.evaluate.data import held_out_windows
from tl_diffusion_prior.evaluate.plan import (
    check_priors_match,
    check_train_source,
    fit_baselines,
    resolve_prior_names,
)
from tl_diffusion_prior.evaluate.report.measure import HeldOut, frechet_section
from tl_diffusion_prior.evaluate.settings import EvalSettings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prior", nargs="+", default=["default"], help="prior folders")
    parser.add_argument("--buffer", required=True, help="training rows, as for eval --buffer")
    parser.add_argument("--settings", default="{}", help="EvalSettings overrides (JSON)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    settings = EvalSettings.from_dict({"sae_lens": [], **json.loads(args.settings)})
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    dirs = [prior_package.resolve_prior_dir(path) for path in args.prior]
    priors = [prior_package.load_prior(path, device=args.device) for path in dirs]
    config = priors[0].config
    model = models.load_model(config.model_name, device=args.device)
    fingerprint = check_priors_match(model, priors)
    train = ActivationRingBuffer.load(args.buffer, device=args.device)
    check_train_source(train, config.hook_name, fingerprint)
    baselines = fit_baselines(
        train,
        settings,
        norm_eps=config.norm_eps,
        hook_name=config.hook_name,
        model_name=config.model_name,
    )
    in_domain = held_out_windows(model, settings, priors)[:1]
    held = HeldOut.measure(model, in_domain, config.hook_name, settings)
    frechet, _ = frechet_section(
        priors,
        resolve_prior_names(priors, None),
        baselines,
        train,
        held.rows,
        baselines.gaussian.normalizer,
        settings,
        held.cleans[0].row_windows,
    )
    frechet["seconds"] = time.perf_counter() - start
    frechet["settings"] = settings.to_dict()
    frechet["priors"] = [str(path) for path in dirs]
    (args.out / "frechet.json").write_text(json.dumps(frechet, indent=2) + "\n")
    for row in frechet["results"]:
        ci = row.get("normalized_ratio_ci")
        interval = f" [{ci['low']:.3f}, {ci['high']:.3f}]" if ci else ""
        print(f"{row['name']}: {row['normalized_ratio']:.3f}{interval} x floor (n={row['n']})")
    print(f"{frechet['seconds']:.0f} s; written to {args.out / 'frechet.json'}")


if __name__ == "__main__":
    main()
