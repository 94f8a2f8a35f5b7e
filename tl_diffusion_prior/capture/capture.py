"""Stage 1: stream activations from TransformerLens hook points into an ActivationRingBuffer.

Only the hook-point API that ``HookedRootModule`` and ``TransformerBridge`` share is used
(``hook_dict`` and ``hooks()``), so any model with TransformerLens hook points works. The hooks
never modify the activation: they scatter it into the buffer and return None.

Which rows are kept: every position except position 0 (SmolLM2's position 0 has ~100x the median
norm whatever its token), padding (from the ``attention_mask`` passed to the model), BOS and any
token id listed in ``exclude_token_ids``, and, by default, rows whose norm exceeds
``outlier_multiple`` times the running median norm (massive activations occur after position 0
too).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Bool, Int
from torch import Tensor
from tqdm.auto import tqdm

from tl_diffusion_prior.capture.buffer import ActivationRingBuffer
from tl_diffusion_prior.capture.hook_names import check_residual_hooks, stop_at_layer
from tl_diffusion_prior.capture.outlier_filter import OutlierFilter
from tl_diffusion_prior.constants import MODEL_FINGERPRINT_KEY, MODEL_NAME_KEY
from tl_diffusion_prior.core.fingerprint import model_fingerprint
from tl_diffusion_prior.core.integrity import check_same_source
from tl_diffusion_prior.core.lens import LensModel
from tl_diffusion_prior.core.validation import check_int


@dataclass
class CaptureConfig:
    """Which activations reach the buffer.

    Attributes:
        exclude_token_ids: token ids never captured, in addition to position 0 and padding.
        exclude_bos: also exclude the tokenizer's BOS id wherever it occurs.
        outlier_multiple: drop rows whose norm exceeds this multiple of the running median norm;
            None disables the filter.
    """

    exclude_token_ids: tuple[int, ...] = ()
    exclude_bos: bool = True
    outlier_multiple: float | None = 5.0

    def __post_init__(self):
        self.exclude_token_ids = tuple(int(t) for t in self.exclude_token_ids)
        if self.outlier_multiple is not None and not self.outlier_multiple > 1:
            raise ValueError(
                f"outlier_multiple must be > 1 or None to disable, got {self.outlier_multiple}."
            )


@dataclass
class CaptureStats:
    """Counts of what capture kept and dropped (synchronises the device to read)."""

    kept: int
    excluded_positions: int
    dropped_outliers: int
    dropped_nonfinite: int
    extra: dict = field(default_factory=dict)


def model_device(model: torch.nn.Module) -> torch.device:
    for parameter in model.parameters():
        return parameter.device
    return torch.device("cpu")


class ActivationCapture:
    """Hooks that copy activations at ``hook_names`` into ``buffer`` on every forward pass.

    Use :meth:`attach` as a context manager; inside it, call the model directly, with token
    tensors (an ``attention_mask=`` keyword marks padding) or with strings. The tokens are read by a
    forward pre-hook on the model so that excluded ids and padding can be masked.
    """

    def __init__(
        self,
        model: LensModel,
        hook_names: str | Sequence[str],
        buffer: ActivationRingBuffer,
        config: CaptureConfig | None = None,
    ):
        self.model = model
        self.hook_names = check_residual_hooks(model, hook_names)
        if tuple(self.hook_names) != buffer.hook_names:
            raise ValueError(
                f"buffer holds hooks {list(buffer.hook_names)} but capture was asked for "
                f"{self.hook_names}; create the buffer with hook_names={self.hook_names}."
            )
        self.buffer = buffer
        self.config = config or CaptureConfig()
        excluded = set(self.config.exclude_token_ids)
        tokenizer = getattr(model, "tokenizer", None)
        if self.config.exclude_bos and getattr(tokenizer, "bos_token_id", None) is not None:
            excluded.add(int(tokenizer.bos_token_id))
        self._excluded_ids = torch.tensor(sorted(excluded), dtype=torch.long, device=buffer.device)
        self.outlier_filter = (
            OutlierFilter(buffer.n_hooks, self.config.outlier_multiple, device=buffer.device)
            if self.config.outlier_multiple is not None
            else None
        )
        self._tokens: Tensor | None = None
        self._attention_mask: Tensor | None = None
        self._pending: dict[str, Tensor] = {}

    def _record_inputs(self, module, args, kwargs) -> None:
        tokens = args[0] if args else kwargs.get("input", kwargs.get("tokens"))
        if isinstance(tokens, (str, list)) and hasattr(self.model, "to_tokens"):
            tokens = self.model.to_tokens(
                tokens,
                prepend_bos=kwargs.get("prepend_bos"),
                padding_side=kwargs.get("padding_side"),
            )
        is_tokens = isinstance(tokens, Tensor) and not tokens.is_floating_point()
        self._tokens = tokens if is_tokens else None
        self._attention_mask = kwargs.get("attention_mask")
        self._pending.clear()

    def row_mask(self, batch: int, pos: int) -> Bool[Tensor, " rows"]:
        """Which of the ``batch * pos`` flattened positions may enter the buffer."""
        device = self.buffer.device
        keep = torch.ones(batch, pos, dtype=torch.bool, device=device)
        keep[:, 0] = False
        tokens = self._tokens
        if tokens is not None and tokens.shape == (batch, pos):
            tokens = tokens.to(device, non_blocking=True)
            if self._excluded_ids.numel():
                keep &= ~torch.isin(tokens, self._excluded_ids)
        if self._attention_mask is not None and self._attention_mask.shape == (batch, pos):
            attention = self._attention_mask.to(device, non_blocking=True).bool()
            keep &= attention
            # With left padding the first real token sits after the pads: exclude it too, since
            # it plays position 0's role (attention sink) for that row.
            first_real = attention & ~torch.cat(
                [torch.zeros_like(attention[:, :1]), attention[:, :-1]], dim=1
            )
            keep &= ~first_real
        return keep.reshape(-1)

    def _hook(self, activation: Tensor, hook, name: str) -> None:
        # Keyed by the name asked for: a bridge's hook.name is the canonical one, not the alias.
        self._pending[name] = activation.detach()
        if len(self._pending) < len(self.hook_names):
            return None
        acts = [self._pending[name] for name in self.hook_names]
        self._pending.clear()
        if any(a.ndim != 3 or a.shape[-1] != self.buffer.d_model for a in acts):
            shapes = {name: tuple(a.shape) for name, a in zip(self.hook_names, acts, strict=True)}
            raise ValueError(
                f"capture needs [batch, pos, d_model={self.buffer.d_model}] activations, but the "
                f"hooks gave {shapes}; capture a residual-stream hook such as "
                "'blocks.0.hook_resid_post'."
            )
        batch, pos, d_model = acts[0].shape
        if len(acts) == 1:
            rows = acts[0].reshape(batch * pos, 1, d_model)
        else:
            rows = torch.stack(acts, dim=2).reshape(batch * pos, len(acts), d_model)
        mask = self.row_mask(batch, pos)
        if self.outlier_filter is not None:
            mask = self.outlier_filter(rows, mask)
        self.buffer.push(rows, mask)
        return None

    @contextlib.contextmanager
    def attach(self) -> Iterator[ActivationCapture]:
        """Register the capture hooks; they are removed on exit, even after an exception."""
        pre_hook = self.model.register_forward_pre_hook(self._record_inputs, with_kwargs=True)
        try:
            hooks = [(name, functools.partial(self._hook, name=name)) for name in self.hook_names]
            with self.model.hooks(fwd_hooks=hooks):
                yield self
        finally:
            pre_hook.remove()
            self._pending.clear()
            self._tokens = None
            self._attention_mask = None

    def stats(self) -> CaptureStats:
        dropped_outliers = (
            int(self.outlier_filter.n_dropped) if self.outlier_filter is not None else 0
        )
        return CaptureStats(
            kept=self.buffer.num_pushed,
            excluded_positions=self.buffer.num_masked - dropped_outliers,
            dropped_outliers=dropped_outliers,
            dropped_nonfinite=self.buffer.num_dropped_nonfinite,
        )


def _token_batches(source) -> Iterator[Int[Tensor, "batch ctx"]]:
    if isinstance(source, Tensor):
        if source.ndim != 2 or source.is_floating_point():
            raise ValueError(
                f"source tensor must be integer tokens of shape [batch, ctx], got "
                f"{source.dtype} {tuple(source.shape)}."
            )
        yield source
        return
    if not isinstance(source, Iterable):
        raise TypeError(
            "source must be a [batch, ctx] token tensor, an iterable of them, or a TokenSource; "
            f"got {type(source).__name__}."
        )
    for batch in source:
        if not isinstance(batch, Tensor) or batch.ndim != 2 or batch.is_floating_point():
            raise ValueError(
                "every batch from source must be an integer [batch, ctx] token tensor, got "
                f"{type(batch).__name__} {getattr(batch, 'shape', '')}."
            )
        yield batch


def fill_buffer(
    model: LensModel,
    source: Tensor | Iterable[Tensor],
    hook_names: str | Sequence[str],
    n_activations: int,
    buffer: ActivationRingBuffer | None = None,
    config: CaptureConfig | None = None,
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
    capture: ActivationCapture | None = None,
) -> ActivationRingBuffer:
    """Run ``model`` over ``source`` until ``n_activations`` rows have been added to the buffer.

    Runs under ``torch.inference_mode()`` and stops at the last hooked block. Creates a buffer of
    capacity ``n_activations`` on the model's device when none is given. ``capture`` reuses an
    existing :class:`ActivationCapture` (and its outlier statistics), e.g. when refilling.
    Returns the buffer; raises if the source runs dry before anything was captured.
    """
    hook_names = check_residual_hooks(model, hook_names)
    check_int("n_activations", n_activations, minimum=1)
    d_vocab = getattr(getattr(model, "cfg", None), "d_vocab", None)
    if buffer is None:
        d_model = getattr(getattr(model, "cfg", None), "d_model", None)
        if d_model is None:
            raise ValueError(
                f"{type(model).__name__} has no cfg.d_model to size the buffer from; pass "
                "buffer=ActivationRingBuffer(capacity, d_model, hook_names, device=...)."
            )
        buffer = ActivationRingBuffer(
            n_activations, d_model, hook_names, device=model_device(model), dtype=dtype
        )
    if capture is None:
        capture = ActivationCapture(model, hook_names, buffer, config)
    elif capture.buffer is not buffer:
        raise ValueError("capture was built for another buffer; pass the same buffer.")
    record_source(model, buffer)
    forward_kwargs = {}
    stop = stop_at_layer(hook_names)
    if stop is not None and _accepts_stop_at_layer(model):
        forward_kwargs["stop_at_layer"] = stop
    device = model_device(model)
    start = buffer.num_pushed
    target = start + n_activations
    # Counting kept rows needs a sync; an upper bound counted on the host avoids one per batch.
    upper_bound = start
    # The bar is closed on an error too, so an error message starts on a line of its own.
    bar = tqdm(total=n_activations, desc="capture", unit="act", disable=not progress)
    with bar, torch.inference_mode(), capture.attach():
        for index, tokens in enumerate(_token_batches(source)):
            _check_token_ids(tokens, d_vocab, index)
            model(tokens.to(device, non_blocking=True), **forward_kwargs)
            upper_bound += tokens.shape[0] * (tokens.shape[1] - 1)
            if upper_bound >= target:
                pushed = buffer.num_pushed
                bar.update(pushed - start - bar.n)
                if pushed >= target:
                    break
                upper_bound = pushed
            else:
                bar.update(min(upper_bound, target) - start - bar.n)
    if buffer.num_pushed == start:
        raise ValueError(
            "The source yielded no capturable tokens (empty, or every position excluded)."
        )
    return buffer


def _check_token_ids(tokens: Int[Tensor, "batch ctx"], d_vocab: int | None, index: int) -> None:
    """Refuse token ids outside ``[0, d_vocab)`` before the embedding fails on them.

    Host tensors (every ``TokenSource`` batch) are checked before they move, at no device cost; a
    batch already on the device is checked once, on the first batch, to keep capture sync-free.
    """
    if d_vocab is None or tokens.numel() == 0 or (tokens.device.type != "cpu" and index > 0):
        return
    low, high = (int(v) for v in torch.aminmax(tokens))
    if low < 0 or high >= d_vocab:
        bad = low if low < 0 else high
        raise ValueError(
            f"batch {index} of the source holds token id {bad}, outside the model's vocabulary "
            f"[0, {d_vocab}); the tokens were made by another tokenizer than the model's. "
            "Tokenize with model.tokenizer (or pass text, e.g. --text-file, to the command line)."
        )


def record_source(model: torch.nn.Module, buffer: ActivationRingBuffer) -> None:
    """Record ``model``'s name and weight fingerprint in ``buffer.provenance`` (saved with it).

    A buffer that already holds rows of a model with another fingerprint is refused: its rows
    would mix two models' activations under one label.
    """
    fingerprint = model_fingerprint(model)
    check_same_source(
        "Model fingerprint",
        ("the buffer's rows", buffer.provenance.get(MODEL_FINGERPRINT_KEY)),
        (f"the model {type(model).__name__}", fingerprint),
        "Fill a new buffer for this model.",
    )
    model_name = getattr(getattr(model, "cfg", None), "model_name", None)
    if isinstance(model_name, str) and model_name:
        buffer.provenance[MODEL_NAME_KEY] = model_name
    if fingerprint:
        buffer.provenance[MODEL_FINGERPRINT_KEY] = fingerprint


def _accepts_stop_at_layer(model: torch.nn.Module) -> bool:
    import inspect

    return "stop_at_layer" in inspect.signature(model.forward).parameters
