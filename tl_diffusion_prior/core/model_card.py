"""The model card (``README.md``) that ``save_pretrained`` writes beside a prior's weights.

A saved prior uploaded to the Hugging Face Hub as it is needs a card that says what it models and
where it came from: the source model and hook, the design and its size, the file format, what
training recorded and, for a converted checkpoint, the original. Everything in it is read from the
config and the training record, so the card never disagrees with the files; it is informational
and not read back on load.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from tl_diffusion_prior.constants import (
    CHECKSUMS_NAME,
    CONFIG_NAME,
    FORMAT_VERSION,
    TRAINING_RECORD_NAME,
    WEIGHTS_NAME,
)

# Training-record values longer than this are cut in the card (the record file has them whole).
_MAX_VALUE_CHARS = 300


def _value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= _MAX_VALUE_CHARS else text[: _MAX_VALUE_CHARS - 3] + "..."


def _front_matter(model_name: str) -> list[str]:
    lines = ["---", "library_name: tl-diffusion-prior", "tags:"]
    lines += [f"- {tag}" for tag in ("transformer-lens", "diffusion-prior", "activations")]
    if "/" in model_name:  # a hub id: the Hub links the card to the source model
        lines.append(f"base_model: {model_name}")
    return [*lines, "---", ""]


def _table(rows: Mapping[str, Any]) -> list[str]:
    return ["| | |", "|-|-|", *(f"| {k} | {_value(v)} |" for k, v in rows.items()), ""]


def build_model_card(
    config: Mapping[str, Any],
    registry_key: str,
    training_record: Mapping[str, Any],
    num_parameters: int,
    what: str = "prior",
) -> str:
    """The card's markdown for a module with this config (``to_dict()``) and training record."""
    model_name = str(config.get("model_name") or "unknown model")
    hook_name = str(config.get("hook_name") or "unknown hook")
    design = config.get(registry_key)
    lines = _front_matter(model_name)
    lines += [
        f"# {design} diffusion {what} for `{hook_name}` of {model_name}",
        "",
        f"A `{design}` {what} of tl_diffusion_prior (a TransformerLens plugin) over single "
        f"residual-stream vectors at the TransformerLens hook `{hook_name}` of `{model_name}`: "
        "it denoises, samples and projects activations back onto their manifold (on-manifold "
        "steering).",
        "",
        "## Provenance",
        "",
    ]
    rows = {
        "Source model": model_name,
        "Hook (TransformerLens)": hook_name,
        "Activation size (d_model)": config.get("d_model"),
        f"Design ({registry_key})": design,
        "Parameters": f"{num_parameters:,}",
    }
    source = training_record.get("source")
    if isinstance(source, Mapping):
        rows.update({f"Converted from ({k})": v for k, v in source.items()})
    lines += _table(rows)
    lines += ["## Training", ""]
    scalars = {k: v for k, v in training_record.items() if k != "source"}
    if scalars:
        lines += [f"As recorded in `{TRAINING_RECORD_NAME}` (long values cut here):", ""]
        lines += _table(dict(sorted(scalars.items())))
    else:
        lines += ["No training record was saved with this prior.", ""]
    lines += [
        "## Format",
        "",
        f"tl_diffusion_prior `save_pretrained` format, version {FORMAT_VERSION}: `{CONFIG_NAME}` "
        f"(the constructor's config), `{WEIGHTS_NAME}` (weights and normaliser statistics), "
        f"`{TRAINING_RECORD_NAME}` (what training recorded), `{CHECKSUMS_NAME}` (sha256 of the "
        "weights, checked on load). No file is a pickle.",
        "",
        "## Usage",
        "",
        "```python",
        "from tl_diffusion_prior import load_prior",
        "",
        'prior = load_prior("<this folder, or org/name on the Hugging Face Hub>")',
        "```",
        "",
        "## Config",
        "",
        "```json",
        json.dumps(dict(config), indent=2, sort_keys=True),
        "```",
        "",
    ]
    return "\n".join(lines)
