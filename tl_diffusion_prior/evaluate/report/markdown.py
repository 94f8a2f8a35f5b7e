"""The Markdown summary of an :class:`~tl_diffusion_prior.evaluate.report.types.EvalReport`.

``render_markdown`` joins one block of lines per section: benchmark targets and caveats, held-out
data, delta LM per data set, best settings, Frechet distances, steering, figures and settings.
"""

from __future__ import annotations

from pathlib import Path

from tl_diffusion_prior.evaluate.report.sections import (
    ci_text,
    per_source_lines,
    resolution_lines,
    sae_convergence_lines,
)
from tl_diffusion_prior.evaluate.report.types import EvalReport

CAVEATS = [
    "Restoration names its protocol: 'matched t' (the priors and the Wiener filter start at the "
    "level t = s / (1 + s) the noisy input already sits at, adding no noise) is the headline; "
    "'round trip' (the paper's: noise the noisy input again to the headline t, then denoise) "
    "throws that knowledge away and is shown for comparison.",
    "At t <= 0.25 the noise-then-denoise round trip is close to the identity for every method; "
    "a small delta LM there means little without the same-t Gaussian posterior row next to it.",
    "Frechet distance only sees means and covariances: the Gaussian fit reaches the floor by "
    "construction, so FD says nothing about structure beyond second order.",
    "Positions 0 and rows whose norm exceeds the outlier multiple of the median are never patched "
    "(the capture filter keeps them out of training too).",
    "A delta-LM ratio's bracket is its own 95% interval, paired: both methods' deltas on the same "
    "windows, resampled together by document. It is narrower than dividing the two figures' own "
    "intervals, which would ignore that a window hard for one method is hard for the other.",
]


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _share(fraction) -> str:
    return "n/a" if fraction is None else f"{fraction:.0%}"


def _target_lines(targets: dict) -> list[str]:
    lines = []

    def ratio_line(title: str, entry: dict) -> None:
        if entry.get("ratio") is None:
            lines.append(f"- **{title}**: not computed ({entry.get('reason', 'missing')}).")
            return
        target = entry.get("target")
        verdict = (
            ""
            if target is None
            else (f" (target <= {target}: **{'met' if entry['met'] else 'NOT met'}**)")
        )
        num, den = entry["numerator"], entry["denominator"]
        lines.append(
            f"- **{title}**: {entry['ratio']:.3f}{_interval(entry.get('ratio_ci'))}{verdict} = "
            f"{num['label']} {num['delta_lm']:.4f} [{num['ci'][0]:.4f}, {num['ci'][1]:.4f}] / "
            f"{den['label']} {den['delta_lm']:.4f} [{den['ci'][0]:.4f}, {den['ci'][1]:.4f}]"
        )

    ratio_line(
        "(a) restoration, held-out, matched t: best prior / best baseline",
        targets.get("a_restoration_heldout", {}),
    )
    if "a_round_trip_heldout" in targets:
        ratio_line(
            "(a') restoration, held-out, the paper's round trip: best prior / best baseline",
            targets["a_round_trip_heldout"],
        )
    for key, entry in targets.items():
        if key.startswith("a_restoration_") and key.endswith("_vs_noise"):
            name = key.removeprefix("a_restoration_").removesuffix("_vs_noise")
            ratio_line(f"(a) restoration on `{name}`: best prior / noise left alone", entry)
            ratio_line(
                f"(a) restoration on `{name}`: best prior / best baseline",
                targets.get(f"a_restoration_{name}_vs_baselines", {}),
            )
    ratio_line(
        "(b) reconstruction at the headline t: prior / best SAE",
        targets.get("b_reconstruction_vs_sae", {}),
    )
    for prior, refs in targets.get("b_equal_distortion", {}).items():
        for ref, comp in refs.items():
            at = comp.get("at_prior_t") or {}
            lines.append(
                f"- **(b) equal distortion, {prior} vs {ref}**: below on "
                f"{_share(comp['fraction_below'])} of {comp['n_compared']} grid points of the "
                f"overlap {comp['range'] and [round(v, 3) for v in comp['range']]}; at the "
                f"prior's headline-t distortion {_fmt(at.get('distortion'), 3)}: prior "
                f"{_fmt(at.get('prior'))} vs {ref} {_fmt(at.get('reference'))}."
            )
    for name, entry in targets.get("c_frechet", {}).items():
        lines.append(
            f"- **(c) normalised FD / floor, {name}**: {entry['normalized_ratio']:.3f}"
            f"{_interval(entry.get('interval'))} (target <= "
            f"{entry['target']}: **{'met' if entry['met'] else 'NOT met'}**); raw-space ratio "
            f"{entry['raw_ratio']:.3f}"
            + (
                "."
                if entry.get("reliable", True)
                else f" (UNRELIABLE: only {entry.get('n_samples')} samples, see caveats)."
            )
        )
    return lines


def render_markdown(report: EvalReport, figures: dict[str, Path]) -> str:
    """``report.md``: every section of ``report``, linking the ``figures`` (paths relative to the
    report folder; only the ``.png`` ones are listed)."""
    out = _summary_lines(report)
    out += _dataset_lines(report)
    out += resolution_lines(report)
    out += per_source_lines(report)
    out += sae_convergence_lines(report)
    out += _delta_lm_lines(report)
    out += _best_setting_lines(report)
    out += _frechet_lines(report.frechet)
    out += _steering_lines(report)
    out += ["", "## Figures", ""]
    out += [
        f"- {name}: ![{name}]({path.as_posix()})"
        for name, path in figures.items()
        if path.suffix == ".png"
    ]
    out += [
        "",
        "## Settings",
        "",
        "```",
        *[f"{k}: {v}" for k, v in report.settings.items()],
        "```",
        "",
    ]
    return "\n".join(out)


def _summary_lines(report: EvalReport) -> list[str]:
    """Title, run time, the benchmark targets and the caveats that qualify them."""
    out = [f"# Evaluation report: {report.model_name} `{report.hook_name}`", ""]
    out.append(
        f"Created {report.created}; total time {report.timings.get('total_s', 0):.0f} s. "
        "Every number and the settings that produced it are in `report.json`."
    )
    out += ["", "## Benchmark targets", ""]
    out += _target_lines(report.targets) or ["- no priors evaluated"]
    caveats = list(CAVEATS)
    d_model = report.baselines[0]["config"]["d_model"] if report.baselines else None
    n_fd = (report.frechet or {}).get("floor", {}).get("n")
    if d_model and n_fd and n_fd < 20 * d_model:
        caveats.append(
            f"The Frechet distances use {n_fd} samples in {d_model} dimensions: finite-sample "
            "bias dominates them and compresses every ratio towards 1 (use n_fd_samples >= "
            f"{20 * d_model} for target (c); the paper used 50,000)."
        )
    out += ["", "Caveats:", *[f"- {c}" for c in caveats], ""]
    return out


def _dataset_lines(report: EvalReport) -> list[str]:
    out = [
        "## Held-out data",
        "",
        "| set | windows | documents | tokens patched | outliers unpatched | clean loss |",
        "|---|---|---|---|---|---|",
    ]
    for name, d in report.datasets.items():
        out.append(
            f"| {name} | {d['n_windows']} | {d['n_documents']} | {d['n_patched_tokens']} "
            f"| {d['n_outliers_unpatched']} | {d['clean_loss']:.4f} |"
        )
    return out


def _delta_lm_lines(report: EvalReport) -> list[str]:
    """One table per data set, conditions in the order they were measured."""
    out: list[str] = []
    conditions = list(dict.fromkeys(r.condition for r in report.results))
    for dataset in report.datasets:
        out += ["", f"## Delta LM on `{dataset}`", ""]
        out += [
            "| condition | method | setting | delta LM | 95% CI | rel. error raw | "
            "rel. error norm. |",
            "|---|---|---|---|---|---|---|",
        ]
        for condition in conditions:
            for r in report.results:
                if r.dataset != dataset or r.condition != condition:
                    continue
                extra = r.extra.get("steer_retained")
                setting = ", ".join(f"{k}={v}" for k, v in r.setting.items()) or "-"
                if extra is not None:
                    setting += f"; steer retained {extra:.2f}"
                out.append(
                    f"| {condition} | {r.method} | {setting} | {r.delta_lm.mean:.4f} | "
                    f"[{r.delta_lm.low:.4f}, {r.delta_lm.high:.4f}] | {r.rel_error_raw:.3f} | "
                    f"{r.rel_error_normalized:.3f} |"
                )
    return out


def _best_setting_lines(report: EvalReport) -> list[str]:
    out = [
        "",
        "## Best setting per method",
        "",
        "| data set | condition | method | chosen setting | delta LM | why |",
        "|---|---|---|---|---|---|",
    ]
    for entry in report.best_settings.values():
        if entry["method"] == "identity":
            continue
        out.append(
            f"| {entry['dataset']} | {entry['condition']} | {entry['method']} | "
            f"{entry['setting']} | {entry['delta_lm']:.4f} | {entry['why']} |"
        )
    return out


def _frechet_lines(fd: dict) -> list[str]:
    """The Frechet-distance table; nothing when the report has no Frechet section."""
    if not fd:
        return []
    floor = fd["floor"]
    out = [
        "",
        "## Frechet distance to held-out activations",
        "",
        f"Floor (train vs held-out, n={floor['n']}): raw {floor['raw']:.4g}, normalised "
        f"{floor['normalized']:.4g}.",
        "",
        "| samples | n | FD raw | x floor | FD normalised | x floor |",
        "|---|---|---|---|---|---|",
    ]
    for row in fd["results"]:
        out.append(
            f"| {row['name']} | {row['n']} | {row['raw']:.4g} | {row['raw_ratio']:.2f} "
            f"| {row['normalized']:.4g} | {row['normalized_ratio']:.2f}"
            f"{_interval(row.get('normalized_ratio_ci'), 2)} |"
        )
    if any(row.get("normalized_ratio_ci") for row in fd["results"]):
        out += [
            "",
            "Intervals (the priors' samples): 95% bootstrap over the samples, the floor's "
            "training rows and the held-out windows, resampled together.",
        ]
    return out


def _interval(ci: dict | None, digits: int = 3) -> str:
    """`` [low, high]`` of a confidence-interval dict; nothing when there is none."""
    return "" if ci is None else f" [{ci['low']:.{digits}f}, {ci['high']:.{digits}f}]"


def _steering_lines(report: EvalReport) -> list[str]:
    out = ["", "## Steering", ""]
    if report.steering is None:
        out.append("Steering curves were not run (`steer_curve_scales` was empty).")
        return out
    curves = report.steering
    out += [
        "Greedy continuations steered towards each concept at relative scale r. Concept lift: "
        "log-probability of the concept's words vs the unsteered continuation (higher is more "
        "on-concept); NLL: the continuation under the unsteered model (lower is more fluent). "
        "95% bootstrap intervals over (concept, prompt) pairs; * marks the Pareto front.",
        "",
        "| method | r | concept lift | NLL | n |",
        "|---|---|---|---|---|",
    ]
    for i, p in sorted(enumerate(curves.points), key=lambda ip: (ip[1].method, ip[1].scale)):
        star = " *" if i in curves.front else ""
        out.append(
            f"| {p.method}{star} | {p.scale:g} | {ci_text(p.concept)} | "
            f"{ci_text(p.fluency)} | {p.n} |"
        )
    return out
