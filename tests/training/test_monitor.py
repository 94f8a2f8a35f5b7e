import math

import pytest
import torch

from tl_diffusion_prior.training.monitor import HISTORY_COLUMNS, LossMonitor, NonFiniteLossError


def test_row_is_the_mean_since_the_last_row_and_resets():
    monitor = LossMonitor(torch.device("cpu"))
    for step, loss in enumerate((1.0, 2.0, 3.0)):
        monitor.add(step, torch.tensor(loss), torch.tensor(0.5 * step))
    monitor.check(3, None)
    row = monitor.row(3, lr=1e-3, rows_per_step=4, elapsed_s=1.5)
    assert set(row) == set(HISTORY_COLUMNS)
    assert row["train_loss"] == pytest.approx(2.0) and row["grad_norm"] == 1.0
    assert row["step"] == 3 and row["val_loss"] is None and row["samples_per_s"] > 0
    monitor.add(3, torch.tensor(5.0), torch.tensor(0.1))
    assert monitor.row(4, lr=1e-3, rows_per_step=4, elapsed_s=2.0)["train_loss"] == 5.0


def test_check_names_the_first_non_finite_step_and_the_last_checkpoint(tmp_path):
    monitor = LossMonitor(torch.device("cpu"))
    monitor.add(0, torch.tensor(1.0), torch.tensor(1.0))
    monitor.add(1, torch.tensor(1.0), torch.tensor(math.inf))
    monitor.add(2, torch.tensor(math.nan), torch.tensor(1.0))
    with pytest.raises(NonFiniteLossError, match="step 2") as info:
        monitor.check(3, tmp_path / "step_00000001")
    assert info.value.step == 2 and info.value.checkpoint == tmp_path / "step_00000001"
