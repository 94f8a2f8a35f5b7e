import argparse
import math

import pytest

from tests.lens_kinds import MODEL_KIND, build_tiny_model, tiny_tokenizer
from tests.priors.helpers import randomize_
from tl_diffusion_prior.cli.main import USER_ERROR_EXIT, main
from tl_diffusion_prior.cli.score import add_score_arguments, read_texts, run_score
from tl_diffusion_prior.data import models
from tl_diffusion_prior.priors import MLPPrior, MLPPriorConfig

HOOK = "blocks.1.hook_resid_post"
TEXT = "The cat sat on the mat.\n\n\nIt was a sunny day;\nthe end.\n"


def _parse(argv):
    parser = argparse.ArgumentParser()
    add_score_arguments(parser)
    return parser.parse_args(argv)


@pytest.fixture
def cli_model(monkeypatch):
    """The tiny model with a character tokenizer, loaded instead of the default model."""
    model = build_tiny_model()
    if MODEL_KIND == "hooked":  # a bridge has the same tokenizer already
        model.set_tokenizer(tiny_tokenizer())
    monkeypatch.setattr(models, "load_model", lambda name, device=None, kind=None: model)
    return model


@pytest.fixture
def files(tmp_path, cli_model):
    config = MLPPriorConfig(
        d_model=64, hook_name=HOOK, model_name=cli_model.cfg.model_name, depth=1, d_hidden=32
    )
    randomize_(MLPPrior(config), scale=0.05).save_pretrained(tmp_path / "prior")
    text = tmp_path / "text.txt"
    text.write_text(TEXT, encoding="utf-8")
    return str(tmp_path / "prior"), str(text)


@pytest.fixture
def no_model(monkeypatch):
    def load(*args, **kwargs):
        raise AssertionError("the model must not load")

    monkeypatch.setattr(models, "load_model", load)


def test_arguments_and_defaults():
    args = _parse(["--prior", "p", "--text-file", "a", "--text-file", "b"])
    assert args.text_file == ["a", "b"] and args.plot is None and not args.whole_file
    assert (args.method, args.levels, args.seed, args.max_tokens) == ("elbo", None, 0, 256)
    assert args.model_kind is None
    with pytest.raises(SystemExit):  # --text-file is required
        _parse(["--prior", "p"])


def test_paragraphs_or_whole_files(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text(TEXT, encoding="utf-8")
    texts = read_texts([str(path)], whole_file=False)
    assert [text for _, text in texts] == [
        "The cat sat on the mat.",
        "It was a sunny day;\nthe end.",
    ]
    assert texts[1][0].endswith("paragraph 2")
    assert read_texts([str(path)], whole_file=True) == [(str(path), TEXT.strip())]


def test_prints_a_score_per_token_and_plots(files, tmp_path, capsys, cli_model):
    prior, text = files
    plot = tmp_path / "scores.png"
    assert main(["score", "--prior", prior, "--text-file", text, "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert f"at {HOOK}; score: elbo at t = 0.1, 0.25, 0.5, seed 0" in out
    blocks = out.split("== ")[1:]
    assert len(blocks) == 2 and blocks[0].startswith(f"{text}, paragraph 1: ")
    rows = [line.split() for line in blocks[0].splitlines()[1:] if line.startswith(" ")]
    n_tokens = cli_model.to_tokens("The cat sat on the mat.", prepend_bos=True).shape[1]
    assert len(rows) == n_tokens and rows[0][1] == "-"  # the BOS is not scored
    scores = [float(row[1]) for row in rows[1:]]
    assert all(math.isfinite(s) and s > 0 for s in scores)
    assert plot.stat().st_size > 1000 and f"plot saved to {plot}" in out
    # Deterministic, and the seed changes the scores.
    assert main(["score", "--prior", prior, "--text-file", text, "--plot", str(plot)]) == 0
    assert capsys.readouterr().out == out
    assert main(["score", "--prior", prior, "--text-file", text, "--seed", "1"]) == 0
    assert capsys.readouterr().out.split("== ")[1:] != blocks


def test_one_step_and_truncation(files, capsys):
    prior, text = files
    argv = ["score", "--prior", prior, "--text-file", text, "--whole-file", "--max-tokens", "5"]
    assert main([*argv, "--method", "one_step"]) == 0
    out = capsys.readouterr().out
    assert "one_step at t = 0.25," in out and "(truncated): 4 tokens scored" in out
    assert main([*argv, "--method", "ode", "--ode-steps", "4"]) == 0
    assert "score: ode, 4 Euler steps, seed 0 (negative log-likelihood" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--text-file", "missing.txt"], "does not exist"),
        (["--levels", "0.1", "1.5"], "levels"),
        (["--method", "one_step", "--levels", "0.1", "0.2"], "one noise level"),
        (["--max-tokens", "1"], "--max-tokens"),
        (["--method", "ode", "--levels", "0.5"], "levels=None"),
        (["--ode-steps", "0"], "ode_steps"),
        (["--plot", "scores.jpg"], "--plot must end in one of"),
        (["--plot", "no/such/folder/scores.png"], "its folder does not exist"),
    ],
)
def test_mistakes_are_refused_before_the_model_loads(files, no_model, capsys, extra, match):
    prior, text = files
    assert main(["score", "--prior", prior, "--text-file", text, *extra]) == USER_ERROR_EXIT
    err = capsys.readouterr().err
    assert err.startswith("tl-diffusion-prior score: error: ") and match in err


def test_empty_or_binary_files_and_a_missing_prior_are_refused_early(tmp_path, no_model, files):
    prior, text = files
    empty, binary = tmp_path / "empty.txt", tmp_path / "binary.txt"
    empty.write_text("\n \n", encoding="utf-8")
    binary.write_bytes(b"\xff\xfe\x00abc")
    for path, match in ((empty, "holds no text"), (binary, "not UTF-8")):
        with pytest.raises(ValueError, match=match):
            run_score(_parse(["--prior", prior, "--text-file", str(path)]))
    with pytest.raises(OSError):
        run_score(_parse(["--prior", str(tmp_path / "none"), "--text-file", text]))


def test_a_prior_of_another_model_is_refused(files, tmp_path, cli_model, capsys):
    _, text = files
    config = MLPPriorConfig(d_model=64, hook_name=HOOK, model_name="another-model", depth=1)
    MLPPrior(config).save_pretrained(tmp_path / "other")
    assert main(["score", "--prior", str(tmp_path / "other"), "--text-file", text]) == 2
    assert "another-model" in capsys.readouterr().err
