"""What the demo, the tutorials, the benchmarks and the command line share: presets, the demo's
scales, and the stage functions that run the pipeline on the default model.

Each function drives the library (capture -> train -> evaluate -> steer) with the sizes a 2-core CPU
can afford; nothing here parses arguments or prints tables (that is :mod:`tl_diffusion_prior.cli`).
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tl_diffusion_prior.capture import (
    ActivationCapture,
    ActivationRingBuffer,
    CaptureConfig,
    fill_buffer,
    model_device,
)
from tl_diffusion_prior.constants import (
    DEFAULT_HOOK,
    PRIORS_DIRNAME,
    QUICK_ENV_VAR,
    REPORT_MD_NAME,
    RUNS_DIRNAME,
)
from tl_diffusion_prior.data import corpus_token_source
from tl_diffusion_prior.evaluate.concept_lexicons import CONCEPT_LEXICONS
from tl_diffusion_prior.evaluate.fluency import (
    concept_token_ids,
    mask_after_eos,
    score_continuations,
)
from tl_diffusion_prior.evaluate.report import run_evaluation, write_report
from tl_diffusion_prior.evaluate.settings import EvalSettings
from tl_diffusion_prior.evaluate.text_judge import judge_fluency, lexicon_hits
from tl_diffusion_prior.priors import MLPPrior, MLPPriorConfig, UNetPrior, UNetPriorConfig
from tl_diffusion_prior.priors.base import DiffusionPrior
from tl_diffusion_prior.steering import mean_activation_norm, reference_norm_from_prior, steer
from tl_diffusion_prior.steering.config import (
    DEFAULT_DENOISE_MODE,
    DEFAULT_NUM_STEPS,
    DEFAULT_T_START,
)
from tl_diffusion_prior.training import FIT_ROWS, TrainConfig, TrainResult, runtime, train_prior
from tl_diffusion_prior.training.gaussian_reference import gaussian_reference
from tl_diffusion_prior.training.validation import validation_loss

# Each preset fills in the options the command line leaves unset.
TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    # A smoke test: a minute on a CPU.
    "quick": dict(
        n_activations=20_000,
        val_activations=2048,
        steps=200,
        batch_size=256,
        eval_every=100,
        checkpoint_every=100,
        log_every=20,
    ),
    # The default CPU-scale run.
    "cpu": dict(
        n_activations=200_000,
        val_activations=8192,
        steps=2000,
        batch_size=1024,
        eval_every=500,
        checkpoint_every=500,
        log_every=50,
        refill_every=500,
    ),
    # The paper's optimiser settings (batch 4096, lr 5e-5) for a long GPU run.
    "paper": dict(
        n_activations=1_000_000,
        val_activations=32768,
        steps=100_000,
        batch_size=4096,
        lr=5e-5,
        eval_every=5000,
        checkpoint_every=5000,
        log_every=100,
        refill_every=1000,
    ),
}
# Per-design changes to a preset. On a 2-core CPU each "cpu" run trains for about 10 minutes: the
# UNet processes ~280 rows/s against the MLP's ~2,000, so it takes fewer, smaller steps, at the
# learning rate its Gaussian skip learns at (1e-3; 4e-3 did not learn at all).
PRIOR_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "mlp": {"cpu": dict(steps=1200, lr=1e-3, eval_every=300, checkpoint_every=300)},
    "unet": {
        "cpu": dict(
            steps=600,
            batch_size=256,
            lr=1e-3,
            eval_every=150,
            checkpoint_every=150,
            refill_every=150,
            log_every=25,
        ),
    },
}


@dataclass
class DemoScale:
    """How much data and compute each stage gets.

    Attributes:
        n_train: activations captured from the corpus's training split.
        n_val: held-out activations (validation loss and evaluation).
        ctx: tokens per captured sequence.
        train_samples: training rows per prior design (``"mlp"``, ``"unet"``); the steps are
            ``train_samples // batch_size``, so a run does the same training on a busy machine as
            on an idle one.
        batch_size: training batch size.
        eval_sequences: held-out sequences per evaluation set.
        max_new_tokens: tokens generated in the steering example.
        eval_settings: ``EvalSettings`` fields over its ``quick`` preset (see
            :func:`demo_eval_settings`).
    """

    n_train: int
    n_val: int
    ctx: int
    train_samples: dict[str, int]
    batch_size: int
    eval_sequences: int
    max_new_tokens: int
    eval_settings: dict = field(default_factory=dict)


# Sizes for ~15 minutes on an idle 2-core CPU at "default" (the UNet's 20-step denoising dominates
# the evaluation); "long" trains SAEs and priors properly and sweeps more. The training samples are
# what a time budget gave on an idle 2-core CPU (2,080 MLP and 274 UNet samples/s): "default" is
# the 564 and 87 steps of 512 that the README's 130-s demo run of 2026-11-22 trained, "long" about
# 900 s each, "quick" the 10-step minimum.
# Steering-curve scales are relative (r x the mean activation norm along the unit direction): on
# SmolLM2 layer 15, r <= 0.1 leaves greedy text unchanged, 0.25 shows the concept, 0.5 breaks some
# prompts and 1.0 all (benchmarks/results/steer_scales.md), so the curves span 0.25-0.75 (long:
# 0.1-1.0).
SCALES = {
    "quick": DemoScale(
        n_train=4_000,
        n_val=1_000,
        ctx=64,
        train_samples={"mlp": 1_280, "unet": 1_280},
        batch_size=128,
        eval_sequences=4,
        max_new_tokens=8,
        eval_settings=dict(
            sae_train={"steps": 50, "batch_size": 512},
            n_fd_samples=300,
            n_bootstrap=200,
            steer_curve_scales=(0.25,),
            steer_curve_concepts=1,
            steer_curve_tokens=8,
        ),
    ),
    "default": DemoScale(
        n_train=100_000,
        n_val=8_000,
        ctx=128,
        train_samples={"mlp": 564 * 512, "unet": 87 * 512},
        batch_size=512,
        eval_sequences=8,
        max_new_tokens=24,
        eval_settings=dict(
            max_train_rows=60_000,
            sae_train={"steps": 600, "batch_size": 512},
            n_fd_samples=1500,
            steer_curve_scales=(0.25, 0.5, 0.75),
            steer_curve_concepts=2,
            steer_curve_tokens=10,
        ),
    ),
    "long": DemoScale(
        n_train=400_000,
        n_val=16_000,
        ctx=128,
        train_samples={"mlp": 1_800 * 1024, "unet": 240 * 1024},
        batch_size=1024,
        eval_sequences=128,
        max_new_tokens=40,
        eval_settings=dict(
            max_train_rows=200_000,
            ts=(0.25, 0.5, 0.75),
            sae_train={"steps": 3000, "batch_size": 1024},
            n_fd_samples=12_000,
            steer_curve_scales=(0.1, 0.25, 0.5, 0.75, 1.0),
            steer_curve_concepts=3,
            steer_curve_prompts=3,
            steer_curve_tokens=24,
        ),
    ),
}


def is_quick() -> bool:
    """Whether ``TL_DIFFUSION_PRIOR_QUICK`` asks for the smoke-test sizes (tutorials, CI)."""
    return os.environ.get(QUICK_ENV_VAR, "") not in ("", "0", "false", "False")


def capture_corpus(
    model,
    split: str,
    n_activations: int,
    ctx: int,
    hook: str | Sequence[str] = DEFAULT_HOOK,
    batch_size: int = 16,
    progress: bool = True,
) -> tuple[ActivationRingBuffer, ActivationCapture, float]:
    """Fill a buffer with ``n_activations`` rows of ``split`` text; returns it, its capture and
    the seconds it took. With several hooks (a multi-layer prior's) each row holds all of them.
    ``progress`` shows a progress bar."""
    source = corpus_token_source(model.tokenizer, split=split, batch_size=batch_size, ctx=ctx)
    hooks = [hook] if isinstance(hook, str) else list(hook)
    buffer = ActivationRingBuffer(n_activations, model.cfg.d_model, hooks, model_device(model))
    capture = ActivationCapture(model, hooks, buffer, CaptureConfig())
    start = time.perf_counter()
    fill_buffer(
        model, source, hooks, n_activations, buffer=buffer, capture=capture, progress=progress
    )
    return buffer, capture, time.perf_counter() - start


def build_priors(model, hook: str = DEFAULT_HOOK) -> dict[str, DiffusionPrior]:
    """Both designs at their CPU defaults, for ``model``'s ``hook``."""
    common = dict(d_model=model.cfg.d_model, hook_name=hook, model_name=model.cfg.model_name)
    return {
        "mlp": MLPPrior(MLPPriorConfig(**common)),
        "unet": UNetPrior(UNetPriorConfig.preset("cpu", **common)),
    }


def calibrate_steps(
    prior: DiffusionPrior,
    buffer,
    batch_size: int,
    seconds: float,
    autocast: str = "auto",
    hook: int | Sequence[int] = 0,
) -> int:
    """Training steps that fit in ``seconds``, from timing a few steps on a throwaway copy
    (under the trainer's precision for ``autocast``) on the buffer's ``hook`` (a multi-layer
    prior: the sequence of its hooks' indices).

    For time-budget benchmarks and tutorials: the result depends on the machine's load, so the
    demo sizes its training in samples instead (``DemoScale.train_samples``).
    """
    probe = copy.deepcopy(prior)
    probe.set_normalization(buffer.mean(hook), buffer.var(hook))
    optimizer = torch.optim.AdamW(probe.parameters(), lr=1e-4)
    generator = torch.Generator(device=buffer.device).manual_seed(0)
    precision = runtime.autocast(TrainConfig(autocast=autocast), buffer.device)
    timings = []
    for _ in range(4):
        start = time.perf_counter()
        with precision:
            loss = probe.loss(buffer.sample(batch_size, generator=generator, hook=hook))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        timings.append(time.perf_counter() - start)
    per_step = sorted(timings[1:])[len(timings[1:]) // 2]
    return max(10, int(seconds / per_step))


def train_demo_prior(
    name: str,
    prior: DiffusionPrior,
    buffer: ActivationRingBuffer,
    val_acts: torch.Tensor,
    scale: DemoScale,
    out: Path,
    steps: int | None = None,
    lr: float | None = None,
) -> TrainResult:
    """Train ``prior`` for ``steps`` (default: its ``scale.train_samples`` in batches) at peak
    ``lr`` (default: its design's CPU preset), validate on ``val_acts``, checkpoint under
    ``out/runs/<name>`` and save it to ``out/priors/<name>``."""
    if steps is None:
        steps = max(1, scale.train_samples[prior.config.architecture] // scale.batch_size)
    config = TrainConfig(
        steps=steps,
        batch_size=scale.batch_size,
        lr=PRIOR_PRESETS[prior.config.architecture]["cpu"]["lr"] if lr is None else lr,
        eval_every=max(1, steps // 4),
        log_every=max(1, steps // 50),
        val_size=min(len(val_acts), 4096),
        checkpoint_every=max(1, steps // 2),
        checkpoint_dir=str(out / RUNS_DIRNAME / name),
    )
    print(f"{name}: {prior.num_parameters:,} parameters, {steps} steps of {scale.batch_size}")
    result = train_prior(prior, buffer, config, val_activations=val_acts, resume=False)
    print(
        f"{name}: val loss {result.initial_val_loss:.4f} -> {result.final_val_loss:.4f} vs "
        f"Gaussian reference {result.gaussian_reference:.4f} (ratio "
        f"{result.val_over_reference:.3f}); "
        f"{result.samples_per_s:,.0f} samples/s"
    )
    prior.save_pretrained(out / PRIORS_DIRNAME / name)
    return result


def score_prior(prior: DiffusionPrior, val_acts: torch.Tensor, buffer) -> dict[str, float]:
    """``prior``'s loss on held-out rows ``val_acts`` against the Gaussian fitted on ``buffer``'s
    rows (the trainer's reference), for a prior trained elsewhere (the shipped one)."""
    generator = torch.Generator(device=buffer.device).manual_seed(0)
    fit_rows = buffer.sample(min(buffer.num_filled, FIT_ROWS), generator=generator, hook=0)
    scoring = TrainConfig(batch_size=1024, seed=0, progress=False)
    loss = validation_loss(prior, val_acts, scoring, prior.device)
    reference = gaussian_reference(prior, val_acts, fit_activations=fit_rows).loss
    ratio = loss / reference
    return {"val_loss": loss, "gaussian_reference": reference, "val_over_reference": ratio}


def demo_eval_settings(scale: DemoScale):
    """Evaluation settings sized to the demo's time budget (see ``EvalSettings`` for each knob)."""
    values = dict(
        max_sequences=scale.eval_sequences,
        seq_len=scale.ctx,
        max_train_rows=scale.n_train,
        prior_num_steps=20,
        ts=(0.5,),
        sae_sizes=((4, 32), (4, 64)),
        fd_sample_steps=20,
        n_bootstrap=1000,
        steer_curve_prompts=2,
    )
    values.update(scale.eval_settings)
    return EvalSettings.quick(**values)


def evaluate_demo(
    model, priors: dict, buffer, scale: DemoScale, out: Path, prior_dirs: list | None = None
) -> dict:
    """Fit the baselines on the training buffer, measure everything, write the report folder.

    ``prior_dirs`` (for the loss curves) defaults to ``out/priors/<name>`` for each prior.
    """
    settings = demo_eval_settings(scale)
    report = run_evaluation(
        model,
        list(priors.values()),
        buffer,
        settings,
        prior_names=list(priors),
        prior_dirs=prior_dirs or [out / PRIORS_DIRNAME / name for name in priors],
    )
    paths = write_report(report, out)
    print((out / REPORT_MD_NAME).read_text() if (out / REPORT_MD_NAME).exists() else paths)
    return {"targets": report.targets, "report": {k: str(v) for k, v in paths.items()}}


STEER_EXAMPLE = dict(
    positive=["I am so happy and grateful today!", "What a wonderful, joyful celebration."],
    negative=["I am so sad and miserable today.", "What a terrible, gloomy funeral."],
    prompt="Tell me about your weekend.",
    concept="happy,joy,wonderful,love",
    lexicon=CONCEPT_LEXICONS["joy"],
)


# The demo's two relative scales (r x the mean activation norm, added along the vector's unit
# direction), picked by reading greedy 24-token generations of the default model with the default
# demo's MLP prior at r = 0.05, 0.1, 0.25, 0.35, 0.5, 0.75 and 1 (two or three prompts; the texts
# are in benchmarks/results/steer_scales.md, issue 15). r = 0.05 and 0.1 leave plain greedy text
# unchanged. At 0.25 plain steering is fluent and on-concept ("I'm excited to ... meet some amazing
# people"). At 0.5 plain steering breaks on some prompts (emoji), while the prior's text stays
# fluent and is the most joyful ("I'm thrilled to ... celebrate"). At 1 both break.
STEER_EXAMPLE_SCALES = (0.25, 0.5)


@dataclass
class Generation:
    """One greedy continuation and its scores.

    Attributes:
        label: What was applied, e.g. ``"steered (r=0.25)"``.
        text: The decoded continuation.
        nll: Mean nats per continuation token under the unsteered model (lower = more fluent, but
            a looping text scores low too: read ``fluent``).
        concept_logprob: Log-probability of the concept words, when some were given.
        fluent: The text judge's verdict (:func:`~tl_diffusion_prior.evaluate.text_judge.
            judge_fluency`: no loops, repeated phrases or junk, and a low enough NLL).
        judge_reasons: Why it is not fluent (empty when it is).
        distinct_2: Distinct word 2-grams / 2-grams (1 = no repetition).
        lexicon_hits: Words of the held-out concept lexicon in the text, when one was given.
    """

    label: str
    text: str
    nll: float
    concept_logprob: float | None
    fluent: bool = True
    judge_reasons: tuple[str, ...] = ()
    distinct_2: float = 1.0
    lexicon_hits: int | None = None


@dataclass
class GenerationComparison:
    """Unsteered, steered and steered + prior continuations of one prompt with the same steering.

    Attributes:
        generations: In that order.
        hook_name: The steered hook (the prior's).
        vector_norm: Norm of the steering vector as given (it plays no part in the added norm).
        reference_norm: The norm ``scale`` is relative to.
        reference_norm_source: Where ``reference_norm`` came from.
        alpha: ``scale * reference_norm``: the norm of the vector added at each steered position
            (along the vector's unit direction).
        positions: Which positions were steered.
    """

    generations: list[Generation]
    hook_name: str
    vector_norm: float
    reference_norm: float
    reference_norm_source: str
    alpha: float
    positions: str


def _comparison_reference_norm(
    model, prior: DiffusionPrior, norm_prompts: list[str] | None
) -> tuple[float, str]:
    """The prior's RMS norm when its normaliser is fitted, else the mean norm over the prompts."""
    if prior.normalizer.is_fitted:
        return reference_norm_from_prior(prior), "prior's normaliser (RMS norm)"
    if norm_prompts:
        norm = mean_activation_norm(model, prior.config.hook_name, norm_prompts)
        return norm, "the positive and negative prompts"
    raise ValueError(
        "The prior's normaliser is not fitted and no norm_prompts were given: pass the "
        "prompts the reference norm should be measured on."
    )


def _judged_generation(
    model, label: str, tokens, continuation, concept_ids, concept_lexicon
) -> Generation:
    """Score ``continuation`` (NLL, concept log-probability) and judge its text."""
    eos = model.tokenizer.eos_token_id
    counted = mask_after_eos(continuation, eos) if eos is not None else None
    scores = score_continuations(
        model, tokens, continuation, concept_ids=concept_ids, continuation_mask=counted
    )
    text = model.tokenizer.decode(continuation[0], skip_special_tokens=True)
    nll = scores.nll.item()
    judgement = judge_fluency(text, nll)
    concept = scores.concept_logprob
    return Generation(
        label=label,
        text=text,
        nll=nll,
        concept_logprob=None if concept is None else concept.item(),
        fluent=judgement.fluent,
        judge_reasons=judgement.reasons,
        distinct_2=judgement.stats.distinct[1],
        lexicon_hits=None if concept_lexicon is None else lexicon_hits(text, concept_lexicon),
    )


def compare_generations(
    model,
    prior: DiffusionPrior,
    vector: torch.Tensor,
    prompt: str,
    scale: float,
    *,
    max_new_tokens: int = 40,
    t_start: float = DEFAULT_T_START,
    num_steps: int = DEFAULT_NUM_STEPS,
    seed: int = 0,
    positions: str = "all",
    denoise_mode: str = DEFAULT_DENOISE_MODE,
    concept_words: list[str] | None = None,
    concept_lexicon: list[str] | tuple[str, ...] | None = None,
    norm_prompts: list[str] | None = None,
) -> GenerationComparison:
    """Greedy continuations of ``prompt``: unsteered, steered, and steered then denoised by
    ``prior``, all at the prior's hook with the relative scale ``scale``: the hook adds
    ``scale * reference_norm`` along ``vector``'s unit direction (its own norm plays no part).
    ``denoise_mode`` is the prior's use (``SteeringConfig.denoise_mode``: ``"replace"`` or
    ``"edit"``).

    The reference norm is the prior's (RMS of its normaliser) when it is fitted, else the mean
    activation norm over ``norm_prompts``. Each continuation is scored by its NLL under the
    unsteered model, judged by :func:`~tl_diffusion_prior.evaluate.text_judge.judge_fluency`
    (which repetition cannot fool), and, with ``concept_words``, their log-probability, and with
    ``concept_lexicon``, the count of those held-out words in the text.
    """
    hook_name = prior.config.hook_name
    prior.check_compatible(
        hook_name=hook_name, d_model=model.cfg.d_model, model_name=model.cfg.model_name
    )
    norm, norm_source = _comparison_reference_norm(model, prior, norm_prompts)
    tokens = model.to_tokens(prompt)
    n_prompt = tokens.shape[1]

    def generate() -> torch.Tensor:
        out = model.generate(tokens, max_new_tokens=max_new_tokens, do_sample=False, verbose=False)
        return out[:, n_prompt:]

    common = dict(scale_mode="relative", reference_norm=norm, positions=positions)
    runs = [("unsteered", generate())]
    with steer(model, hook_name, vector, scale, **common):
        runs.append((f"steered (r={scale:g})", generate()))
    denoise = dict(t_start=t_start, num_steps=num_steps, seed=seed, denoise_mode=denoise_mode)
    with steer(model, hook_name, vector, scale, prior, **denoise, **common):
        label = f"steered + prior ({denoise_mode}, t={t_start:g}, {num_steps} steps)"
        runs.append((label, generate()))

    concept_ids = concept_token_ids(model, concept_words) if concept_words else None
    return GenerationComparison(
        generations=[
            _judged_generation(model, label, tokens, continuation, concept_ids, concept_lexicon)
            for label, continuation in runs
        ],
        hook_name=hook_name,
        vector_norm=float(vector.float().norm()),
        reference_norm=float(norm),
        reference_norm_source=norm_source,
        alpha=float(scale * norm),
        positions=positions,
    )
