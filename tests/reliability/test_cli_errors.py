"""Every mistake explained (issue 12): one clear error line from the command line, exit code 2,
the traceback only with --debug, and each common mistake refused before work starts with a
message that names the value and the fix."""

import json

import pytest
import torch

from tests.data.helpers import build_byte_tokenizer
from tests.lens_kinds import MODEL_KIND, build_tiny_model
from tl_diffusion_prior.capture.buffer import ActivationRingBuffer
from tl_diffusion_prior.capture.capture import ActivationCapture, fill_buffer
from tl_diffusion_prior.capture.hook_names import check_residual_hooks
from tl_diffusion_prior.cli import main as cli_main
from tl_diffusion_prior.cli.main import INTERRUPTED_EXIT, USER_ERROR_EXIT, main
from tl_diffusion_prior.core import resources
from tl_diffusion_prior.core.serialization import (
    atomic_save_safetensors,
    load_safetensors,
    read_json,
)
from tl_diffusion_prior.data import models
from tl_diffusion_prior.data.sources import text_file_token_source
from tl_diffusion_prior.data.token_source import TextTokenSource
from tl_diffusion_prior.steering import attach_steering, steering_vector

HOOK = "blocks.1.hook_resid_post"
TEXT = "The quick brown fox jumps over the lazy dog. " * 40  # ~1,800 byte tokens


@pytest.fixture
def tokenizer():
    return build_byte_tokenizer()


@pytest.fixture
def cli_model(monkeypatch, tokenizer):
    """The tiny model with the byte tokenizer, loaded by every command instead of the default."""
    model = build_tiny_model()
    if MODEL_KIND == "hooked":  # a bridge has its own character tokenizer
        model.tokenizer = tokenizer
    monkeypatch.setattr(models, "load_model", lambda name, device=None, kind=None: model)
    return model


def _capture(tmp_path, *options, debug=()):
    text = tmp_path / "text.txt"
    if not text.exists():
        text.write_text(TEXT, encoding="utf-8")
    argv = [*debug, "capture", "--out", str(tmp_path / "buffer.safetensors"), "--hook", HOOK]
    if "--text-file" not in options:
        argv += ["--text-file", str(text)]
    return main([*argv, "--batch-size", "2", "--ctx", "16", *options])


def _one_error_line(capsys) -> str:
    """The error line, checked to be the only one (a progress bar may come before it)."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(lines) == 1, err
    assert lines[0].startswith("tl-diffusion-prior capture: error: "), err
    assert err.rstrip().endswith(lines[0]) and "Traceback" not in err
    return lines[0]


# ---------------------------------------------------------------- the command line


def test_a_user_error_is_one_line_and_exit_code_2(tmp_path, capsys, cli_model):
    missing = tmp_path / "missing.txt"
    assert _capture(tmp_path, "--text-file", str(missing)) == USER_ERROR_EXIT
    line = _one_error_line(capsys)
    assert str(missing) in line and "no such file" in line
    assert not (tmp_path / "buffer.safetensors").exists()


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_adds_the_traceback(tmp_path, capsys, cli_model, where):
    missing = str(tmp_path / "missing.txt")
    if where == "before":
        code = _capture(tmp_path, "--text-file", missing, debug=["--debug"])
    else:
        code = _capture(tmp_path, "--text-file", missing, "--debug")
    assert code == USER_ERROR_EXIT
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "FileNotFoundError" in err
    assert err.strip().splitlines()[-1].startswith("tl-diffusion-prior capture: error: ")


def test_an_internal_error_keeps_its_traceback(tmp_path, monkeypatch):
    def broken(name, device=None, kind=None):
        raise RuntimeError("a bug")

    monkeypatch.setattr(models, "load_model", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        _capture(tmp_path)


def test_ctrl_c_is_one_line_and_exit_code_130(tmp_path, capsys, monkeypatch):
    def interrupted(name, device=None, kind=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(models, "load_model", interrupted)
    assert _capture(tmp_path) == INTERRUPTED_EXIT
    assert "interrupted" in _one_error_line(capsys)


def test_every_subcommand_takes_debug_and_user_errors_are_not_bugs():
    parser = cli_main.build_parser()
    for command in cli_main.SUBCOMMANDS:
        option_strings = {
            option
            for action in parser._subparsers._group_actions[0].choices[command]._actions
            for option in action.option_strings
        }
        assert "--debug" in option_strings, command
    assert not issubclass(RuntimeError, cli_main.USER_ERRORS)


# ---------------------------------------------------------------- hooks


@pytest.mark.parametrize(
    ("hook", "says"),
    [
        ("blocks.1.attn.hook_pattern", "attention probabilities"),
        ("blocks.0.attn.hook_z", "per-head"),
        ("blocks.0.mlp.hook_post", "d_mlp=128"),
        ("blocks.0.ln1.hook_scale", "normalisation scales"),
        ("unembed.hook_out", "logits"),
    ],
)
def test_non_residual_hooks_are_refused_up_front(tiny_model, hook, says):
    with pytest.raises(ValueError, match=says) as error:
        check_residual_hooks(tiny_model, hook)
    assert hook in str(error.value) and "hook_resid_post" in str(error.value)
    buffer = ActivationRingBuffer(10, 64, [hook])
    with pytest.raises(ValueError, match="d_model-wide"):
        ActivationCapture(tiny_model, hook, buffer)
    with pytest.raises(ValueError, match="d_model-wide"):
        fill_buffer(tiny_model, torch.ones(2, 5, dtype=torch.long), hook, 5, progress=False)


def test_residual_width_hooks_pass(tiny_model):
    names = [
        "hook_embed",
        "blocks.0.hook_resid_pre",
        "blocks.0.hook_resid_mid",
        "blocks.0.hook_attn_out",
        "blocks.0.hook_mlp_out",
        "blocks.1.hook_resid_post",
        "blocks.0.ln2.hook_normalized",
        "ln_final.hook_normalized",
    ]
    assert check_residual_hooks(tiny_model, names) == names
    split = build_tiny_model(use_split_qkv_input=True)
    with pytest.raises(ValueError, match="per-head normalised attention inputs"):
        check_residual_hooks(split, "blocks.0.ln1.hook_normalized")


def test_steering_refuses_a_non_residual_hook(tiny_model):
    with pytest.raises(ValueError, match="attention probabilities"):
        attach_steering(tiny_model, "blocks.0.attn.hook_pattern", torch.zeros(64), 1.0)
    assert all(not hp.fwd_hooks for hp in tiny_model.hook_dict.values())


def test_a_steering_vector_refuses_a_non_residual_hook(tiny_model):
    prompts = [torch.tensor([5, 6, 7])], [torch.tensor([8, 9, 10])]
    with pytest.raises(ValueError, match="attention probabilities"):
        steering_vector(tiny_model, "blocks.0.attn.hook_pattern", *prompts)


def test_cli_names_the_non_residual_hook(tmp_path, capsys, cli_model):
    assert _capture(tmp_path, "--hook", "blocks.1.attn.hook_pattern") == USER_ERROR_EXIT
    line = _one_error_line(capsys)
    assert "blocks.1.attn.hook_pattern" in line and "attention probabilities" in line


def test_an_unknown_hook_of_the_wrong_shape_says_which_shapes_came():
    from transformer_lens import HookedRootModule
    from transformer_lens.hook_points import HookPoint

    class Heads(HookedRootModule):
        def __init__(self):
            super().__init__()
            self.hook_heads = HookPoint()
            self.setup()

        def forward(self, tokens):
            return self.hook_heads(torch.zeros(*tokens.shape, 2, 8))

    model = Heads()
    buffer = ActivationRingBuffer(10, 8, ["hook_heads"])
    with pytest.raises(ValueError, match=r"\[batch, pos, d_model=8\].*\(2, 5, 2, 8\)"):
        fill_buffer(model, torch.ones(2, 5, dtype=torch.long), "hook_heads", 5, buffer=buffer)
    assert not model.hook_heads.fwd_hooks


# ---------------------------------------------------------------- token ids


@pytest.mark.parametrize("bad", [300, 10_000, -1])
def test_out_of_vocabulary_ids_are_refused_before_the_forward(tiny_model, bad):
    tokens = torch.ones(2, 6, dtype=torch.long)
    tokens[1, 3] = bad
    calls = []
    tiny_model.embed.register_forward_pre_hook(lambda *args: calls.append(1))
    with pytest.raises(ValueError, match=rf"token id {bad}, outside .*\[0, 300\)"):
        fill_buffer(tiny_model, [tokens], HOOK, 5, progress=False)
    assert not calls  # refused before the model ran


# ---------------------------------------------------------------- text


def test_a_text_file_shorter_than_one_batch_says_how_short(tmp_path, tokenizer):
    short = tmp_path / "short.txt"
    short.write_text("hello world", encoding="utf-8")
    source = text_file_token_source(short, tokenizer, batch_size=4, ctx=16)
    with pytest.raises(ValueError, match="too little text") as error:
        next(iter(source))
    message = str(error.value)
    assert str(short) in message
    assert "gave 12 tokens" in message and "4 row(s) of 15 tokens" in message and "= 60" in message
    assert "--batch-size" in message


def test_cli_short_text_file(tmp_path, capsys, cli_model):
    short = tmp_path / "short.txt"
    short.write_text("tiny", encoding="utf-8")
    assert _capture(tmp_path, "--text-file", str(short)) == USER_ERROR_EXIT
    line = _one_error_line(capsys)
    assert str(short) in line and "gave 5 tokens" in line and "= 30" in line


def test_an_empty_resumed_source_ends_quietly(tokenizer):
    source = TextTokenSource([TEXT], tokenizer, 2, 16)
    batches = list(source)
    assert batches
    assert list(source) == []  # the end of a pass that did yield batches is not an error


def test_a_binary_file_is_refused_up_front_naming_it(tmp_path, tokenizer):
    binary = tmp_path / "weights.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ValueError, match="weights.bin.*not utf-8 text.*binary"):
        text_file_token_source([binary], tokenizer)
    nul = tmp_path / "nul.txt"
    nul.write_bytes(b"text\x00\x00\x00more")
    with pytest.raises(ValueError, match="nul.txt.*NUL bytes"):
        text_file_token_source(nul, tokenizer)
    with pytest.raises(ValueError, match="encoding='klingon'"):
        text_file_token_source(nul, tokenizer, encoding="klingon")


def test_a_bad_byte_past_the_sniffed_start_still_names_the_file(tmp_path, tokenizer):
    late = tmp_path / "late.txt"
    late.write_bytes(b"a" * 100_000 + b"\xff\xfe" + b"b" * 100)
    source = text_file_token_source(late, tokenizer, batch_size=2, ctx=16)
    with pytest.raises(ValueError, match=r"late.txt.*not utf-8 text.*byte 100,000"):
        list(source)


def test_cli_binary_text_file(tmp_path, capsys, cli_model):
    binary = tmp_path / "image.png"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    assert _capture(tmp_path, "--text-file", str(binary)) == USER_ERROR_EXIT
    assert str(binary) in _one_error_line(capsys)


# ---------------------------------------------------------------- memory and disk


def test_a_buffer_larger_than_memory_is_refused_before_allocating():
    with pytest.raises(ValueError, match=r"capacity 1,000,000,000,000 .* needs .*TiB.*free") as e:
        ActivationRingBuffer(10**12, 64, ["h"])
    assert "--n-activations" in str(e.value)


def test_memory_check_uses_what_is_free(monkeypatch):
    monkeypatch.setattr(resources, "available_memory", lambda device: 1000)
    resources.check_fits_in_memory(1000, "cpu", "x", "fix")
    with pytest.raises(ValueError, match="x needs 1001 B on cpu, but only 1000 B is free"):
        resources.check_fits_in_memory(1001, "cpu", "x", "fix")
    with pytest.raises(ValueError, match="free"):
        ActivationRingBuffer(10, 64, ["h"])  # 11 x 64 x 4 bytes > 1000
    monkeypatch.setattr(resources, "available_memory", lambda device: None)
    resources.check_fits_in_memory(10**18, "meta", "x", "fix")  # unknown: never refused


def test_available_memory_on_cpu_is_a_plausible_number():
    free = resources.available_memory("cpu")
    assert free is not None and 0 < free < 2**60


def test_disk_check_against_the_nearest_existing_parent(tmp_path):
    target = tmp_path / "not" / "yet" / "buffer.safetensors"
    resources.check_fits_on_disk(1, target, "the buffer", "fix")
    with pytest.raises(ValueError, match=r"the buffer at .*buffer.safetensors needs about"):
        resources.check_fits_on_disk(2**62, target, "the buffer", "free some space")


def test_cli_n_activations_too_large(tmp_path, capsys, cli_model):
    assert _capture(tmp_path, "--n-activations", "1000000000000") == USER_ERROR_EXIT
    line = _one_error_line(capsys)
    assert "1,000,000,000,000" in line and "--n-activations" in line
    with pytest.raises(SystemExit) as exit_info:  # argparse refuses a float spelling
        _capture(tmp_path, "--n-activations", "1e12")
    assert exit_info.value.code == USER_ERROR_EXIT


def _full_disk_and_forward_counter(model, monkeypatch) -> list[int]:
    """Report 1000 free bytes on every disk; returns a list that grows with each forward pass."""
    real = resources.shutil.disk_usage
    monkeypatch.setattr(resources.shutil, "disk_usage", lambda path: real(path)._replace(free=1000))
    forwards: list[int] = []
    model.embed.register_forward_pre_hook(lambda *args: forwards.append(1))
    return forwards


def test_cli_refuses_a_buffer_the_disk_cannot_hold_before_capturing(
    tmp_path, capsys, cli_model, monkeypatch
):
    forwards = _full_disk_and_forward_counter(cli_model, monkeypatch)
    assert _capture(tmp_path, "--n-activations", "100") == USER_ERROR_EXIT
    line = _one_error_line(capsys)
    assert "buffer.safetensors needs about 25.0 KiB of disk" in line and "1000 B" in line
    assert not forwards  # refused before capture ran


def test_train_refuses_a_disk_too_small_for_its_checkpoints_before_capturing(
    tmp_path, capsys, cli_model, monkeypatch
):
    forwards = _full_disk_and_forward_counter(cli_model, monkeypatch)
    argv = ["train", "--out", str(tmp_path / "prior"), "--hook", HOOK, "--n-activations", "100"]
    assert main([*argv, "--no-progress"]) == USER_ERROR_EXIT
    err = capsys.readouterr().err
    assert "tl-diffusion-prior train: error: --checkpoint-dir" in err and "1000 B" in err
    assert not forwards  # refused before capture ran


# ---------------------------------------------------------------- damaged files


def test_a_broken_json_file_names_its_path(tmp_path):
    config = tmp_path / "config.json"
    config.write_text('{"architecture": "mlp", ', encoding="utf-8")
    with pytest.raises(json.JSONDecodeError, match=r"config.json is not valid JSON"):
        read_json(config)
    config.write_bytes(b'{"a": "\xff"}')
    with pytest.raises(ValueError, match=r"config.json is not UTF-8 JSON"):
        read_json(config)


def test_a_truncated_safetensors_file_names_its_path(tmp_path):
    path = tmp_path / "model.safetensors"
    atomic_save_safetensors(path, {"w": torch.ones(100)})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 50])
    with pytest.raises(ValueError, match=r"model.safetensors is not a readable safetensors"):
        load_safetensors(path)
    path.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ValueError, match=r"model.safetensors is not a readable safetensors"):
        load_safetensors(path)


def test_the_error_line_is_the_message_itself():
    error = ValueError("n must be >= 1, got 0.")
    assert cli_main.describe_error(error) == "n must be >= 1, got 0."
    assert "ValueError" in cli_main.describe_error(ValueError())


def test_a_truncated_buffer_file_names_its_path(tmp_path):
    path = tmp_path / "buffer.safetensors"
    buffer = ActivationRingBuffer(4, 8, ["h"])
    buffer.push(torch.randn(3, 8))
    buffer.save(path)
    path.write_bytes(path.read_bytes()[:40])  # cut inside the header
    with pytest.raises(ValueError, match=r"buffer.safetensors is not a readable safetensors"):
        ActivationRingBuffer.load(path)
