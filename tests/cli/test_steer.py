import argparse

import pytest
import torch

from tl_diffusion_prior.cli.steer import add_steer_arguments, format_columns, prior_on, run_steer


def _parse(argv):
    parser = argparse.ArgumentParser()
    add_steer_arguments(parser)
    return parser.parse_args(argv)


def test_arguments_and_defaults():
    args = _parse(
        ["--prior", "p", "--positive", "a", "--positive", "b", "--negative", "c"]
        + ["--prompt", "x", "--scale", "0.5", "--positions", "generated"]
    )
    assert args.positive == ["a", "b"] and args.negative == ["c"]
    assert (args.scale, args.t_start, args.num_steps, args.seed) == (0.5, 0.5, 20, 0)
    assert args.positions == "generated" and args.max_new_tokens == 40
    assert args.concept is None and args.lexicon is None
    assert args.prompt == ["x"] and not args.calibrate and args.tolerance == 0.2
    assert args.denoise_mode == "replace" and args.prior_dtype == "auto"
    base = ["--prior", "p", "--positive", "a", "--negative", "c", "--prompt", "x"]
    assert _parse(base + ["--denoise-mode", "edit"]).denoise_mode == "edit"
    with pytest.raises(SystemExit):
        _parse(base + ["--denoise-mode", "difference"])
    with pytest.raises(SystemExit):  # no prompt
        _parse(["--prior", "p", "--positive", "a", "--negative", "c", "--scale", "0.5"])


@pytest.mark.parametrize(
    "extra, match",
    [
        ([], "pass --scale R"),
        (["--calibrate", "--scale", "0.5", "--concept", "joy"], "exclude each other"),
        (["--calibrate"], "--calibrate needs --concept"),
    ],
)
def test_scale_or_calibrate_is_checked_before_the_model_loads(extra, match, monkeypatch):
    from tl_diffusion_prior.data import models as offline_model

    def no_model(*args, **kwargs):
        raise AssertionError("the model must not load")

    monkeypatch.setattr(offline_model, "load_model", no_model)
    args = _parse(["--prior", "p", "--positive", "a", "--negative", "c", "--prompt", "x", *extra])
    with pytest.raises(ValueError, match=match):
        run_steer(args)


def test_the_prior_dtype_is_the_one_asked_for_and_auto_follows_the_cpu(monkeypatch):
    from tl_diffusion_prior.core import precision
    from tl_diffusion_prior.priors import MLPPrior, MLPPriorConfig

    config = MLPPriorConfig(d_model=8, hook_name="blocks.0.hook_resid_post", model_name="m")
    prior = MLPPrior(MLPPriorConfig(**{**config.to_dict(), "d_hidden": 16, "d_mlp": 16}))
    cpu = torch.device("cpu")
    assert prior_on(prior, cpu, "bfloat16").dtype == torch.bfloat16
    assert prior_on(prior, cpu, "float32").dtype == torch.float32
    for native, expected in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda native=native: native)
        assert prior_on(prior, cpu, "auto").dtype == expected
    assert prior.normalizer.mean.dtype == torch.float32


def test_format_columns_side_by_side_and_stacked():
    columns = [("left: NLL 1.0", "one two three four five six"), ("right", "a\nb")]
    wide = format_columns(columns, 50).splitlines()
    assert wide[0].startswith("left: NLL 1.0") and "| right" in wide[0]
    assert all(len(line) <= 50 for line in wide)
    assert any(line.rstrip().endswith("| a") for line in wide)
    narrow = format_columns(columns, 30)
    assert narrow.startswith("== left: NLL 1.0 ==")


@pytest.mark.slow
def test_run_steer_on_the_default_model(tmp_path, capsys, default_model, monkeypatch):
    from tl_diffusion_prior.data import models as offline_model
    from tl_diffusion_prior.priors import MLPPrior, MLPPriorConfig

    monkeypatch.setattr(
        offline_model, "load_model", lambda name, device=None, kind=None: default_model
    )
    config = MLPPriorConfig(
        d_model=576,
        hook_name="blocks.15.hook_resid_post",
        model_name=default_model.cfg.model_name,
        depth=1,
        d_hidden=64,
        d_mlp=64,
    )
    prior = MLPPrior(config)
    prior.set_normalization(torch.zeros(576), torch.full((576,), 100.0))
    prior.save_pretrained(tmp_path / "prior")
    args = _parse(
        ["--prior", str(tmp_path / "prior"), "--positive", "I love weddings and brides"]
        + ["--negative", "I love taxes and forms", "--prompt", "Tell me about your day."]
        + ["--scale", "0.5", "--max-new-tokens", "4", "--num-steps", "2", "--width", "150"]
        + ["--concept", "wedding,bride", "--lexicon", "marry,honeymoon", "--denoise-mode", "edit"]
    )
    assert run_steer(args) == 0
    out = capsys.readouterr().out
    labels = ("unsteered: NLL", "steered (r=0.5): NLL", "steered + prior (edit, t=0.5, 2 steps)")
    for label in labels:
        assert label in out
    assert "concept" in out and "lexicon words" in out
    assert "adds 120.0 along its direction" in out  # r * sqrt(576 * 100), whatever |vector|
    assert out.count("fluent") >= 3  # every column carries the text judge's verdict

    # The same prior, calibrating plain steering over two scales on two prompts.
    plot = tmp_path / "calibration.png"
    args = _parse(
        ["--prior", str(tmp_path / "prior"), "--positive", "I love weddings and brides"]
        + ["--negative", "I love taxes and forms", "--prompt", "Tell me about your day."]
        + ["--prompt", "The town is", "--calibrate", "--scales", "0.25", "1.0"]
        + ["--concept", "wedding,bride", "--without-prior", "--max-new-tokens", "4"]
        + ["--plot", str(plot)]
    )
    assert run_steer(args) == 0
    out = capsys.readouterr().out
    assert "plain steering; unsteered fluent fraction" in out
    assert "| 0.25 |" in out and "| 1 |" in out
    assert "usable range" in out or "no usable scale" in out
    assert plot.stat().st_size > 1000


def test_a_missing_prior_fails_before_the_model_loads(tmp_path, monkeypatch):
    from tl_diffusion_prior.data import models as offline_model

    def no_model(*args, **kwargs):
        raise AssertionError("the model must not load")

    monkeypatch.setattr(offline_model, "load_model", no_model)
    missing = str(tmp_path / "no-such-prior")
    args = _parse(["--prior", missing, "--positive", "a", "--negative", "c", "--prompt", "x"])
    args.scale = 0.5
    with pytest.raises((FileNotFoundError, ValueError, OSError)):
        run_steer(args)
