import math

from tests.training.helpers import filled_buffer, tiny_config, tiny_prior
from tl_diffusion_prior.priors import load_prior
from tl_diffusion_prior.training import TrainResult, train_prior
from tl_diffusion_prior.training import checkpoint as ckpt


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


def test_a_resumed_run_records_every_session_and_the_steps_each_trained(tmp_path):
    first, second = {"command": "train --steps 12", "corpus": "a"}, {"command": "train --resume"}
    budget = tiny_config(checkpoint_dir=tmp_path, time_budget_s=1e-9)
    first_prior = tiny_prior()
    stopped = train_prior(first_prior, filled_buffer(), budget, provenance=first)
    assert stopped.steps == 1 and first_prior.training_record["command"] == first["command"]
    assert "earlier_sessions" not in first_prior.training_record
    prior = tiny_prior()
    train_prior(prior, filled_buffer(), tiny_config(checkpoint_dir=tmp_path), provenance=second)
    training = prior.training_record
    assert training["command"] == "train --resume" and "corpus" not in training
    # The first session checkpointed step 1 when its budget ran out; the second trained from it.
    assert training["earlier_sessions"] == [{"from_step": 0, "to_step": 1, **first}]
    assert training["steps"] == 12 and "from_step" not in training


def test_a_checkpoint_from_before_session_records_gives_the_earlier_steps_only(
    tmp_path, monkeypatch
):
    budget = tiny_config(checkpoint_dir=tmp_path, time_budget_s=1e-9)
    train_prior(tiny_prior(), filled_buffer(), budget, provenance={"command": "first"})
    load = ckpt.load_checkpoint

    def load_without_sessions(path):
        state = load(path)
        del state.meta["sessions"]  # as written by the code before sessions were recorded
        return state

    monkeypatch.setattr(ckpt, "load_checkpoint", load_without_sessions)
    prior = tiny_prior()
    train_prior(prior, filled_buffer(), tiny_config(checkpoint_dir=tmp_path))
    assert prior.training_record["earlier_sessions"] == [{"from_step": 0, "to_step": 1}]
