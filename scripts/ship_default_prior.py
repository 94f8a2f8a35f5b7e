"""Package a prior trained by ``tl-diffusion-prior train`` as the shipped default prior.

Stores the weights in bfloat16 (so the file stays under 32 MB) in
``tl_diffusion_prior/priors/default_prior/``, after measuring on held-out corpus rows that this
does not change the loss: the held-out loss of the float32 weights and of the bfloat16-rounded
ones, with the same noise, are printed and added to the prior's training record (``shipped``),
with the in-sample Gaussian reference of the same rows.

    .venv/bin/python scripts/ship_default_prior.py --trained /tmp/default_prior --overwrite

The shipped prior already in the package is replaced only with ``--overwrite`` (checked before
anything loads), and only by a complete folder within the size limit: the new one is built and
measured next to it first.

A run resumed from a checkpoint written before checkpoints kept each session's command records
only the steps of its earlier sessions; ``--earlier-session DIR`` (the prior an earlier session
saved, oldest first) puts that session's own record in their place, so the shipped record holds
every command that trained the weights.
"""

from __future__ import annotations

import argparse
import copy
import os
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from tl_diffusion_prior.cli.common import is_prior_dir
from tl_diffusion_prior.constants import LOSS_CSV_NAME, TRAINING_RECORD_NAME, WEIGHTS_NAME
from tl_diffusion_prior.core.paths import check_output_dir, set_aside
from tl_diffusion_prior.core.serialization import read_json
from tl_diffusion_prior.data import load_default_model
from tl_diffusion_prior.priors import load_prior
from tl_diffusion_prior.priors.default_prior import DEFAULT_PRIOR_DIR
from tl_diffusion_prior.recipes import capture_corpus
from tl_diffusion_prior.training import TrainConfig
from tl_diffusion_prior.training.gaussian_reference import gaussian_reference
from tl_diffusion_prior.training.validation import validation_loss

MAX_BYTES = 32 * 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trained", required=True, help="the prior directory train wrote")
    parser.add_argument("--heldout-rows", type=int, default=16_384)
    parser.add_argument(
        "--earlier-session",
        action="append",
        default=[],
        metavar="DIR",
        help="the prior an earlier session of a resumed run saved (repeat, oldest first)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_PRIOR_DIR, help="the package's folder")
    parser.add_argument("--overwrite", action="store_true", help="replace the prior at --out")
    args = parser.parse_args()
    out = check_output_dir(
        args.out, overwrite=args.overwrite, what="--out (the shipped prior)", is_ours=is_prior_dir
    )

    prior = load_prior(args.trained, dtype=torch.float32)
    record = _with_earlier_sessions(prior.training_record, args.earlier_session)
    model = load_default_model()
    ctx = int(prior.training_record.get("ctx", 128))
    buffer, _, _ = capture_corpus(model, "heldout", args.heldout_rows, ctx, prior.config.hook_name)
    rows = buffer.filled_rows(0).float()
    scoring = TrainConfig(autocast="off", batch_size=1024, seed=0, progress=False)
    rounded = copy.deepcopy(prior).to(torch.bfloat16).float()
    losses = {
        "float32": validation_loss(prior, rows, scoring, torch.device("cpu")),
        "bfloat16": validation_loss(rounded, rows, scoring, torch.device("cpu")),
    }
    reference = gaussian_reference(prior, rows).loss
    print(
        f"held-out loss ({len(rows):,} rows): float32 weights {losses['float32']:.5f}, bfloat16 "
        f"weights {losses['bfloat16']:.5f}; in-sample Gaussian reference {reference:.5f}"
    )
    shipped = copy.deepcopy(prior).to(torch.bfloat16)
    shipped.record_training(
        {
            **record,
            "shipped": {
                "command": shlex.join(["python", *sys.argv]),
                "stored_dtype": "bfloat16",
                "heldout_rows": len(rows),
                "heldout_loss_float32_weights": losses["float32"],
                "heldout_loss_bfloat16_weights": losses["bfloat16"],
                "heldout_in_sample_gaussian_reference": reference,
            },
        }
    )
    with tempfile.TemporaryDirectory(dir=out.parent) as staging:
        staged = Path(staging) / out.name
        shipped.save_pretrained(staged)
        # The loss curve of the whole run (every session), for readers of the package.
        if (Path(args.trained) / LOSS_CSV_NAME).is_file():
            shutil.copyfile(Path(args.trained) / LOSS_CSV_NAME, staged / LOSS_CSV_NAME)
        size = (staged / WEIGHTS_NAME).stat().st_size
        if size > MAX_BYTES:
            raise SystemExit(
                f"{WEIGHTS_NAME} would be {size / 2**20:.1f} MiB, over the 32 MiB limit; "
                f"{out} is unchanged."
            )
        with set_aside(out):
            os.replace(staged, out)
    print(f"saved to {out} ({size / 2**20:.1f} MiB)")


def _with_earlier_sessions(record: dict, earlier_dirs: list[str]) -> dict:
    """``record`` with ``earlier_sessions`` filled from the records the earlier sessions saved.

    Each earlier session trained from the step where the one before it ended to the step its own
    record reached (its checkpoint, which the next session resumed)."""
    if not earlier_dirs:
        return record
    sessions, from_step = [], 0
    for directory in earlier_dirs:
        earlier = read_json(Path(directory) / TRAINING_RECORD_NAME)
        sessions.append({"from_step": from_step, "to_step": earlier["steps"], **earlier})
        from_step = earlier["steps"]
    # A record that has its earlier sessions' step range must end where the given ones end.
    resumed_at = record.get("earlier_sessions", [{}])[-1].get("to_step", from_step)
    if resumed_at != from_step:
        raise SystemExit(
            f"The earlier sessions end at step {from_step}, but the run resumed at step "
            f"{resumed_at}: pass the prior saved by the session it resumed."
        )
    return {**record, "earlier_sessions": sessions}


if __name__ == "__main__":
    main()
