"""``load_prior``: a prior from a folder or a hub name, in this package's format or the paper's.

* A folder with ``config.json`` is a prior saved by ``save_pretrained``
  (:meth:`DiffusionPrior.from_pretrained <tl_diffusion_prior.priors.base.DiffusionPrior.
  from_pretrained>`, which never unpickles).
* A folder with ``config.yaml`` and ``rep_statistics.pt`` is a checkpoint of the paper's release,
  converted on load (:func:`~tl_diffusion_prior.priors.glp_format.load_glp_checkpoint`); save the
  result with ``save_pretrained`` to keep it in our format.
* A name ``org/name`` that is not a local folder is fetched from the Hugging Face Hub
  (:mod:`~tl_diffusion_prior.priors.hub`).
"""

from __future__ import annotations

import os

import torch

from tl_diffusion_prior.constants import CONFIG_NAME, GLP_FINAL_CHECKPOINT
from tl_diffusion_prior.core.precision import resolve_auto_dtype
from tl_diffusion_prior.priors.base import DiffusionPrior
from tl_diffusion_prior.priors.glp_format import is_glp_checkpoint_dir, load_glp_checkpoint
from tl_diffusion_prior.priors.hub import resolve_prior_source


def load_prior(
    source: str | os.PathLike,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    *,
    verify: bool = True,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    checkpoint: str = GLP_FINAL_CHECKPOINT,
) -> DiffusionPrior:
    """Load a prior from a local folder or a Hugging Face Hub repository, in either format.

    Args:
        source: A folder, or ``org/name`` (``org/name@revision``) on the Hugging Face Hub.
        device, dtype: Where to put it and the weights' dtype (None: CPU, the saved dtype; the
            paper's checkpoints load as float32). ``dtype="auto"`` is bfloat16 where ``device``
            computes it natively and float32 elsewhere (faster steering, same results to ~0.3%;
            :mod:`~tl_diffusion_prior.core.precision`).
        verify: Compare our format's weights with their recorded checksums (False skips that
            read of the file, for speed).
        revision: A branch, tag or commit of the hub repository (default: its main branch).
        cache_dir: The Hugging Face cache folder to use (default: ``HF_HUB_CACHE``).
        checkpoint: For the paper's format, ``"final"`` or an intermediate checkpoint
            (``"epoch_0032"``).

    A multi-layer checkpoint of the paper loads with no layer picked: ``.at_layer(L)`` gives the
    prior of layer ``L``.
    """
    dtype = resolve_auto_dtype(dtype, device)
    directory, provenance = resolve_prior_source(
        source, revision=revision, cache_dir=cache_dir, checkpoint=checkpoint
    )
    if not (directory / CONFIG_NAME).is_file() and is_glp_checkpoint_dir(directory):
        return load_glp_checkpoint(
            directory, checkpoint=checkpoint, device=device, dtype=dtype, provenance=provenance
        )
    if checkpoint != GLP_FINAL_CHECKPOINT:
        raise ValueError(
            f"checkpoint={checkpoint!r} selects a checkpoint of the paper's release format, but "
            f"{directory} is not one (no config.yaml and rep_statistics.pt); drop checkpoint=."
        )
    if not (directory / CONFIG_NAME).is_file() and directory.is_dir():
        found = sorted(p.name for p in directory.iterdir())
        raise FileNotFoundError(
            f"{directory} holds no prior: it has neither {CONFIG_NAME} (a prior saved with "
            "save_pretrained) nor config.yaml and rep_statistics.pt (a checkpoint of the paper's "
            f"release); it has {found[:10]}."
        )
    return DiffusionPrior.from_pretrained(directory, device=device, dtype=dtype, verify=verify)
