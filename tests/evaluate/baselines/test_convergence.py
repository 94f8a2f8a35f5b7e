import pytest
import torch

from tests.evaluate.helpers import correlated_gaussian
from tl_diffusion_prior.evaluate.baselines.base import fit_normalizer
from tl_diffusion_prior.evaluate.baselines.convergence import (
    ConvergenceConfig,
    Trainee,
    plateaued,
    split_heldout,
    train_until_converged,
)
from tl_diffusion_prior.evaluate.baselines.sae_training import SAETrainConfig, train_topk_sae

INTERVAL = 100


class ScriptedTrainee:
    """Reconstructs ``mean + a (z - mean)`` with ``a`` chosen so that the held-out NMSE after the
    i-th round is ``losses[i]`` exactly: ``(1 - a)^2 = loss``."""

    def __init__(self, losses: list[float], d_sae: int = 4) -> None:
        self.losses, self.d_sae = losses, d_sae
        self.steps = self.samples_seen = 0

    def train(self, n_samples: int) -> None:
        self.steps += 1
        self.samples_seen += n_samples

    def _a(self) -> float:
        rounds = max(self.samples_seen // INTERVAL, 1)
        return 1.0 - self.losses[min(rounds, len(self.losses)) - 1] ** 0.5

    def reconstruct(self, z):
        mean = z.mean(0) if z.shape[0] > 1 else z
        return mean + self._a() * (z - mean)

    def active(self, z):
        out = torch.zeros(z.shape[0], self.d_sae, dtype=torch.bool)
        out[:, 0] = True  # latent 0 fires everywhere, the rest never
        return out

    def samples_since_fired(self):
        return torch.full((self.d_sae,), self.samples_seen)


def _run(losses, **overrides):
    config = ConvergenceConfig(
        eval_every_samples=INTERVAL, heldout_rows=64, dead_window_samples=1, **overrides
    )
    heldout = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
    trainee = ScriptedTrainee(losses)
    assert isinstance(trainee, Trainee)
    return train_until_converged(trainee, heldout, config)


def test_stops_on_a_plateau_and_not_before():
    # Best of the last 3 vs best before: at the 8th evaluation 0.150 -> 0.148 (1.3%, go on), at
    # the 9th 0.149 -> 0.1478 (0.8% < 1%: stop).
    losses = [1.0, 0.5, 0.3, 0.2, 0.15, 0.149, 0.1485, 0.148, 0.1478, 0.1477, 0.1476]
    record, history = _run(losses, max_samples=100 * INTERVAL)
    assert record["converged"] is True
    assert record["samples_seen"] == 9 * INTERVAL
    assert history["heldout_nmse"] == pytest.approx(losses[:9], rel=1e-4)
    assert record["heldout_nmse"] == pytest.approx(0.1478, rel=1e-4)
    assert record["explained_variance"] == pytest.approx(1 - record["heldout_nmse"])
    assert record["dead_latents"] == 3 and record["dead_fraction"] == 0.75
    assert record["heldout_l0"] == 1.0
    assert "1.0%" in record["criterion"] and record["steps"] == 9


def test_steady_improvement_runs_to_the_cap_and_says_so():
    losses = [0.95**i for i in range(50)]  # 5% better every round: never a plateau
    record, _ = _run(losses, max_samples=20 * INTERVAL)
    assert record["converged"] is False and record["samples_seen"] == 20 * INTERVAL


def test_min_samples_holds_off_an_early_plateau():
    losses = [0.5] * 10 + [0.4] * 10
    record, _ = _run(losses, max_samples=100 * INTERVAL, min_samples=8 * INTERVAL)
    assert record["converged"] is True and record["samples_seen"] == 8 * INTERVAL
    early, _ = _run(losses, max_samples=100 * INTERVAL)
    assert early["samples_seen"] == 4 * INTERVAL  # patience 3 + the first evaluation


def test_plateaued_edge_cases():
    assert not plateaued([1.0, 0.5], patience=3, min_rel_improvement=0.01)
    assert plateaued([1.0, 1.0, 1.0, 1.0], patience=3, min_rel_improvement=0.01)
    assert not plateaued([1.0, 0.9, 0.8, 0.7], patience=3, min_rel_improvement=0.01)
    assert not plateaued([1.0, float("nan")], patience=1, min_rel_improvement=0.01)


def test_config_checks_and_split():
    with pytest.raises(ValueError, match="patience"):
        ConvergenceConfig(patience=0)
    with pytest.raises(ValueError, match="min_rel_improvement"):
        ConvergenceConfig(min_rel_improvement=2.0)
    rows = torch.arange(20.0).reshape(10, 2)
    train, held = split_heldout(rows, 3)
    assert train.shape[0] == 7 and torch.equal(held, rows[7:])
    assert split_heldout(rows, 100)[1].shape[0] == 5  # at most half is held out


def test_our_topk_sae_trains_to_the_same_criterion():
    x = correlated_gaussian(2000, 16, seed=0, rank=4)
    config = ConvergenceConfig(eval_every_samples=1024, heldout_rows=256, max_samples=40_000)
    sae = train_topk_sae(
        x, fit_normalizer(x), 32, 4, SAETrainConfig(batch_size=128, lr=3e-3), convergence=config
    )
    record = sae.training_record["convergence"]
    assert record["samples_seen"] <= 40_000 + 128
    assert record["heldout_nmse"] < 0.5 and record["heldout_l0"] <= 4
    assert sae.training_record["history"]["heldout_nmse"][-1] == record["heldout_nmse"]
    assert sae.training_record["n_rows"] == 2000 - 256
