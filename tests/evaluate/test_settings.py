import json

import pytest

from tests.evaluate.helpers import small_eval_settings
from tests.priors.helpers import build_tiny_prior
from tl_diffusion_prior.evaluate.settings import EvalSettings

HOOK = "blocks.1.hook_resid_post"


def test_settings_round_trip_and_validation():
    settings = small_eval_settings()
    assert EvalSettings.from_dict(settings.to_dict()) == settings
    with pytest.raises(ValueError, match="Unknown evaluation settings"):
        EvalSettings.from_dict({"bogus": 1})
    with pytest.raises(ValueError, match="noise_stds"):
        EvalSettings(noise_stds=(0.0,))
    with pytest.raises(ValueError, match="ts"):
        EvalSettings(ts=(0.0,))
    with pytest.raises(ValueError, match="steps"):
        EvalSettings(sae_train={"steps": 0})


def test_settings_from_json_data():
    settings = EvalSettings.from_dict(json.loads(json.dumps(small_eval_settings().to_dict())))
    assert settings == small_eval_settings()
    assert EvalSettings.from_dict({"noise_stds": [1, 2], "headline_t": 1}).noise_stds == (1.0, 2.0)


def test_window_length_follows_the_priors_capture_context():
    prior = build_tiny_prior("mlp", d_model=64, hook_name=HOOK)
    assert EvalSettings().resolved_seq_len([prior]) == 128
    prior.record_training({"ctx": 96})
    assert EvalSettings().resolved_seq_len([prior]) == 96
    assert EvalSettings(seq_len=32).resolved_seq_len([prior]) == 32
    other = build_tiny_prior("mlp", d_model=64, hook_name=HOOK)
    other.record_training({"ctx": 64})
    with pytest.raises(ValueError, match="different context lengths"):
        EvalSettings().resolved_seq_len([prior, other])
