"""What an evaluation run measures: every knob, with the full and the ``--quick`` preset."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from tl_diffusion_prior.core.config import ConfigBase
from tl_diffusion_prior.core.validation import check_choice, check_float, check_int
from tl_diffusion_prior.evaluate.baselines.sae_lens_training import SAELensTrainConfig
from tl_diffusion_prior.evaluate.baselines.sae_training import SAETrainConfig

DEFAULT_SEQ_LEN = 128


@dataclass
class EvalSettings(ConfigBase):
    """Knobs of :func:`~tl_diffusion_prior.evaluate.report.run.run_evaluation`.

    Cost: every (condition, method, setting) runs the model from the hook to the end once over
    all windows of every set, and each multi-step prior setting also runs ``prior_num_steps``
    network evaluations per patched token. The defaults (64 windows of 128 tokens per corpus
    source and per out-of-domain set, about 700 windows) are sized so that differences between
    methods are resolved (the report states the smallest resolved difference); on a 2-core CPU a
    default run of one MLP prior takes about an hour (a UNet prior's 20-step denoising costs
    about 30 minutes per setting there). The ``quick`` preset (16 pooled windows per set) takes
    minutes and is meant for tests.

    Attributes:
        seq_len: Tokens per held-out window (BOS included); None: the context length the
            priors' activations were captured with (``training_record["ctx"]``), else 128.
            Activation statistics drift with the position, so held-out windows should be as
            long as the training rows.
        max_sequences: Windows per held-out set; with ``per_source`` the corpus's held-out split
            gives this many windows per source (the paper: 2048 documents).
        per_source: Cut the corpus's held-out windows source by source (``max_sequences`` each)
            and report delta LM per source next to the pooled figure; False cuts
            ``max_sequences`` windows from the mixed held-out stream.
        window_mode: ``"packed"``: rows of the packed, shuffled document stream, as the trainer
            captures them (held-out rows then follow the training distribution);
            ``"document"``: the first tokens of each document, as in the paper.
        windows_per_doc: With ``"document"``: at most this many windows from one document.
        batch_size: Windows per forward pass.
        outlier_multiple: Positions whose activation norm exceeds this multiple of the median are
            left unpatched (as capture keeps them out of training); None patches them too.
        max_train_rows: Training rows used to fit the Gaussian/PCA baseline and to train SAEs.
        pca_ks: PCA sizes (values above ``d_model`` are dropped).
        sae_sizes: ``(expansion factor, k)`` pairs of our TopK SAEs trained for the fixed
            ``sae_train["steps"]``; ``d_sae = factor * d_model`` (the quick preset's SAE; the full
            preset trains converged SAELens SAEs instead).
        sae_train: :class:`~tl_diffusion_prior.evaluate.baselines.sae_training.SAETrainConfig`
            fields.
        sae_lens: One dict of
            :class:`~tl_diffusion_prior.evaluate.baselines.sae_lens_training.SAELensTrainConfig`
            fields per SAELens SAE, each trained with SAELens's own trainer until its held-out
            NMSE plateaus (default: TopK, ``d_sae = 8 * d_model``, ``k`` 32 and 128). Without
            sae-lens installed, the TopK ones are our TopK SAE trained to the same criterion.
        sae_convergence:
            :class:`~tl_diffusion_prior.evaluate.baselines.convergence.ConvergenceConfig` fields
            (evaluation interval, patience, threshold, sample cap, held-out rows) shared by the
            ``sae_lens`` SAEs; an entry's own ``convergence`` dict overrides them.
        ts: Noise levels of the reconstruction sweep (Gaussian posterior and priors).
        prior_num_steps: Euler/DDPM steps of the multi-step prior reconstructions.
        one_step: Also evaluate each prior's one-step posterior-mean estimate.
        gaussian_modes: ``"mean"`` and/or ``"sample"`` for the Gaussian posterior.
        noise_stds: Restoration noise levels (std in normalised space).
        steer_scales: Steering scales as multiples of the mean activation norm (the vector is
            unit-normalised first, as in the paper's ``alpha = r * mean norm``); empty by default:
            steering is measured by the steering benchmark, not by this run.
        steer_ts: Noise levels of the Gaussian posterior and the priors in steering restoration.
        n_fd_samples: Samples per Frechet distance (and train rows of its floor); target (c) is
            flagged unreliable below 20 per dimension (11,520 for d_model 576).
        fd_sample_steps: Sampling steps of the priors for the FD (None: each prior's default).
        n_fd_bootstrap: Bootstrap resamples of the interval of each prior's FD ratio (target
            (c)); 0 leaves the interval out. Each resample costs three covariances of
            ``n_fd_samples`` rows.
        steer_curve_scales: Relative scales of the concept-vs-fluency steering curves (plain
            steering and each prior; see ``evaluate.concept_steering``); empty skips them.
        steer_curve_concepts: How many of ``concepts.DEFAULT_CONCEPTS`` to steer towards.
        steer_curve_prompts: How many of ``concepts.DEFAULT_PROMPTS`` to continue.
        steer_curve_tokens: Greedy tokens generated per continuation.
        headline_noise_std: Noise std of target (a).
        headline_t: Noise level of target (b).
        n_bootstrap: Bootstrap resamples of every interval.
        seed: Seed of all noise, subsampling and SAE training.
    """

    unknown_keys_label: ClassVar[str] = "evaluation settings"

    seq_len: int | None = None
    max_sequences: int = 64
    per_source: bool = True
    window_mode: str = "packed"
    windows_per_doc: int = 2
    batch_size: int = 8
    outlier_multiple: float | None = 5.0
    max_train_rows: int = 200_000
    pca_ks: tuple[int, ...] = (32, 128, 384)
    sae_sizes: tuple[tuple[int, int], ...] = ()
    sae_train: dict = field(default_factory=lambda: {"steps": 3000, "batch_size": 1024})
    sae_lens: tuple[dict, ...] = (
        {"architecture": "topk", "k": 32},
        {"architecture": "topk", "k": 128},
    )
    sae_convergence: dict = field(default_factory=dict)
    ts: tuple[float, ...] = (0.25, 0.5, 0.75)
    prior_num_steps: int = 20
    one_step: bool = False
    gaussian_modes: tuple[str, ...] = ("mean",)
    noise_stds: tuple[float, ...] = (1.0,)
    steer_scales: tuple[float, ...] = ()
    steer_ts: tuple[float, ...] = (0.5,)
    n_fd_samples: int = 20_000
    fd_sample_steps: int | None = None
    n_fd_bootstrap: int = 200
    steer_curve_scales: tuple[float, ...] = ()
    steer_curve_concepts: int = 3
    steer_curve_prompts: int = 3
    steer_curve_tokens: int = 16
    headline_noise_std: float = 1.0
    headline_t: float = 0.5
    n_bootstrap: int = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        for name in (
            "max_sequences",
            "windows_per_doc",
            "batch_size",
            "max_train_rows",
            "prior_num_steps",
            "n_fd_samples",
            "n_bootstrap",
            "steer_curve_concepts",
            "steer_curve_prompts",
            "steer_curve_tokens",
        ):
            check_int(name, getattr(self, name), minimum=1)
        check_int("n_fd_bootstrap", self.n_fd_bootstrap, minimum=0, hint="0 skips the interval.")
        check_choice("window_mode", self.window_mode, ("packed", "document"))
        if self.seq_len is not None:
            check_int(
                "seq_len", self.seq_len, minimum=3, hint="None uses the priors' capture context."
            )
        self.pca_ks = tuple(int(k) for k in self.pca_ks)
        self.sae_sizes = tuple((int(f), int(k)) for f, k in self.sae_sizes)
        for name in ("ts", "steer_ts"):
            values = tuple(float(t) for t in getattr(self, name))
            for i, t in enumerate(values):
                check_float(f"{name}[{i}]", t, minimum=0.0, maximum=1.0, min_open=True)
            setattr(self, name, values)
        self.noise_stds = tuple(float(s) for s in self.noise_stds)
        for i, std in enumerate(self.noise_stds):
            check_float(f"noise_stds[{i}]", std, minimum=0.0, min_open=True)
        self.steer_scales = tuple(float(s) for s in self.steer_scales)
        self.steer_curve_scales = tuple(float(s) for s in self.steer_curve_scales)
        for i, mode in enumerate(self.gaussian_modes):
            check_choice(f"gaussian_modes[{i}]", mode, ("mean", "sample"))
        check_float("headline_t", self.headline_t, minimum=0.0, maximum=1.0, min_open=True)
        self.sae_train_config()  # validates the SAE fields early
        self.sae_lens = tuple(dict(entry) for entry in self.sae_lens)
        self.sae_lens_configs()

    def resolved_seq_len(self, priors: Sequence[Any] = ()) -> int:
        """``seq_len``, or the priors' capture context length, or 128."""
        if self.seq_len is not None:
            return self.seq_len
        contexts = {p.training_record.get("ctx") for p in priors} - {None}
        if len(contexts) > 1:
            raise ValueError(
                f"The priors were captured with different context lengths {sorted(contexts)}; "
                "set seq_len explicitly."
            )
        return int(contexts.pop()) if contexts else DEFAULT_SEQ_LEN

    def sae_train_config(self) -> SAETrainConfig:
        data = dict(self.sae_train)
        data.setdefault("seed", self.seed)
        return SAETrainConfig(**data)

    def sae_lens_configs(self) -> list[SAELensTrainConfig]:
        """The ``sae_lens`` entries as configs, with ``sae_convergence`` and the seed filled in."""
        out = []
        for entry in self.sae_lens:
            if not isinstance(entry, dict):
                raise TypeError(f"sae_lens entries must be dicts, got {type(entry).__name__}.")
            data = {"seed": self.seed, **entry}
            data["convergence"] = {**self.sae_convergence, **entry.get("convergence", {})}
            out.append(SAELensTrainConfig.from_dict(data))
        return out

    @classmethod
    def quick(cls, **overrides) -> EvalSettings:
        """A few minutes on a CPU: small held-out sets, short sweeps, small SAEs."""
        values = dict(
            max_sequences=16,
            per_source=False,
            one_step=True,
            windows_per_doc=1,
            max_train_rows=20_000,
            pca_ks=(32, 128),
            sae_sizes=((4, 32),),
            sae_lens=(),
            sae_train={"steps": 300, "batch_size": 512},
            ts=(0.25, 0.5),
            gaussian_modes=("mean",),
            noise_stds=(1.0,),
            steer_scales=(0.25,),
            steer_curve_scales=(0.25,),
            steer_curve_concepts=1,
            steer_curve_prompts=2,
            steer_curve_tokens=8,
            prior_num_steps=10,
            n_fd_samples=1000,
            fd_sample_steps=20,
            n_bootstrap=500,
        )
        values.update(overrides)
        return cls.from_dict(values)
