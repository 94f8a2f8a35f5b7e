"""Every ```python block of the README runs, so the first code a newcomer copies cannot silently
break or print junk.

The blocks run in order in one namespace, with stdout captured. By default they run at quick size:
``fill_buffer`` captures at most :data:`QUICK_ACTIVATIONS` rows and ``TrainConfig`` trains at most
:data:`QUICK_STEPS` steps (the real functions, patched on the package for the test), so a barely
trained prior is used and its text is not judged. ``TL_DIFFUSION_PRIOR_README_FULL=1`` runs them at
the README's own sizes (minutes on a CPU) and then requires every printed line of generated text to
pass the text judge (:func:`~tl_diffusion_prior.evaluate.text_judge.judge_fluency`), and every
line of a ```text block that follows the code (the output the README shows) to be printed.
``TL_DIFFUSION_PRIOR_README=path`` reads another Markdown file (to try a new README text).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

import pytest

import tl_diffusion_prior as tdp
from tests.lens_kinds import MODEL_KIND
from tl_diffusion_prior.evaluate.text_judge import judge_fluency

README = Path(
    os.environ.get("TL_DIFFUSION_PRIOR_README", Path(__file__).parent.parent / "README.md")
)
FULL = os.environ.get("TL_DIFFUSION_PRIOR_README_FULL", "") not in ("", "0")
QUICK_ACTIVATIONS = 2_000
QUICK_STEPS = 20
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.DOTALL | re.MULTILINE)


def readme_blocks(text: str) -> list[tuple[str, str | None]]:
    """Each ```python block's code and the ```text block right after it (None if there is none)."""
    fences = [(m.group(1), m.group(2), m.start(), m.end()) for m in FENCE.finditer(text)]
    blocks = []
    for i, (language, code, _, end) in enumerate(fences):
        if language != "python":
            continue
        output = None
        if i + 1 < len(fences):
            next_language, next_code, next_start, _ = fences[i + 1]
            if next_language == "text" and not text[end:next_start].strip():
                output = next_code
        blocks.append((code, output))
    return blocks


def test_readme_blocks_are_found():
    text = "a\n```python\nx = 1\n```\n\n```text\n1\n```\n```bash\nls\n```\n```python\ny\n```\n"
    assert readme_blocks(text) == [("x = 1\n", "1\n"), ("y\n", None)]
    assert readme_blocks(README.read_text()), f"{README} has no ```python block"


def _quick_size(monkeypatch) -> None:
    fill_buffer, train_config = tdp.fill_buffer, tdp.TrainConfig

    def small_fill_buffer(model, source, hooks, n_activations, *args, **kwargs):
        n_activations = min(n_activations, QUICK_ACTIVATIONS)
        return fill_buffer(model, source, hooks, n_activations, *args, **kwargs)

    def small_train_config(**kwargs):
        kwargs["steps"] = min(kwargs.get("steps", QUICK_STEPS), QUICK_STEPS)
        return train_config(**kwargs)

    monkeypatch.setattr(tdp, "fill_buffer", small_fill_buffer)
    monkeypatch.setattr(tdp, "TrainConfig", small_train_config)


def _generated_lines(printed: str) -> list[str]:
    """The printed lines that hold text (not numbers, shapes or reprs)."""
    return [line for line in printed.splitlines() if re.search(r"[A-Za-z]{3,}", line)]


@pytest.mark.slow
def test_readme_python_blocks_run(default_model, monkeypatch):
    load_default_model = tdp.load_default_model

    def loaded_once(*args, kind=None, **kwargs):  # the session's model, unless another kind
        if kind in (None, MODEL_KIND):
            return default_model
        return load_default_model(*args, kind=kind, **kwargs)

    monkeypatch.setattr(tdp, "load_default_model", loaded_once)
    if not FULL:
        _quick_size(monkeypatch)
    namespace: dict = {"__name__": "__readme__"}
    for index, (code, shown) in enumerate(readme_blocks(README.read_text())):
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(code, f"{README.name} python block {index}", "exec"), namespace)
        print(printed.getvalue())  # shown by pytest -s / on failure
        if not FULL:
            continue
        for line in _generated_lines(printed.getvalue()):
            judgement = judge_fluency(line)
            assert judgement.fluent, f"block {index} printed {line!r}: {judgement.reasons}"
        if shown is not None:
            missing = [line for line in shown.splitlines() if line not in printed.getvalue()]
            assert not missing, (
                f"block {index} printed\n{printed.getvalue()}\nbut {README.name} shows\n{shown}"
            )
