import argparse

import pytest
import torch

from tl_diffusion_prior.cli.steer import add_steer_arguments, format_columns, run_steer


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
    with pytest.raises(SystemExit):
        _parse(["--prior", "p", "--positive", "a", "--negative", "c", "--prompt", "x"])


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

    monkeypatch.setattr(offline_model, "load_model", lambda name, device=None: default_model)
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
        + ["--concept", "wedding,bride", "--lexicon", "marry,honeymoon"]
    )
    assert run_steer(args) == 0
    out = capsys.readouterr().out
    for label in ("unsteered: NLL", "steered (r=0.5): NLL", "steered + prior (t=0.5, 2 steps)"):
        assert label in out
    assert "concept" in out and "lexicon words" in out
    assert "adds 120.0 along its direction" in out  # r * sqrt(576 * 100), whatever |vector|
    assert out.count("fluent") >= 3  # every column carries the text judge's verdict
