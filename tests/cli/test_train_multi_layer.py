"""``tl-diffusion-prior train --prior glp --hook A --hook B``: one multi-layer prior, end to end on
the tiny model, and the clear errors raised before anything loads."""

from __future__ import annotations

import argparse
import json
from types import SimpleNamespace

import pytest

from tests.lens_kinds import MODEL_KIND, build_tiny_model, tiny_tokenizer
from tl_diffusion_prior.cli.train import (
    add_train_arguments,
    build_prior,
    run_hook_name,
    run_train,
    train_hooks,
)
from tl_diffusion_prior.constants import DEFAULT_HOOK, TRAINING_RECORD_NAME
from tl_diffusion_prior.data import models
from tl_diffusion_prior.priors import GLPPrior, load_prior

HOOKS = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]


def parse(*argv):
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.fixture
def no_model(monkeypatch):
    def load(*args, **kwargs):
        raise AssertionError("the model must not load")

    monkeypatch.setattr(models, "load_model", load)


def test_hooks_default_and_repeat():
    assert train_hooks(parse("--out", "x")) == [DEFAULT_HOOK]
    argv = ["--out", "x", "--prior", "glp", "--hook", HOOKS[0], "--hook", HOOKS[1]]
    args = parse(*argv, "--prior-option", "depth=1")
    assert train_hooks(args) == HOOKS and run_hook_name(args) == "blocks.*.hook_resid_post"
    model = SimpleNamespace(cfg=SimpleNamespace(d_model=16, n_layers=4))
    prior = build_prior(args, model)
    assert isinstance(prior, GLPPrior) and prior.config.layers == (0, 1)
    assert prior.config.layer_positions == 4 and prior.config.depth == 1
    single = build_prior(parse("--out", "x", "--prior", "glp", "--hook", HOOKS[1]), model)
    assert not single.is_multi_layer and single.config.hook_name == HOOKS[1]


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--prior", "mlp", "--hook", HOOKS[0], "--hook", HOOKS[1]], "pass --prior glp"),
        (["--prior", "glp", "--hook", HOOKS[1], "--hook", HOOKS[0]], "shallowest first"),
    ],
)
def test_bad_hook_sets_are_refused_before_the_model_loads(tmp_path, no_model, argv, match):
    with pytest.raises(ValueError, match=match):
        run_train(parse("--out", str(tmp_path / "p"), *argv))


def test_train_command_trains_a_multi_layer_prior_and_resumes(tmp_path, monkeypatch):
    model = build_tiny_model()
    if MODEL_KIND == "hooked":  # a bridge has the same tokenizer already
        model.set_tokenizer(tiny_tokenizer())
    monkeypatch.setattr(models, "load_model", lambda name, device=None, kind=None: model)
    out = tmp_path / "prior"
    argv = [
        "--out", str(out), "--prior", "glp", "--hook", HOOKS[0], "--hook", HOOKS[1],
        "--model", model.cfg.model_name, "--preset", "quick", "--n-activations", "300",
        "--val-activations", "64", "--steps", "4", "--batch-size", "32", "--eval-every", "2",
        "--checkpoint-every", "2", "--refill-every", "2", "--capture-batch-size", "2",
        "--ctx", "32", "--prior-option", "depth=1", "--prior-option", "d_hidden=32",
        "--prior-option", "d_mlp=32", "--no-progress",
    ]  # fmt: skip
    assert run_train(parse(*argv)) == 0
    prior = load_prior(out)
    assert prior.config.layers == (0, 1) and prior.layer_hooks == tuple(HOOKS)
    training = json.loads((out / TRAINING_RECORD_NAME).read_text())
    assert training["hook"] == HOOKS and training["steps"] == 4
    assert training["final_val_loss"] > 0
    assert run_train(parse(*argv, "--resume")) == 0
    assert json.loads((out / TRAINING_RECORD_NAME).read_text())["stopped_reason"] == (
        "already_complete"
    )
