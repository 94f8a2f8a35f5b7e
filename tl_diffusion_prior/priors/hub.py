"""Find a prior by name: a local folder, or a Hugging Face Hub repository downloaded to its cache.

``load_prior("org/name")`` and ``--prior org/name`` come here when ``org/name`` is not a local
folder. The repository may hold a prior in this package's format (``config.json``,
``model.safetensors``, ...) or one of the paper's released checkpoints (``config.yaml``,
``final.safetensors``, ``rep_statistics.pt``); only those files are fetched (intermediate
checkpoints only when asked for), with ``huggingface_hub.snapshot_download``, into its cache
(``cache_dir``, else ``HF_HUB_CACHE``/``HF_HOME``). A revision is a branch, tag or commit; on the
command line it follows an ``@``: ``org/name@v1``.

Offline (``HF_HUB_OFFLINE=1``, or no network) the cached snapshot is used; when there is none the
error says how to get one. Nothing is unpickled here: loading goes through
:func:`~tl_diffusion_prior.priors.loading.load_prior`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from tl_diffusion_prior.constants import (
    CHECKSUMS_NAME,
    CONFIG_NAME,
    GLP_CHECKPOINTS_DIRNAME,
    GLP_CONFIG_NAME,
    GLP_FINAL_CHECKPOINT,
    GLP_STATS_NAME,
    HF_HUB_OFFLINE_ENV_VAR,
    MODEL_CARD_NAME,
    TRAINING_RECORD_NAME,
    WEIGHTS_NAME,
)

# A Hub repository id: "org/name", each part letters, digits, "-", "_", "." (no "..", no leading
# "." or "-"); optionally "@revision".
_HUB_NAME = re.compile(
    r"(?P<repo>[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*)(?:@(?P<rev>[^\s@]+))?"
)
_TRUE = {"1", "ON", "YES", "TRUE"}


def parse_hub_name(value: str | os.PathLike) -> tuple[str, str | None] | None:
    """``(repo_id, revision)`` if ``value`` reads as ``org/name[@revision]``, else None."""
    if not isinstance(value, str | os.PathLike):
        return None
    match = _HUB_NAME.fullmatch(os.fspath(value))
    if match is None or ".." in match["repo"] or match["repo"].endswith((".", "-")):
        return None
    return match["repo"], match["rev"]


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` asks for the cache only (read at each call, not at import)."""
    return os.environ.get(HF_HUB_OFFLINE_ENV_VAR, "").strip().upper() in _TRUE


def prior_files(checkpoint: str = GLP_FINAL_CHECKPOINT) -> list[str]:
    """The files a prior needs, in either format, for ``allow_patterns``."""
    ours = [CONFIG_NAME, WEIGHTS_NAME, TRAINING_RECORD_NAME, CHECKSUMS_NAME, MODEL_CARD_NAME]
    name = checkpoint.removesuffix(".safetensors")
    weights = [f"{name}.safetensors"]
    if "/" not in name:
        weights.append(f"{GLP_CHECKPOINTS_DIRNAME}/{name}.safetensors")
    return [*ours, GLP_CONFIG_NAME, GLP_STATS_NAME, *weights]


def resolve_prior_source(
    source: str | os.PathLike,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    checkpoint: str = GLP_FINAL_CHECKPOINT,
) -> tuple[Path, dict[str, Any]]:
    """The local folder ``source`` names, and where it came from.

    An existing path is used as it is. Otherwise ``org/name[@revision]`` is downloaded (or found
    in the cache offline); anything else is returned as a path, for the loader to report missing.

    Returns:
        ``(folder, provenance)``; ``provenance`` is ``{}`` for a local folder, else the repo id,
        the revision asked for and the commit the snapshot is at.

    Raises:
        FileNotFoundError: the name is no local folder and no cached or downloadable repository.
        ValueError: the revision does not exist, or one came both in the name and as revision=.
    """
    path = Path(source)
    parsed = None if path.exists() else parse_hub_name(source)
    if parsed is None:
        if revision is not None:
            raise ValueError(
                f"revision={revision!r} applies to a Hugging Face Hub name (org/name), but "
                f"{os.fspath(source)!r} is a local path; drop revision= or pass a hub name."
            )
        return path, {}
    repo_id, name_revision = parsed
    if name_revision is not None and revision is not None and name_revision != revision:
        raise ValueError(
            f"{os.fspath(source)!r} names revision {name_revision!r} but revision={revision!r} was "
            "passed too; give it once."
        )
    revision = revision or name_revision
    folder = download_prior(repo_id, revision=revision, cache_dir=cache_dir, checkpoint=checkpoint)
    return folder, {"repo_id": repo_id, "revision": revision or "main", "commit": folder.name}


def download_prior(
    repo_id: str,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    checkpoint: str = GLP_FINAL_CHECKPOINT,
) -> Path:
    """``snapshot_download`` of a prior's files (the cache only when offline); clear errors."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    offline = hub_offline()
    where = (
        f"the Hugging Face cache {os.fspath(cache_dir)!r}"
        if cache_dir
        else "the Hugging Face cache"
    )
    rev = f" --revision {revision}" if revision else ""
    try:
        folder = snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=cache_dir,
            allow_patterns=prior_files(checkpoint),
            local_files_only=offline,
        )
    except RevisionNotFoundError as exc:
        raise ValueError(
            f"The Hub repository {repo_id!r} has no revision {revision!r}; pass an existing "
            "branch, tag or commit (revision=..., or org/name@revision on the command line)."
        ) from exc
    except RepositoryNotFoundError as exc:
        raise FileNotFoundError(
            f"{repo_id!r} is neither a local folder nor a model repository on the Hugging Face Hub "
            "(or it is private or gated: log in with `huggingface-cli login`). Check the name, or "
            "pass the path of a saved prior."
        ) from exc
    except LocalEntryNotFoundError as exc:
        reason = (
            f"{HF_HUB_OFFLINE_ENV_VAR} is set, so nothing is downloaded"
            if offline
            else "the Hub could not be reached"
        )
        raise FileNotFoundError(
            f"{repo_id!r}{f' at revision {revision!r}' if revision else ''} is not a local folder "
            f"and not in {where}, and {reason}. Download it once with network access "
            f"(unset {HF_HUB_OFFLINE_ENV_VAR}, or run `huggingface-cli download {repo_id}{rev}"
            f"{f' --cache-dir {os.fspath(cache_dir)}' if cache_dir else ''}`), or pass the path "
            "of a local folder."
        ) from exc
    return Path(folder)
