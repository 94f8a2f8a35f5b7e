import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.training.helpers import synthetic_activations
from tl_diffusion_prior.core import distributed
from tl_diffusion_prior.core.serialization import load_safetensors

WORKER = Path(__file__).with_name("distributed_worker.py")


def test_single_process_fallbacks(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    env = distributed.init_from_env("cpu")
    assert (env.rank, env.world_size, env.device) == (0, 1, torch.device("cpu")) and env.is_main
    assert distributed.is_main() and not distributed.is_distributed()
    x = torch.tensor([1.0, 2.0])
    mean = distributed.all_reduce_mean(x)
    assert torch.equal(mean, x) and mean is not x
    assert torch.equal(distributed.all_reduce_sum(x), x)
    assert torch.equal(distributed.all_reduce_max(x), x)
    assert distributed.any_rank(True) and not distributed.any_rank(False)
    distributed.barrier()


def test_bad_environment_is_reported(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE"):
        distributed.init_from_env("cpu")


@pytest.mark.slow
def test_two_rank_training_syncs_stats_and_weights_and_resumes(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--standalone",
        str(WORKER),
        str(tmp_path),
    ]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    full = [load_safetensors(tmp_path / f"full_rank{r}.safetensors") for r in (0, 1)]
    resumed = [load_safetensors(tmp_path / f"resumed_rank{r}.safetensors") for r in (0, 1)]
    # Both ranks end with the same weights, and the crashed-then-resumed run matches bit for bit.
    for other in (full[1], resumed[0], resumed[1]):
        assert full[0].keys() == other.keys()
        for key in full[0]:
            assert torch.equal(full[0][key], other[key]), key

    # The normalisation is that of the union of both ranks' rows (200 on rank 0, 300 on rank 1).
    union = torch.cat([synthetic_activations(200, seed=10), synthetic_activations(300, seed=11)])
    union = union.double()
    torch.testing.assert_close(full[0]["prior/normalizer.mean"], union.mean(0).float())
    std = (union.var(0, correction=0) + 1e-5).sqrt().float()
    torch.testing.assert_close(full[0]["prior/normalizer.std"], std)

    # State fitted from data (the UNet's layout and Gaussian skip) is rank 0's on every rank.
    unet = [load_safetensors(tmp_path / f"unet_rank{r}.safetensors") for r in (0, 1)]
    assert any("gaussian" in key for key in unet[0]) and unet[0].keys() == unet[1].keys()
    for key in unet[0]:
        assert torch.equal(unet[0][key], unet[1][key]), key

    results = [json.loads((tmp_path / f"full_rank{r}.json").read_text()) for r in (0, 1)]
    assert results[0] == results[1] and results[0]["steps"] == 8  # val loss reduced over ranks
    checkpoint = tmp_path / "full" / "step_00000008"
    assert {p.name for p in checkpoint.iterdir()} >= {
        "rank_00000.safetensors",
        "rank_00001.safetensors",
        "trainer_state.safetensors",
        "trainer_state.json",
    }
    assert (tmp_path / "full" / "loss.csv").is_file()
