"""How well the text judge agrees with a reading of the steering benchmark's own generations.

The fixture ``tests/fixtures/labelled_generations.json`` holds 80 sampled continuations of the
steering benchmark (``benchmarks/steer_front.py``; every method and scale), each with its NLL
under the unsteered model and a label, ``fluent`` or ``broken``, given by reading the text alone
(shuffled, without its method, scale or NLL). They were drawn, with ``--draw``, from the texts the
judge passed while its NLL cap was 5 nats, stratified by NLL (10 in (2.5, 3], 15 in (3, 3.5],
20 in (3.5, 4], 20 in (4, 4.5], 15 in (4.5, 5]), because those are the texts the cap decides.

    .venv/bin/python benchmarks/judge_audit.py --out benchmarks/results/judge_audit.md
    .venv/bin/python benchmarks/judge_audit.py --draw    # the unlabelled sample, as drawn

Writes the agreement of the current judge (``evaluate.text_judge.judge_fluency``) with the labels,
and that of each NLL cap from 3 to 5 with the judge's other rules unchanged.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from tl_diffusion_prior.evaluate.text_judge import MAX_FLUENT_NLL, judge_fluency

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "labelled_generations.json"
# The order the sample was drawn in: the draw below reproduces the fixture only in this order.
SOURCES = [
    "steer_front_generated",
    "steer_front_unet",
    "steer_prior_settings",
    "steer_front",
    "steer_front_edit",
    "steer_front_generated_v2",
    "steer_front_v2",
]
BANDS = [(2.5, 3.0, 10), (3.0, 3.5, 15), (3.5, 4.0, 20), (4.0, 4.5, 20), (4.5, 5.0, 15)]
CAPS = [3.0, 3.25, 3.5, 3.75, 4.0, 4.25, 4.5, 5.0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None, help="write the report (markdown) here")
    parser.add_argument("--draw", action="store_true", help="print the sample as it was drawn")
    args = parser.parse_args()
    if args.draw:
        for i, row in enumerate(draw()):
            print(i, repr(row["text"]))
        return
    report = "\n".join(audit(json.loads(FIXTURE.read_text()))) + "\n"
    print(report)
    if args.out:
        Path(args.out).write_text(report)


def passed_with_the_old_cap(text: str, nll: float) -> bool:
    """Whether the judge before 2026-12-01 (NLL cap 5, no repeated-2-gram rule) passed it."""
    judgement = judge_fluency(text, nll, max_nll=5.0)
    return all(reason.endswith("repeated 2-grams") for reason in judgement.reasons)


def draw(seed: int = 12) -> list[dict]:
    rows = []
    for source in SOURCES:
        for line in (ROOT / "benchmarks" / "results" / source / "items.jsonl").open():
            row = json.loads(line)
            if passed_with_the_old_cap(row["text"], row["nll"]):
                rows.append({**row, "source": source})
    rng = random.Random(seed)
    seen: set[str] = set()
    picked: list[dict] = []
    for low, high, count in BANDS:
        band = [r for r in rows if low < r["nll"] <= high and r["text"] not in seen]
        taken = 0
        for row in rng.sample(band, 2 * count):
            if row["text"] in seen or taken == count:
                continue
            seen.add(row["text"])
            picked.append(row)
            taken += 1
    rng.shuffle(picked)
    return picked


def audit(rows: list[dict]) -> list[str]:
    broken = [r["label"] == "broken" for r in rows]
    lines = [
        f"# The text judge against {len(rows)} hand-labelled steered generations",
        "",
        f"{sum(broken)} labelled broken, {len(rows) - sum(broken)} fluent "
        f"(`{FIXTURE.relative_to(ROOT)}`; see `benchmarks/judge_audit.py`).",
        "",
        "| NLL cap | agrees with the labels | broken texts passed | fluent texts failed |",
        "|---|---|---|---|",
    ]
    for cap in CAPS:
        passed = [judge_fluency(r["text"], r["nll"], max_nll=cap).fluent for r in rows]
        lines.append(
            _row(f"{cap:g}" + (" (the judge's)" if cap == MAX_FLUENT_NLL else ""), passed, broken)
        )
    return lines


def _row(name: str, passed: list[bool], broken: list[bool]) -> str:
    agree = sum(p != b for p, b in zip(passed, broken, strict=True)) / len(passed)
    broken_passed = sum(p and b for p, b in zip(passed, broken, strict=True))
    fluent_failed = sum(not p and not b for p, b in zip(passed, broken, strict=True))
    return (
        f"| {name} | {agree:.0%} | {broken_passed} of {sum(broken)} | "
        f"{fluent_failed} of {len(broken) - sum(broken)} |"
    )


if __name__ == "__main__":
    main()
