"""Report sections on the measurement itself: its resolution, per-source figures, SAE convergence.

Kept apart from ``markdown.py`` (the method tables) so that each renderer stays small; each
function takes the :class:`~tl_diffusion_prior.evaluate.report.types.EvalReport` and returns
Markdown lines (none when the report has nothing for the section).
"""

from __future__ import annotations

from tl_diffusion_prior.evaluate.fidelity import FidelityResult
from tl_diffusion_prior.evaluate.report.types import EvalReport

__all__ = ["ci_text", "per_source_lines", "resolution_lines", "sae_convergence_lines"]


def resolution_lines(report: EvalReport) -> list[str]:
    """The smallest differences in delta LM the run resolves, per data set and condition."""
    if not report.resolution:
        return []
    out = [
        "",
        "## What this run can resolve",
        "",
        "Half-widths of 95% bootstrap intervals, in nats of delta LM. *Paired*: the interval of "
        "the difference between two methods on the same windows (every pair of methods); two "
        "methods that differ by more than the median are told apart for a typical pair. "
        "*One figure*: the interval of a single method's delta LM (median over methods).",
        "",
        "| data set | condition | paired, median | paired, max | pairs | one figure, median |",
        "|---|---|---|---|---|---|",
    ]
    for dataset, conditions in report.resolution.items():
        for condition, entry in conditions.items():
            out.append(
                f"| {dataset} | {condition} | {entry['paired_median']:.4f} | "
                f"{entry['paired_max']:.4f} | {entry['n_pairs']} | "
                f"{entry['unpaired_median']:.4f} |"
            )
    return out


def _per_source_rows(report: EvalReport, dataset: str, condition: str) -> list[FidelityResult]:
    """Each method's best setting on the pooled ``dataset`` under ``condition``."""
    rows = []
    for entry in report.best_settings.values():
        if entry["dataset"] != dataset or entry["condition"] != condition:
            continue
        if entry["method"] == "identity" and condition == "reconstruct":
            continue
        rows += [
            r
            for r in report.results
            if r.dataset == dataset
            and r.condition == condition
            and r.method == entry["method"]
            and r.setting == entry["setting"]
            and r.per_group
        ]
    return rows


def per_source_lines(report: EvalReport) -> list[str]:
    """Delta LM per corpus source for each method's best setting, reconstruction and the
    headline restoration, on every data set whose windows carry source labels."""
    noise = f"noise std={report.settings.get('headline_noise_std', 1.0):g}"
    out: list[str] = []
    for dataset, info in report.datasets.items():
        sources = list(info.get("windows_per_group") or {})
        if not sources:
            continue
        out += ["", f"## Delta LM per source of `{dataset}`", ""]
        out.append(
            "Each method at its best setting on the pooled set; mean [95% interval] over each "
            "source's windows ("
            + ", ".join(f"{s}: {n}" for s, n in info["windows_per_group"].items())
            + ")."
        )
        for condition in ("reconstruct", noise):
            rows = _per_source_rows(report, dataset, condition)
            if not rows:
                continue
            out += ["", f"**{condition}**", ""]
            out.append("| method | setting | " + " | ".join(sources) + " |")
            out.append("|---|---|" + "---|" * len(sources))
            for r in rows:
                cells = [ci_text(r.per_group[s]) if s in r.per_group else "n/a" for s in sources]
                setting = ", ".join(f"{k}={v}" for k, v in r.setting.items()) or "-"
                out.append(f"| {r.method} | {setting} | " + " | ".join(cells) + " |")
    return out


def ci_text(interval) -> str:
    """``mean [low, high]`` of a confidence interval, three decimals."""
    return f"{interval.mean:.3f} [{interval.low:.3f}, {interval.high:.3f}]"


def _fmt(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return "n/a" if value is None else str(value)


def sae_convergence_lines(report: EvalReport) -> list[str]:
    """Each SAE baseline's convergence record (samples seen, held-out NMSE, dead latents...)."""
    records = [
        (b["name"], b.get("training", {}).get("convergence"))
        for b in report.baselines
        if b["name"] != "gaussian"
    ]
    records = [(name, rec) for name, rec in records if isinstance(rec, dict)]
    if not records:
        return []
    keys = list(dict.fromkeys(k for _, rec in records for k in rec if k != "criterion"))
    out = ["", "## SAE baselines: convergence", ""]
    criteria = {rec.get("criterion") for _, rec in records} - {None}
    if criteria:
        out += [f"Stopping rule: {c}" for c in sorted(criteria)] + [""]
    out.append("| SAE | " + " | ".join(keys) + " |")
    out.append("|---|" + "---|" * len(keys))
    for name, rec in records:
        out.append(f"| {name} | " + " | ".join(_fmt(rec.get(k)) for k in keys) + " |")
    return out
