import pytest

from tl_diffusion_prior.capture.buffer import ActivationRingBuffer
from tl_diffusion_prior.cli.main import main


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("demo", "capture", "train", "steer", "eval", "score"):
        assert command in out


def test_unknown_subcommand_is_an_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fly"])
    assert exit_info.value.code == 2


@pytest.mark.slow
def test_capture_command_writes_a_buffer_without_position_zero(tmp_path, capsys, default_model):
    out = tmp_path / "buffer.safetensors"
    code = main(
        ["capture", "--n-activations", "600", "--batch-size", "4", "--ctx", "32", "--out", str(out)]
    )
    assert code == 0
    buffer = ActivationRingBuffer.load(out)
    assert buffer.num_filled == 600
    norms = buffer.filled_rows(0).norm(dim=-1)
    assert norms.max() < 5.2 * norms.median()
    printed = capsys.readouterr().out
    assert "act/s" in printed and "outliers dropped" in printed
