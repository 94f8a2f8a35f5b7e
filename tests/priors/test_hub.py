"""Priors by Hugging Face Hub name, from a cache folder laid out as huggingface_hub lays it out.

No test here reaches the network: ``no_network`` makes every socket connection fail, and the
cache is built under ``tmp_path`` (``models--org--name/refs/<ref>`` holding a commit hash and
``snapshots/<commit>/`` holding the files), then read with ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest
import torch

from tl_diffusion_prior.cli.eval import _load_priors
from tl_diffusion_prior.priors import GLPPrior, MLPPrior, load_prior, resolve_prior_dir
from tl_diffusion_prior.priors.hub import parse_hub_name

from .glp_release import write_release
from .helpers import build_tiny_prior, randomize_

COMMIT_A, COMMIT_B = "a" * 40, "b" * 40


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def offline(monkeypatch, no_network):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def cache_repo(cache: Path, repo_id: str, source: Path, commit: str, refs=("main",)) -> Path:
    """Put the files of folder ``source`` in the hub cache as ``repo_id`` at ``commit``."""
    storage = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = storage / "snapshots" / commit
    shutil.copytree(source, snapshot)
    (storage / "refs").mkdir(parents=True, exist_ok=True)
    for ref in refs:
        (storage / "refs" / ref).write_text(commit)
    return snapshot


def tiny_mlp(seed=0) -> MLPPrior:
    return randomize_(build_tiny_prior("mlp"), seed=seed).eval()


def _outputs(prior):
    z = torch.randn(3, prior.config.d_model, generator=torch.Generator().manual_seed(0))
    x = prior.normalizer.denormalize(z)
    noise = torch.randn(3, prior.config.d_model, generator=torch.Generator().manual_seed(1))
    return prior.denoise(x, num_steps=2, noise=noise)


@pytest.mark.parametrize(
    "value, parsed",
    [
        ("org/name", ("org/name", None)),
        (
            "generative-latent-prior/glp-llama1b-d6@v1.0",
            ("generative-latent-prior/glp-llama1b-d6", "v1.0"),
        ),
        ("org/name@" + COMMIT_A, ("org/name", COMMIT_A)),
        ("./runs/mlp", None),
        ("/abs/prior", None),
        ("a/b/c", None),
        ("default", None),
        ("../prior", None),
        ("org/..", None),
    ],
)
def test_parse_hub_name(value, parsed):
    assert parse_hub_name(value) == parsed


def test_our_format_loads_by_name_and_revision(tmp_path, offline):
    cache = tmp_path / "cache"
    first, second = tiny_mlp(0), tiny_mlp(1)
    first.save_pretrained(tmp_path / "first")
    second.save_pretrained(tmp_path / "second")
    cache_repo(cache, "org/prior", tmp_path / "first", COMMIT_A, refs=("main",))
    cache_repo(cache, "org/prior", tmp_path / "second", COMMIT_B, refs=("v2",))
    main = load_prior("org/prior", cache_dir=cache)
    assert type(main) is MLPPrior
    torch.testing.assert_close(_outputs(main), _outputs(first), rtol=0, atol=0)
    for loaded in (
        load_prior("org/prior", cache_dir=cache, revision="v2"),
        load_prior("org/prior@v2", cache_dir=cache),
        load_prior("org/prior", cache_dir=cache, revision=COMMIT_B),
    ):
        torch.testing.assert_close(_outputs(loaded), _outputs(second), rtol=0, atol=0)
    with pytest.raises(ValueError, match="give it once"):
        load_prior("org/prior@v2", cache_dir=cache, revision="main")


def test_release_format_loads_by_name_with_provenance(tmp_path, offline):
    cache = tmp_path / "cache"
    write_release(tmp_path / "glp")
    cache_repo(cache, "generative-latent-prior/glp-tiny", tmp_path / "glp", COMMIT_A)
    prior = load_prior("generative-latent-prior/glp-tiny", cache_dir=cache)
    assert type(prior) is GLPPrior and prior.config.hook_name == "blocks.7.hook_resid_post"
    source = prior.training_record["source"]
    assert source["repo_id"] == "generative-latent-prior/glp-tiny"
    assert source["commit"] == COMMIT_A and source["revision"] == "main"
    prior.save_pretrained(tmp_path / "ours")
    card = (tmp_path / "ours" / "README.md").read_text()
    assert "generative-latent-prior/glp-tiny" in card and COMMIT_A in card


def test_offline_without_a_cached_copy_says_what_to_do(tmp_path, offline):
    with pytest.raises(FileNotFoundError) as info:
        load_prior("org/missing", cache_dir=tmp_path / "cache", revision="v3")
    message = str(info.value)
    assert "'org/missing' at revision 'v3' is not a local folder" in message
    assert "HF_HUB_OFFLINE is set" in message
    assert "huggingface-cli download org/missing --revision v3" in message


def test_unreachable_hub_falls_back_to_the_cache(tmp_path, no_network, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "1")
    cache = tmp_path / "cache"
    tiny_mlp().save_pretrained(tmp_path / "p")
    cache_repo(cache, "org/prior", tmp_path / "p", COMMIT_A)
    assert type(load_prior("org/prior", cache_dir=cache)) is MLPPrior
    with pytest.raises(FileNotFoundError, match="the Hub could not be reached"):
        load_prior("org/other", cache_dir=cache)


def test_a_local_folder_wins_over_a_hub_name(tmp_path, offline, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tiny_mlp().save_pretrained(Path("org") / "prior")
    assert type(load_prior("org/prior")) is MLPPrior  # no cache exists: it must be the folder
    with pytest.raises(ValueError, match="revision='v1' applies to a Hugging Face Hub name"):
        load_prior("org/prior", revision="v1")
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_prior(tmp_path / "missing")


def test_a_folder_with_neither_format_is_named(tmp_path):
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "weights.bin").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"neither config.json.*\['weights.bin'\]"):
        load_prior(tmp_path / "odd")
    tiny_mlp().save_pretrained(tmp_path / "ours")
    with pytest.raises(ValueError, match="drop checkpoint="):
        load_prior(tmp_path / "ours", checkpoint="epoch_0002")


def test_cli_prior_option_takes_a_hub_name(tmp_path, offline, monkeypatch):
    import huggingface_hub.constants

    cache = tmp_path / "cache"
    tiny_mlp().save_pretrained(tmp_path / "p")
    cache_repo(cache, "org/prior", tmp_path / "p", COMMIT_A, refs=("v1",))
    # The command line uses the default cache (HF_HUB_CACHE), read when downloading.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    (prior,) = _load_priors([resolve_prior_dir("org/prior@v1")], None)
    assert type(prior) is MLPPrior


def test_load_prior_takes_auto_for_native_bf16_and_keeps_the_saved_dtype_by_default(
    tmp_path, monkeypatch
):
    from tl_diffusion_prior.core import precision

    build_tiny_prior("mlp").save_pretrained(tmp_path / "prior")
    assert load_prior(tmp_path / "prior").dtype == torch.float32  # as saved
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: True)
    loaded = load_prior(tmp_path / "prior", dtype="auto")
    assert loaded.dtype == torch.bfloat16 and loaded.normalizer.mean.dtype == torch.float32
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: False)
    assert load_prior(tmp_path / "prior", dtype="auto").dtype == torch.float32
    with pytest.raises(ValueError, match="torch.dtype, None or 'auto'"):
        load_prior(tmp_path / "prior", dtype="half")
