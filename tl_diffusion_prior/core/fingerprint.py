"""A cheap fingerprint of a model's weights, to tell two models with the same name apart.

It lives in ``core`` (it needs only torch and TransformerLens) so that priors, which import
nothing else, can compute it in
:meth:`~tl_diffusion_prior.priors.base.DiffusionPrior.check_compatible`.

Priors, buffers, baselines and checkpoints record the ``model_name`` they came from, but a
fine-tuned or differently converted model can share that name while its activations differ. The
fingerprint is a short hash of the first row of a few fixed parameters (the first
:data:`N_FIRST_TENSORS` in ``named_parameters()`` order, which for a ``HookedTransformer`` are the
embedding and the first block's weights, and the last one, the unembedding), with their names and
shapes. A TransformerBridge's are read under the same names
(:func:`~tl_diffusion_prior.core.lens.fingerprint_parameters`), so a prior trained on the
HookedTransformer of a model is accepted by its bridge and the other way round. The slices are
taken on the model's device; only :data:`N_VALUES` values per tensor reach the host, never a whole
weight.

Values are rounded to bfloat16 before hashing, so the same weights held in float32, bfloat16 or
float64 give the same fingerprint. A float16 copy rounds differently and gets another one.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn

from tl_diffusion_prior.core.lens import fingerprint_parameters

# Parameters hashed: the first few (embedding, first block) and the last (unembedding).
N_FIRST_TENSORS = 4
# Values of each hashed tensor: the start of its first row.
N_VALUES = 256
# Hex digits kept of the sha256: 64 bits, enough to tell models apart by accident.
N_HEX = 16


@torch.no_grad()
def model_fingerprint(model: nn.Module) -> str:
    """A short hex hash of a few fixed weight slices of ``model``; "" for a model without any.

    Equal for the same weights in float32, bfloat16 or float64, on any device.
    """
    chosen = fingerprint_parameters(model, N_FIRST_TENSORS)
    if not chosen:
        return ""
    digest = hashlib.sha256()
    for name, parameter in chosen:
        row = parameter.detach().reshape(1) if parameter.ndim == 0 else parameter.detach()
        while row.ndim > 1:  # indexing is a view: no copy of the weight
            row = row[0]
        values = row[:N_VALUES].to(torch.bfloat16).to("cpu", torch.float32).contiguous()
        digest.update(f"{name}:{tuple(parameter.shape)}:".encode())
        digest.update(values.numpy().tobytes())
    return digest.hexdigest()[:N_HEX]
