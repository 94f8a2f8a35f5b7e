"""The units of the steering scale, measured through the real hook on a tiny model.

``scale_mode="relative"`` adds ``r * reference_norm * v / ||v||``: the added norm is ``r`` times the
reference norm whatever ``v``'s own norm (issue 15: it used to be multiplied by ``||v||`` too, so
"r = 0.05" added 1.6x the mean activation norm). ``"absolute"`` adds ``scale * v`` as given.
"""

import pytest
import torch

from tests.steering.helpers import RecordingPrior, hook_state
from tl_diffusion_prior.steering import attach_steering, reference_norm_from_prior, steer

HOOK = "blocks.0.hook_resid_post"
STEERED = HOOK + ".hook_steered"


def _tokens(batch=2, ctx=6):
    return torch.randint(3, 300, (batch, ctx), generator=torch.Generator().manual_seed(0))


def _vector(norm: float, seed: int = 1) -> torch.Tensor:
    v = torch.randn(64, generator=torch.Generator().manual_seed(seed))
    return v * (norm / v.norm())


def _added(model, vector, scale, prior=None, **options):
    """What the hook added at every steered position (positions 1.., both rows), and the handle."""
    tokens = _tokens()
    _, clean = model.run_with_cache(tokens, names_filter=[HOOK])
    with steer(model, HOOK, vector, scale, prior, **options) as handle:
        _, cache = model.run_with_cache(tokens, names_filter=[STEERED])
    added = (cache[STEERED] - clean[HOOK]).double()
    assert torch.equal(added[:, 0], torch.zeros_like(added[:, 0]))  # position 0 never steered
    return added[:, 1:].reshape(-1, vector.shape[0]), handle


@pytest.mark.parametrize("vector_norm", [0.01, 1.0, 37.3, 1000.0])
@pytest.mark.parametrize("r", [0.05, 0.5, 2.0])
def test_relative_adds_r_times_reference_norm_whatever_the_vector_norm(tiny_model, vector_norm, r):
    v = _vector(vector_norm)
    added, handle = _added(tiny_model, v, r, scale_mode="relative", reference_norm=10.0)
    norms = added.norm(dim=-1)
    # float32 activations of norm ~8 plus up to 20: float32 rounding, nothing more.
    torch.testing.assert_close(norms, torch.full_like(norms, r * 10.0), rtol=1e-4, atol=1e-4)
    cosine = torch.nn.functional.cosine_similarity(added, v.double()[None], dim=-1)
    torch.testing.assert_close(cosine, torch.ones_like(cosine), rtol=0, atol=1e-4)
    assert handle.alpha == pytest.approx(r * 10.0)
    assert float(handle.delta.double().norm()) == pytest.approx(r * 10.0, rel=1e-6)


def test_relative_with_the_priors_reference_norm(tiny_model):
    prior = RecordingPrior(64, HOOK, tiny_model.cfg.model_name)
    mean, var = torch.randn(64, dtype=torch.float64) * 3, torch.rand(64, dtype=torch.float64) + 0.5
    prior.set_normalization(mean, var)
    reference = reference_norm_from_prior(prior)
    added, _ = _added(tiny_model, _vector(42.0), 0.25, prior, scale_mode="relative", seed=0)
    norms = added.norm(dim=-1)
    expected = torch.full_like(norms, 0.25 * reference)
    torch.testing.assert_close(norms, expected, rtol=1e-4, atol=1e-4)


def test_absolute_adds_the_vector_as_given(tiny_model):
    v = _vector(37.3)
    added, handle = _added(tiny_model, v, 3.0)
    torch.testing.assert_close(added, (3.0 * v.double()).expand_as(added), rtol=1e-5, atol=1e-4)
    assert handle.alpha == 3.0
    norms = added.norm(dim=-1)
    torch.testing.assert_close(norms, torch.full_like(norms, 3.0 * 37.3), rtol=1e-4, atol=1e-3)


def test_relative_zero_vector_is_refused_before_attaching(tiny_model):
    before = hook_state(tiny_model)
    with pytest.raises(ValueError, match="vector is zero"):
        attach_steering(
            tiny_model, HOOK, torch.zeros(64), 0.5, scale_mode="relative", reference_norm=1.0
        )
    assert hook_state(tiny_model) == before
    added, _ = _added(tiny_model, torch.zeros(64), 0.5)  # absolute: adding zero is fine
    assert torch.equal(added, torch.zeros_like(added))


def test_relative_delta_keeps_the_vectors_dtype(tiny_model):
    model = tiny_model.to(torch.float64)
    v = _vector(50.0).double()
    added, handle = _added(model, v, 0.1, scale_mode="relative", reference_norm=100.0)
    assert handle.delta.dtype == torch.float64
    norms = added.norm(dim=-1)
    torch.testing.assert_close(norms, torch.full_like(norms, 10.0), rtol=1e-10, atol=1e-10)
