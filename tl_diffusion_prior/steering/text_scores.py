"""Per-token manifold scores of whole texts, and a plot of them along each text.

:func:`score_texts` runs each text through the model under :func:`~tl_diffusion_prior.steering.
monitor.monitor` at the prior's hook and keeps ``<hook>.hook_manifold_score``; the
``tl-diffusion-prior score`` command prints and plots the result. Texts run one at a time: a
token's score does not depend on the batch, so batching would only save time, and single texts
need no padding. Matplotlib is imported inside :func:`plot_text_scores` and only through its
object API, so importing this module never changes a notebook's or script's pyplot backend.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from tl_diffusion_prior.core.lens import LensModel
from tl_diffusion_prior.core.validation import check_int
from tl_diffusion_prior.priors.base import DiffusionPrior
from tl_diffusion_prior.priors.score import ScoreConfig
from tl_diffusion_prior.steering.monitor import SCORE_HOOK, monitor

#: Texts whose tokens are written under the plot's x-axis (longer ones get positions only).
_MAX_LABELLED_TOKENS = 60


@dataclass
class TextScores:
    """The per-token scores of one text.

    Attributes:
        text: The text as given.
        tokens: Its tokens as strings, the BOS first.
        scores: ``[pos]`` float32 scores on the CPU, NaN at position 0 (the BOS is not scored).
        truncated: Whether the text was cut to ``max_tokens`` tokens.
    """

    text: str
    tokens: list[str]
    scores: Float[Tensor, " pos"]
    truncated: bool

    @property
    def scored(self) -> Float[Tensor, " n"]:
        """The scores of the scored tokens (all but the BOS)."""
        return self.scores[~self.scores.isnan()]

    def summary(self) -> str:
        """``n tokens, mean, median, max (at which token)`` in one line."""
        scored = self.scored
        if scored.numel() == 0:
            return "no scored tokens"
        top = int(torch.nan_to_num(self.scores, nan=-math.inf).argmax())
        return (
            f"{scored.numel()} tokens scored: mean {float(scored.mean()):.3f}, median "
            f"{float(scored.median()):.3f}, max {float(scored.max()):.3f} at position {top} "
            f"({self.tokens[top]!r})"
        )


def score_texts(
    model: LensModel,
    prior: DiffusionPrior,
    texts: Sequence[str],
    *,
    method: str | ScoreConfig = "elbo",
    levels: Sequence[float] | None = None,
    seed: int = 0,
    max_tokens: int = 256,
) -> list[TextScores]:
    """The manifold score of every token of each text at the prior's hook.

    Args:
        model: The model the prior was trained on.
        prior: The prior; its ``config.hook_name`` is the hook monitored.
        texts: Non-empty strings, each run on its own with a BOS prepended.
        method, levels, seed: The score's settings: a method name with its levels and seed, or a
            whole :class:`~tl_diffusion_prior.priors.score.ScoreConfig` as ``method``.
        max_tokens: Longer texts are cut to this many tokens (BOS included), or to the model's
            context length if shorter.
    """
    check_int("max_tokens", max_tokens, 2, hint="Each text needs its BOS and one token.")
    if isinstance(texts, str) or not all(isinstance(t, str) and t.strip() for t in texts):
        raise ValueError("texts must be a sequence of non-empty strings.")
    hook_name = prior.config.hook_name
    score_name = f"{hook_name}.{SCORE_HOOK}"
    limit = min(max_tokens, model.cfg.n_ctx)
    results = []
    with monitor(model, hook_name, prior, method, levels=levels, seed=seed):
        for text in texts:
            tokens = model.to_tokens(text, prepend_bos=True, truncate=False)
            truncated = tokens.shape[1] > limit
            tokens = tokens[:, :limit]
            with torch.inference_mode():
                _, cache = model.run_with_cache(tokens, names_filter=[score_name])
            results.append(
                TextScores(
                    text=text,
                    tokens=list(model.to_str_tokens(tokens[0])),
                    scores=cache[score_name][0].float().cpu(),
                    truncated=truncated,
                )
            )
    return results


def plot_text_scores(
    results: Sequence[TextScores], path: str | os.PathLike | None = None, title: str | None = None
):
    """One panel per text, the score against token position (tokens as labels when short);
    saved to ``path`` when given. Returns the matplotlib ``Figure``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not results:
        raise ValueError("results is empty: nothing to plot.")
    fig = Figure(figsize=(10, 2.4 * len(results) + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(results), 1, squeeze=False)[:, 0]
    for index, (ax, result) in enumerate(zip(axes, results, strict=True)):
        positions = torch.arange(len(result.scores))
        ax.plot(positions, result.scores, marker=".", linewidth=1)
        ax.set_ylabel("score")
        preview = " ".join(result.text.split())
        ax.set_title(f"text {index + 1}: {preview[:80]}{'...' if len(preview) > 80 else ''}")
        if len(result.tokens) <= _MAX_LABELLED_TOKENS:
            ax.set_xticks(positions.tolist(), [repr(t)[1:-1] for t in result.tokens], rotation=90)
        else:
            ax.set_xlabel("token position")
    if title:
        fig.suptitle(title)
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig
