import pytest
import torch

from tests.training.helpers import filled_buffer, synthetic_activations, tiny_config, tiny_prior
from tl_diffusion_prior.training.validation import (
    setup_validation,
    validation_loss,
    validation_rows,
)


def test_rows_are_a_fixed_buffer_draw_or_the_first_held_out_rows():
    buffer, config = filled_buffer(), tiny_config(val_size=64)
    drawn = validation_rows(buffer, 0, None, config, rank=0)
    assert drawn.shape == (64, 8)
    assert torch.equal(drawn, validation_rows(buffer, 0, None, config, rank=0))
    assert not torch.equal(drawn, validation_rows(buffer, 0, None, config, rank=1))
    held_out = synthetic_activations(100, seed=3)
    assert torch.equal(validation_rows(buffer, 0, held_out, config, rank=0), held_out[:64])


@pytest.mark.parametrize("bad", [torch.zeros(4), torch.zeros(4, 6), torch.zeros(1, 8)])
def test_bad_held_out_rows_are_refused(bad):
    with pytest.raises(ValueError, match="val_activations must be"):
        validation_rows(filled_buffer(), 0, bad, tiny_config(), rank=0)


def test_loss_uses_the_same_noise_every_time_and_a_saved_reference_is_kept():
    prior, buffer, config = tiny_prior(), filled_buffer(), tiny_config()
    prior.set_normalization(buffer.mean(0), buffer.var(0))
    validation = setup_validation(prior, buffer, 0, config, None, None, saved_reference=1.25)
    assert validation.reference == 1.25 and not validation.scratch.training
    first = validation_loss(validation.scratch, validation.rows, config, torch.device("cpu"))
    second = validation_loss(validation.scratch, validation.rows, config, torch.device("cpu"))
    assert first == second > 0
