"""Run by tests/core/test_distributed.py under ``torchrun --nproc_per_node 2`` (gloo, CPU).

Each rank pushes its own synthetic rows into its own buffer and starts from a different random
initialisation. Three tiny runs: uninterrupted; interrupted by a simulated crash; resumed. Each rank
writes its final weights and normalisation to ``<out>/<run>_rank<r>.safetensors`` for the test to
compare.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[2]))
from tests.priors.helpers import build_tiny_prior  # noqa: E402
from tests.training.helpers import filled_buffer, tiny_config, tiny_prior  # noqa: E402
from tl_diffusion_prior.core import distributed  # noqa: E402
from tl_diffusion_prior.core.serialization import atomic_save_safetensors  # noqa: E402
from tl_diffusion_prior.training.trainer import train_prior  # noqa: E402


class SimulatedCrash(RuntimeError):
    pass


def run(out: Path, name: str, rank: int, crash_at: int | None = None):
    # Different data and different initial weights on each rank.
    buffer = filled_buffer(n=200 + 100 * rank, capacity=400, seed=10 + rank)
    prior = tiny_prior(seed=100 + rank)
    config = tiny_config(steps=8, checkpoint_dir=str(out / name), eval_every=4)

    def callback(done):
        if crash_at is not None and done == crash_at:
            raise SimulatedCrash(f"rank {rank} killed at step {done}")

    result = train_prior(prior, buffer, config, callback=callback)
    tensors = {f"prior/{k}": v for k, v in prior.state_dict().items()}
    atomic_save_safetensors(out / f"{name}_rank{rank}.safetensors", tensors)
    (out / f"{name}_rank{rank}.json").write_text(
        json.dumps({"val": result.final_val_loss, "steps": result.steps})
    )


def run_unet(out: Path, rank: int):
    """A UNet with a spectral layout and Gaussian skip, both fitted from each rank's own rows."""
    buffer = filled_buffer(n=200 + 100 * rank, capacity=400, seed=10 + rank)
    prior = build_tiny_prior("unet", d_model=8, layout="spectral", gaussian_skip=True)
    train_prior(prior, buffer, tiny_config(steps=2, checkpoint_every=0, eval_every=0))
    tensors = {f"prior/{k}": v for k, v in prior.state_dict().items()}
    atomic_save_safetensors(out / f"unet_rank{rank}.safetensors", tensors)


def main() -> int:
    out = Path(sys.argv[1])
    env = distributed.init_from_env("cpu")
    try:
        if env.world_size != 2:
            raise RuntimeError(f"expected 2 ranks, got {env}")
        run(out, "full", env.rank)
        try:
            run(out, "resumed", env.rank, crash_at=6)
        except SimulatedCrash:
            pass
        run(out, "resumed", env.rank)
        run_unet(out, env.rank)
    finally:
        distributed.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
