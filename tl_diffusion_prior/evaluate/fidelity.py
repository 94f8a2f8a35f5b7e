"""Delta LM loss: patch a hook's activations with a method's output and measure the loss increase.

The held-out text is cut into fixed-length windows (BOS + ``seq_len - 1`` tokens, no padding). For
the residual-stream hooks the model is split at the hook: the residual is computed once
(``model(tokens, stop_at_layer=...)``) and every patched variant runs only the rest of the model
(``model(resid, start_at_layer=..., tokens=...)``). The clean loss is computed through the same
split path, so the identity patch gives a loss increase of exactly 0. Other hooks fall back to a
full forward with a replacing hook.

Which positions are patched: every position except 0 (the attention sink, never modelled), and by
default not the rare massive-activation rows (norm above ``outlier_multiple`` times the median),
which the capture filter also keeps out of every training set. The loss increase is averaged over
the predictions made at positions ``1 ..``; position 0's prediction cannot change.

Three conditions share this machinery: ``reconstruct`` (clean input), ``noise`` (Gaussian noise of
std ``s`` added in normalised space, identical for every method) and ``steer`` (a steering vector
added at a scale). Each gives delta LM with a bootstrap interval over documents and the relative
error ``||x_hat - x|| / ||x||`` to the clean activation, raw and normalised.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from tl_diffusion_prior.capture.hook_names import check_residual_hooks, layer_of, stop_at_layer
from tl_diffusion_prior.core.lens import splits_forward_at_layers
from tl_diffusion_prior.core.normalizer import Normalizer
from tl_diffusion_prior.evaluate.reconstructors import Reconstructor, label
from tl_diffusion_prior.evaluate.stats import ConfidenceInterval, bootstrap_ci


@dataclass
class TokenSet:
    """Fixed-length token windows of one held-out text set.

    Attributes:
        name: Data set name used in reports (e.g. ``"heldout"``, ``"pydoc"``).
        tokens: ``[n, seq_len]`` token ids, each row starting with BOS.
        doc_ids: The document each window came from (bootstrap clusters).
        groups: Optionally a label per window (the corpus source it came from); results then
            also report delta LM per label.
    """

    name: str
    tokens: Int[Tensor, "n seq"]
    doc_ids: Int[Tensor, " windows"]
    groups: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.tokens.ndim != 2 or self.tokens.shape[1] < 3:
            raise ValueError(f"tokens must be [n, seq_len >= 3], got {tuple(self.tokens.shape)}.")
        if self.doc_ids.shape != self.tokens.shape[:1]:
            raise ValueError(
                f"doc_ids must have one id per window ({self.tokens.shape[0]}), got "
                f"{tuple(self.doc_ids.shape)}."
            )
        if self.groups is not None and len(self.groups) != self.tokens.shape[0]:
            raise ValueError(
                f"groups must label every window ({self.tokens.shape[0]}), got {len(self.groups)}."
            )


def token_windows(
    model,
    texts: Sequence[str],
    name: str,
    seq_len: int = 128,
    max_windows: int | None = None,
    windows_per_doc: int = 1,
) -> TokenSet:
    """Cut each text into up to ``windows_per_doc`` windows of BOS + ``seq_len - 1`` tokens.

    Texts too short for one full window are skipped (no padding keeps the split forward exact).
    """
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None or getattr(tokenizer, "bos_token_id", None) is None:
        raise ValueError(
            "model has no tokenizer with a BOS token; build a TokenSet from token ids instead."
        )
    if seq_len < 3 or windows_per_doc < 1:
        raise ValueError(
            f"need seq_len >= 3 and windows_per_doc >= 1, got {seq_len}, {windows_per_doc}."
        )
    body = seq_len - 1
    windows, doc_ids = [], []
    for doc_id, text in enumerate(texts):
        ids = model.to_tokens(text, prepend_bos=False, truncate=False, move_to_device=False)[0]
        for w in range(min(windows_per_doc, ids.numel() // body)):
            chunk = ids[w * body : (w + 1) * body]
            windows.append(torch.cat([torch.tensor([tokenizer.bos_token_id]), chunk.cpu()]))
            doc_ids.append(doc_id)
            if max_windows is not None and len(windows) >= max_windows:
                break
        if max_windows is not None and len(windows) >= max_windows:
            break
    if not windows:
        raise ValueError(f"No text in {name!r} is long enough for a {seq_len}-token window.")
    return TokenSet(name, torch.stack(windows).long(), torch.tensor(doc_ids))


@dataclass
class CleanPass:
    """The residual at the hook and the clean per-token loss of a :class:`TokenSet`.

    Attributes:
        resid: ``[n, seq, d_model]`` activations at the hook (CPU, float32).
        clean_loss: ``[n, seq - 1]`` per-token cross-entropy of the unpatched model.
        patch_mask: ``[n, seq]`` positions that get patched.
        n_outliers: Rows left unpatched because of their norm.
    """

    token_set: TokenSet
    hook_name: str
    resid: Float[Tensor, "n seq d_model"]
    clean_loss: Float[Tensor, "n seqm1"]
    patch_mask: Bool[Tensor, "n seq"]
    n_outliers: int
    batch_size: int

    @property
    def rows(self) -> Float[Tensor, "rows d_model"]:
        """The patched positions' clean activations, flattened."""
        return self.resid[self.patch_mask]

    @property
    def row_windows(self) -> Int[Tensor, " rows"]:
        """The window each of :attr:`rows` comes from (the unit its intervals resample)."""
        return self.patch_mask.nonzero()[:, 0]


class _Splitter:
    """Runs the model up to and from a hook: split forward for resid hooks, hooks otherwise."""

    def __init__(self, model, hook_name: str) -> None:
        check_residual_hooks(model, hook_name)
        self.model, self.hook_name = model, hook_name
        layer = layer_of(hook_name)
        self.start: int | None = None
        if not splits_forward_at_layers(model):
            pass  # hooks replace the activation instead
        elif layer is not None and hook_name == f"blocks.{layer}.hook_resid_post":
            self.start = layer + 1
        elif layer is not None and hook_name == f"blocks.{layer}.hook_resid_pre":
            self.start = layer

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def head(self, tokens: Tensor) -> Tensor:
        if self.start is not None:
            return self.model(tokens, stop_at_layer=self.start)
        _, cache = self.model.run_with_cache(
            tokens, names_filter=self.hook_name, stop_at_layer=stop_at_layer([self.hook_name])
        )
        return cache[self.hook_name]

    def tail_loss(self, resid: Tensor, tokens: Tensor) -> Tensor:
        if self.start is not None:
            return self.model(
                resid,
                start_at_layer=self.start,
                tokens=tokens,
                return_type="loss",
                loss_per_token=True,
            )

        def replace(activation, hook):
            return resid.to(activation.dtype)

        return self.model.run_with_hooks(
            tokens,
            return_type="loss",
            loss_per_token=True,
            fwd_hooks=[(self.hook_name, replace)],
        )


@torch.inference_mode()
def prepare_clean_pass(
    model,
    token_set: TokenSet,
    hook_name: str,
    batch_size: int = 8,
    outlier_multiple: float | None = 5.0,
) -> CleanPass:
    """Compute and cache the hook's residual and the clean loss once per data set."""
    splitter = _Splitter(model, hook_name)
    resid_parts, loss_parts = [], []
    for start in range(0, token_set.tokens.shape[0], batch_size):
        tokens = token_set.tokens[start : start + batch_size].to(splitter.device)
        resid = splitter.head(tokens)
        loss_parts.append(splitter.tail_loss(resid, tokens).float().cpu())
        resid_parts.append(resid.float().cpu())
    resid = torch.cat(resid_parts)
    mask = torch.ones(resid.shape[:2], dtype=torch.bool)
    mask[:, 0] = False
    n_outliers = 0
    if outlier_multiple is not None:
        norms = resid.norm(dim=-1)
        median = norms[mask].median()
        outliers = mask & (norms > outlier_multiple * median)
        n_outliers = int(outliers.sum())
        mask &= ~outliers
    return CleanPass(
        token_set, hook_name, resid, torch.cat(loss_parts), mask, n_outliers, batch_size
    )


@dataclass
class Condition:
    """What happens to the clean activations before the method sees them.

    Attributes:
        kind: ``"reconstruct"``, ``"noise"`` or ``"steer"``.
        noise_std: For ``"noise"``: std of the Gaussian noise in normalised space.
        steer_vector: For ``"steer"``: the raw-space direction, added as ``scale * steer_vector``.
        steer_scale: For ``"steer"``: the multiplier.
        steer_name: For ``"steer"``: a name for the vector in reports.
    """

    kind: str = "reconstruct"
    noise_std: float = 0.0
    steer_vector: Tensor | None = field(default=None, repr=False)
    steer_scale: float = 0.0
    steer_name: str = "vector"

    def __post_init__(self) -> None:
        if self.kind not in ("reconstruct", "noise", "steer"):
            raise ValueError(f"kind must be reconstruct/noise/steer, got {self.kind!r}.")
        if self.kind == "noise" and not self.noise_std >= 0:
            raise ValueError(f"noise_std must be >= 0, got {self.noise_std!r}.")
        if self.kind == "steer" and (self.steer_vector is None or self.steer_vector.ndim != 1):
            raise ValueError("kind='steer' needs steer_vector, a [d_model] tensor.")

    @property
    def label(self) -> str:
        if self.kind == "noise":
            return f"noise std={self.noise_std:g}"
        if self.kind == "steer":
            return f"steer {self.steer_name} scale={self.steer_scale:g}"
        return "reconstruct"


@dataclass
class FidelityResult:
    """One method at one setting under one condition on one data set.

    ``per_group`` holds delta LM per window label (corpus source) when the set has labels;
    ``window_deltas`` the per-window delta LM that every interval was bootstrapped from (kept
    for paired comparisons of methods on the same windows; not written to ``report.json``).
    """

    method: str
    setting: dict
    dataset: str
    condition: str
    delta_lm: ConfidenceInterval
    rel_error_raw: float
    rel_error_normalized: float
    n_tokens: int
    seconds: float
    extra: dict = field(default_factory=dict)
    per_group: dict[str, ConfidenceInterval] = field(default_factory=dict)
    window_deltas: Tensor | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        if not self.setting:
            return self.method
        return f"{self.method} ({', '.join(f'{k}={v}' for k, v in self.setting.items())})"

    def to_dict(self) -> dict:
        out = dict(self.__dict__)
        out.pop("window_deltas")
        out["delta_lm"] = self.delta_lm.to_dict()
        out["per_group"] = {k: v.to_dict() for k, v in self.per_group.items()}
        out["label"] = self.label
        return out


def _generator(seed: int, batch_index: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + batch_index)


@torch.inference_mode()
def evaluate_reconstructor(
    model,
    clean: CleanPass,
    reconstructor: Reconstructor,
    normalizer: Normalizer,
    condition: Condition | None = None,
    seed: int = 0,
    n_resamples: int = 2000,
) -> FidelityResult:
    """Delta LM and relative error of ``reconstructor`` under ``condition`` on ``clean``'s data.

    ``normalizer`` defines the normalised space of the noise and of the normalised error (use the
    baselines' one, fitted from the training buffer). Noise for the condition and the methods'
    own noise come from generators seeded by ``seed`` and the batch index, so every method sees
    the same perturbed inputs and the priors and the Gaussian posterior share their noise.
    """
    condition = condition or Condition()
    splitter = _Splitter(model, clean.hook_name)
    tokens_all, resid_all = clean.token_set.tokens, clean.resid
    seq_deltas, err_raw, err_norm, retained = [], [], [], []
    started = time.perf_counter()
    for b, start in enumerate(range(0, tokens_all.shape[0], clean.batch_size)):
        stop = start + clean.batch_size
        resid, mask = resid_all[start:stop], clean.patch_mask[start:stop]
        x = resid[mask]
        x_in = _perturb(x, condition, normalizer, _generator(seed, b))
        method_generator = _generator(seed + 1, b)
        if condition.kind == "noise":
            x_hat = reconstructor.restore(x_in, condition.noise_std, generator=method_generator)
        else:
            x_hat = reconstructor.reconstruct(x_in, generator=method_generator)
        x_hat = x_hat.to(torch.float32)
        patched = resid.clone()
        patched[mask] = x_hat
        tokens = tokens_all[start:stop].to(splitter.device)
        loss = splitter.tail_loss(patched.to(splitter.device), tokens).float().cpu()
        delta = (loss - clean.clean_loss[start:stop])[:, 1:]
        seq_deltas.append(delta.double().mean(1))
        err_raw.append((x_hat - x).norm(dim=-1) / x.norm(dim=-1).clamp_min(1e-12))
        z, z_hat = normalizer.normalize(x), normalizer.normalize(x_hat)
        err_norm.append((z_hat - z).norm(dim=-1) / z.norm(dim=-1).clamp_min(1e-12))
        if condition.kind == "steer":
            v = condition.steer_vector.to(x)
            retained.append(((x_hat - x) @ v) / (condition.steer_scale * (v @ v)))
    deltas = torch.cat(seq_deltas)
    ci = bootstrap_ci(deltas, groups=clean.token_set.doc_ids, n_resamples=n_resamples, seed=seed)
    per_group = _per_group_ci(deltas, clean.token_set, n_resamples, seed)
    extra = {}
    if retained:
        extra["steer_retained"] = float(torch.cat(retained).double().mean())
    return FidelityResult(
        method=reconstructor.name,
        setting=dict(reconstructor.setting),
        dataset=clean.token_set.name,
        condition=condition.label,
        delta_lm=ci,
        rel_error_raw=float(torch.cat(err_raw).double().mean()),
        rel_error_normalized=float(torch.cat(err_norm).double().mean()),
        n_tokens=int(clean.patch_mask.sum()),
        seconds=round(time.perf_counter() - started, 2),
        extra={"label": label(reconstructor), **extra},
        per_group=per_group,
        window_deltas=deltas,
    )


def _per_group_ci(
    deltas: Tensor, token_set: TokenSet, n_resamples: int, seed: int
) -> dict[str, ConfidenceInterval]:
    """Delta LM with its interval over each label's windows (empty without labels)."""
    if token_set.groups is None:
        return {}
    out = {}
    for name in dict.fromkeys(token_set.groups):
        index = torch.tensor([g == name for g in token_set.groups])
        out[name] = bootstrap_ci(
            deltas[index], groups=token_set.doc_ids[index], n_resamples=n_resamples, seed=seed
        )
    return out


def _perturb(
    x: Tensor, condition: Condition, normalizer: Normalizer, generator: torch.Generator
) -> Tensor:
    if condition.kind == "noise" and condition.noise_std > 0:
        eps = torch.randn(x.shape, generator=generator, dtype=torch.float32)
        z = normalizer.normalize(x) + condition.noise_std * eps.to(x.device)
        return normalizer.denormalize(z)
    if condition.kind == "steer":
        return x + condition.steer_scale * condition.steer_vector.to(x)
    return x
