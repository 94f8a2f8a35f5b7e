"""Producer-consumer refills: keep a long run fed with fresh activations.

Every ``refill_every`` steps the trainer calls ``refill(n_rows)``, which runs the model over the
next token batches and pushes their activations into the same ring buffer, overwriting its oldest
rows. The refill's position (the token source's ``state_dict()``) and the capture's outlier
statistics are saved in every checkpoint, so a resumed run refills with exactly the same tokens."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import torch
from torch import Tensor

from tl_diffusion_prior.capture.buffer import ActivationRingBuffer
from tl_diffusion_prior.capture.capture import ActivationCapture, CaptureConfig, fill_buffer


class StatefulTokenSource(Protocol):
    """What a refill needs from a token source: batches, and a JSON-able position."""

    def __iter__(self): ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class BufferRefill:
    """A ``refill(n_rows)`` callable that captures the next tokens' activations into ``buffer``.

    Args:
        model: the TransformerLens model the buffer's activations come from.
        token_source: yields ``[batch, ctx]`` token tensors and exposes ``state_dict()`` /
            ``load_state_dict()`` (a :mod:`tl_diffusion_prior.data.token_source` source does).
        hook_names: the hooks the buffer holds.
        buffer: the ring buffer to write into.
        capture: the :class:`ActivationCapture` that filled the buffer initially; passing it keeps
            its outlier statistics continuous. Built fresh when None.
        capture_config: used only when ``capture`` is None.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        token_source: Iterable[Tensor],
        hook_names: str | Sequence[str],
        buffer: ActivationRingBuffer,
        capture: ActivationCapture | None = None,
        capture_config: CaptureConfig | None = None,
    ) -> None:
        self.model = model
        self.token_source = token_source
        self.hook_names = [hook_names] if isinstance(hook_names, str) else list(hook_names)
        self.buffer = buffer
        if capture is None:
            capture = ActivationCapture(model, self.hook_names, buffer, capture_config)
        elif capture.buffer is not buffer:
            raise ValueError("capture was built for another buffer; pass the training buffer's.")
        self.capture = capture
        self.n_refills = 0
        self.rows_pushed = 0

    def __call__(self, n_rows: int) -> int:
        """Capture at least ``n_rows`` new rows (whole batches); returns the rows pushed."""
        before = self.buffer.num_pushed
        fill_buffer(
            self.model,
            self.token_source,
            self.hook_names,
            n_rows,
            buffer=self.buffer,
            capture=self.capture,
            progress=False,
        )
        pushed = self.buffer.num_pushed - before
        self.n_refills += 1
        self.rows_pushed += pushed
        return pushed

    def state_dict(self) -> dict[str, Any]:
        """Position and filter state: tensors are saved to safetensors, the rest to JSON."""
        state: dict[str, Any] = {
            "n_refills": self.n_refills,
            "rows_pushed": self.rows_pushed,
            "token_source": _source_state(self.token_source),
        }
        outliers = self.capture.outlier_filter
        if outliers is not None:
            state["outlier_histogram"] = outliers.histogram
            state["outlier_n_dropped"] = outliers.n_dropped
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.n_refills = int(state["n_refills"])
        self.rows_pushed = int(state["rows_pushed"])
        if state.get("token_source") is not None:
            self.token_source.load_state_dict(state["token_source"])
        outliers = self.capture.outlier_filter
        if outliers is not None and "outlier_histogram" in state:
            outliers.histogram.copy_(state["outlier_histogram"].to(outliers.histogram.device))
            outliers.n_dropped.copy_(state["outlier_n_dropped"].to(outliers.n_dropped.device))


def _source_state(source: Any) -> dict[str, Any] | None:
    state_dict = getattr(source, "state_dict", None)
    if state_dict is None:
        raise TypeError(
            f"token_source ({type(source).__name__}) has no state_dict(); a resumable refill "
            "needs a source whose position can be saved, e.g. tl_diffusion_prior.data.token_source."
        )
    return state_dict()


def make_refill(
    model: torch.nn.Module,
    token_source: Iterable[Tensor],
    hook_names: str | Sequence[str],
    buffer: ActivationRingBuffer,
    capture: ActivationCapture | None = None,
) -> BufferRefill:
    """Build the ``refill`` callable for :func:`~tl_diffusion_prior.train_prior`."""
    if not hasattr(token_source, "state_dict") or not hasattr(token_source, "load_state_dict"):
        raise TypeError(
            f"token_source must expose state_dict()/load_state_dict() so its position can be "
            f"checkpointed; got {type(token_source).__name__}."
        )
    return BufferRefill(model, token_source, hook_names, buffer, capture=capture)
