"""``tl-diffusion-prior eval``: evaluate saved priors against baselines and write a report.

    tl-diffusion-prior eval --prior runs/mlp --prior runs/unet --out reports/eval [--quick]

Loads the model the priors name (``offline_model.load_model``), captures training activations from
the corpus's train split to fit the baselines (or reuses ``--buffer`` / ``--baselines``), measures
everything on the corpus's held-out split and on pydoc topics, and writes ``report.json``,
``report.md``, ``plots/`` and the baselines (``baselines/``) under ``--out``.

SAE baselines: the full settings train SAELens TopK SAEs with SAELens's own trainer until their
held-out loss plateaus (``sae_lens`` and ``sae_convergence`` in ``--settings``); they are saved
under ``--out``'s ``baselines/`` with their convergence figures, and ``--baselines`` reuses them.
``--sae`` adds any SAELens SAE as a further baseline: a folder SAELens saved (``save_model``), or
``RELEASE:SAE_ID`` of a SAELens pretrained release (needs the hub); it is checked against the
priors' hook and width before the model loads, and applied to raw activations.

``--out`` is checked before anything loads: a file, the current directory, or an existing non-empty
folder that is not a report folder is refused; a previous report there is replaced only with
``--overwrite``. It is then set aside under a hidden name until the new report is complete (and put
back if the run fails).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tl_diffusion_prior import priors as prior_package
from tl_diffusion_prior.capture import ActivationRingBuffer, fill_buffer
from tl_diffusion_prior.cli.common import (
    add_model_kind_argument,
    add_overwrite_argument,
    is_report_dir,
)
from tl_diffusion_prior.constants import BASELINES_DIRNAME, CONFIG_NAME, REPORT_MD_NAME
from tl_diffusion_prior.core.paths import check_output_dir, set_aside
from tl_diffusion_prior.data import models
from tl_diffusion_prior.data.sources import corpus_token_source
from tl_diffusion_prior.evaluate.baselines import load_baseline
from tl_diffusion_prior.evaluate.baselines.sae_lens_baseline import (
    SAELensBaseline,
    check_sae_fits,
    load_sae_lens_sae,
)
from tl_diffusion_prior.evaluate.plan import (
    Baselines,
    check_baselines,
    check_priors_match,
    check_train_source,
    fit_baselines,
)
from tl_diffusion_prior.evaluate.report import run_evaluation, write_report
from tl_diffusion_prior.evaluate.settings import EvalSettings
from tl_diffusion_prior.priors.base import DiffusionPrior


def add_eval_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``eval`` options to ``parser`` (a subcommand parser of the main CLI)."""
    parser.add_argument(
        "--prior",
        action="append",
        required=True,
        metavar="DIR",
        help="a prior saved with save_pretrained, 'default' for the shipped prior, or a Hugging "
        "Face Hub name org/name[@revision]; repeat for several",
    )
    parser.add_argument("--out", required=True, metavar="REPORT_DIR", help="report directory")
    add_overwrite_argument(parser, "a report")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small held-out sets and short sweeps (minutes on a CPU)",
    )
    parser.add_argument("--device", default=None, help="torch device for model and priors")
    add_model_kind_argument(parser)
    parser.add_argument(
        "--buffer",
        default=None,
        metavar="PATH",
        help="a saved ActivationRingBuffer to fit the baselines on",
    )
    parser.add_argument(
        "--baselines",
        default=None,
        metavar="DIR",
        help="reuse baselines saved by an earlier run (its baselines/ folder)",
    )
    parser.add_argument(
        "--sae",
        action="append",
        default=[],
        metavar="DIR|RELEASE:SAE_ID",
        help="an SAELens SAE as a further baseline: a folder written by SAELens's save_model, or "
        "a pretrained release and SAE id (needs the hub); repeat for several",
    )
    parser.add_argument(
        "--train-rows",
        type=int,
        default=None,
        help="training activations to capture for the baselines",
    )
    parser.add_argument(
        "--settings",
        default=None,
        metavar="JSON",
        help="EvalSettings overrides as a JSON object or a path to one",
    )
    parser.add_argument("--seed", type=int, default=None)
    return parser


def _settings(args: argparse.Namespace) -> EvalSettings:
    overrides = {}
    if args.settings:
        path = Path(args.settings)
        overrides = json.loads(path.read_text() if path.is_file() else args.settings)
        if not isinstance(overrides, dict):
            raise ValueError(f"--settings must be a JSON object, got {type(overrides).__name__}.")
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.train_rows is not None:
        overrides["max_train_rows"] = args.train_rows
    return EvalSettings.quick(**overrides) if args.quick else EvalSettings.from_dict(overrides)


def _load_priors(paths: list[Path], device: str | None) -> list[DiffusionPrior]:
    """The priors, which must all be of one model."""
    # Through the package, where tests replace the loader.
    priors = [prior_package.load_prior(path, device=device) for path in paths]
    model_name = priors[0].config.model_name
    for prior, path in zip(priors, paths, strict=True):
        if prior.config.model_name != model_name:
            raise ValueError(
                f"{path} was trained on {prior.config.model_name!r}, the first prior on "
                f"{model_name!r}; evaluate priors of one model together."
            )
    return priors


def _load_baselines(folder: Path) -> Baselines:
    """The baselines saved in ``folder`` (by an earlier ``eval``): one Gaussian and the SAEs."""
    loaded = [load_baseline(p) for p in sorted(folder.iterdir()) if p.is_dir()]
    gaussians = [b for b in loaded if b.config.kind == "gaussian"]
    if len(gaussians) != 1:
        raise ValueError(
            f"{folder} must hold exactly one gaussian baseline, found {len(gaussians)}."
        )
    saes = [b for b in loaded if b.config.kind in ("topk_sae", "sae_lens")]
    return Baselines(gaussians[0], saes)


def _external_saes(specs: list[str], prior: DiffusionPrior, device: str | None) -> list:
    """``--sae``: each an SAELens SAE (ours, saved with its normaliser, or anyone's, applied to raw
    activations), checked against the priors' hook and ``d_model`` before any work starts."""
    hook_name, d_model = prior.config.hook_name, prior.config.d_model
    out = []
    for spec in specs:
        if Path(spec, CONFIG_NAME).is_file():  # one we saved: it knows its space and hook
            baseline = load_baseline(spec, device=device)
            if not isinstance(baseline, SAELensBaseline):
                raise ValueError(
                    f"--sae {spec} holds a {baseline.config.kind} baseline, not an SAE."
                )
            check_sae_fits(baseline.sae, hook_name, d_model, spec)
            out.append(baseline)
            continue
        sae, source = load_sae_lens_sae(spec, device=device)
        check_sae_fits(sae, hook_name, d_model, source)
        model_name = prior.config.model_name
        out.append(
            SAELensBaseline.from_sae(
                sae, space="raw", hook_name=hook_name, model_name=model_name, source=source
            )
        )
    return out


def _training_rows(args, model, settings: EvalSettings, priors, fingerprint: str):
    """``--buffer``, checked against the priors' hook and model, or a fresh capture of the same
    packed batches of the corpus's train split the trainer captures from."""
    hook_name = priors[0].config.hook_name
    if args.buffer:
        train = ActivationRingBuffer.load(args.buffer, device=args.device)
        check_train_source(train, hook_name, fingerprint)
        return train
    source = corpus_token_source(
        model.tokenizer,
        "train",
        batch_size=16,
        ctx=settings.resolved_seq_len(priors),
        shuffle_seed=settings.seed,
    )
    return fill_buffer(model, source, hook_name, settings.max_train_rows)


def run_eval(args: argparse.Namespace) -> int:
    """Run the evaluation the parsed ``args`` describe; returns the exit code."""
    # Before anything loads: a bad --out must not cost a whole evaluation.
    out = check_output_dir(
        args.out,
        overwrite=args.overwrite,
        what="--out (the report folder)",
        is_ours=is_report_dir,
    )
    settings = _settings(args)
    # "default" is the shipped prior's folder (where its loss curve is, too).
    prior_dirs = [prior_package.resolve_prior_dir(path) for path in args.prior]
    priors = _load_priors(prior_dirs, args.device)
    hook_name, model_name = priors[0].config.hook_name, priors[0].config.model_name
    # Read before the model loads and rows are captured, checked once the model is known.
    loaded_baselines = _load_baselines(Path(args.baselines)) if args.baselines else None
    external_saes = _external_saes(args.sae, priors[0], args.device)
    model = models.load_model(model_name, device=args.device, kind=args.model_kind)
    fingerprint = check_priors_match(model, priors)
    train = _training_rows(args, model, settings, priors, fingerprint)
    if loaded_baselines is not None:
        baselines = loaded_baselines
        check_baselines(baselines, hook_name, model_name, fingerprint)
    else:
        baselines = fit_baselines(
            train,
            settings,
            norm_eps=priors[0].config.norm_eps,
            hook_name=hook_name,
            model_name=model_name,
            progress=True,
        )
    if external_saes:
        check_baselines(
            Baselines(baselines.gaussian, external_saes), hook_name, model_name, fingerprint
        )
        baselines.saes += external_saes
    # Set aside only now: --buffer and --baselines may lie in the previous report folder.
    with set_aside(out):
        # Saved (also when loaded: the previous folder may have held them) so that later runs can
        # skip the SAE training (--baselines).
        baselines.save(out / BASELINES_DIRNAME)
        report = run_evaluation(
            model,
            priors,
            train,
            settings,
            prior_dirs=prior_dirs,
            baselines=baselines,
            hook_name=hook_name,
            model_name=model_name,
        )
        written = write_report(report, out)
    print((out / REPORT_MD_NAME).read_text().split("## Held-out data")[0])
    print(f"report written to {written['json'].parent}")
    return 0
