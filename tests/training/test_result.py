import math

from tests.training.helpers import filled_buffer, tiny_config, tiny_prior
from tl_diffusion_prior.priors import load_prior
from tl_diffusion_prior.training import TrainResult, train_prior


def _result(history, final=1.0, reference=2.0) -> TrainResult:
    return TrainResult(
        history=history,
        final_val_loss=final,
        gaussian_reference=reference,
        steps=4,
        samples_seen=128,
        samples_per_s=10.0,
        elapsed_s=1.0,
        stopped_reason="completed",
    )


def test_ratio_and_initial_loss():
    result = _result([{"step": 0, "val_loss": 0.0}, {"step": 4, "val_loss": 1.0}])
    assert result.val_over_reference == 0.5
    assert result.initial_val_loss == 0.0  # a zero loss is a value, not a missing one
    assert _result([{"step": 2, "train_loss": 1.0}]).initial_val_loss is None
    assert math.isnan(_result([], reference=0.0).val_over_reference)


def test_provenance_is_recorded_in_the_prior_config(tmp_path):
    prior = tiny_prior()
    provenance = {"corpus": "synthetic ring", "tokens": 1234}
    train_prior(prior, filled_buffer(), tiny_config(steps=4), provenance=provenance)
    training = prior.training_record
    assert training["corpus"] == "synthetic ring" and training["tokens"] == 1234
    assert training["samples_seen"] == 4 * 32 and training["stopped_reason"] == "completed"
    assert training["train_config"]["batch_size"] == 32 and "date" in training
    prior.save_pretrained(tmp_path)
    assert load_prior(tmp_path).training_record == training
