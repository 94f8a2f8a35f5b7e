import pytest
import torch

from tests.evaluate.helpers import small_eval_settings
from tests.evaluate.report.helpers import HOOK
from tests.priors.helpers import build_tiny_prior
from tl_diffusion_prior.capture.capture import fill_buffer
from tl_diffusion_prior.evaluate.fidelity import TokenSet
from tl_diffusion_prior.evaluate.report import run_evaluation
from tl_diffusion_prior.evaluate.steering_curves import steering_curves
from tl_diffusion_prior.training.loss_log import write_loss_csv


@pytest.fixture
def tiny_run(tiny_model, tmp_path):
    """A run on the tiny model: one MLP prior with a ``loss.csv``, two held-out token sets and
    precomputed steering curves; returns the report and ``tmp_path``."""
    gen = torch.Generator().manual_seed(0)
    buffer = fill_buffer(
        tiny_model, torch.randint(0, 300, (24, 16), generator=gen), HOOK, 300, progress=False
    )
    prior = build_tiny_prior("mlp", d_model=64, hook_name=HOOK)
    prior.set_normalization(buffer.mean(0), buffer.var(0))
    prior_dir = tmp_path / "prior"
    prior.save_pretrained(prior_dir)
    write_loss_csv(
        prior_dir / "loss.csv", [{"step": s, "train_loss": 2.0 - s / 10} for s in range(5)]
    )
    token_sets = [
        TokenSet(
            "heldout",
            torch.randint(0, 300, (6, 12), generator=gen),
            torch.arange(6) // 2,
            groups=("one",) * 4 + ("two",) * 2,
        ),
        TokenSet("pydoc", torch.randint(0, 300, (4, 12), generator=gen), torch.arange(4)),
    ]
    curves = steering_curves(
        {"plain": lambda s: [s, s + 1]},
        [1.0, 2.0],
        lambda items: items,
        lambda items: [1.0 for _ in items],
        n_resamples=10,
    )
    report = run_evaluation(
        tiny_model,
        [prior],
        buffer,
        small_eval_settings(),
        token_sets=token_sets,
        prior_dirs=[prior_dir],
        steering=curves,
        progress=False,
    )
    return report, tmp_path
