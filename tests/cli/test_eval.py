import argparse

import pytest

from tl_diffusion_prior.cli.eval import _settings, add_eval_arguments


def _parse(argv):
    return add_eval_arguments(argparse.ArgumentParser()).parse_args(argv)


def test_arguments_and_settings():
    args = _parse(
        [
            "--prior",
            "a",
            "--prior",
            "b",
            "--out",
            "r",
            "--quick",
            "--seed",
            "3",
            "--settings",
            '{"pca_ks": [8]}',
        ]
    )
    assert args.prior == ["a", "b"] and args.out == "r"
    settings = _settings(args)
    assert settings.seed == 3 and settings.pca_ks == (8,)
    assert settings.max_sequences == 16  # the quick preset
    full = _settings(_parse(["--prior", "a", "--out", "r", "--train-rows", "1000"]))
    assert full.max_train_rows == 1000 and full.max_sequences == 128


def test_prior_and_out_are_required_and_settings_must_be_an_object():
    with pytest.raises(SystemExit):
        _parse(["--out", "r"])
    with pytest.raises(ValueError, match="JSON object"):
        _settings(_parse(["--prior", "a", "--out", "r", "--settings", "[1]"]))
