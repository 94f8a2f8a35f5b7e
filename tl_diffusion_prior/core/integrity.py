"""Detect corrupt and mismatched files: checksums, finite tensors and source fingerprints.

* A saved prior or baseline directory holds ``checksums.json`` (:data:`CHECKSUMS_NAME`), mapping
  the name of each weight file to the sha256 of its bytes; :func:`verify_checksums` compares them
  on load. A directory without it (saved before checksums existed) is not checked.
* A file holding one safetensors state (a buffer) records the sha256 of each tensor's bytes in its
  own header metadata (:func:`tensor_sha256`), so it needs no second file to travel with it.
* A training checkpoint's JSON files record the sha256 of the safetensors file beside them
  (:func:`verify_file_sha256` compares it on resume).
* :func:`check_finite` refuses NaN/inf in loaded weights, naming the tensor and the file.
* :func:`check_same_source` compares two recorded facts about a file's origin (a hook name, a
  model's weight fingerprint) and names both sides when they differ; an empty side (an old file
  that recorded nothing) is not compared.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import Tensor

from tl_diffusion_prior.constants import CHECKSUMS_NAME
from tl_diffusion_prior.core.serialization import atomic_write_json, read_json


class CorruptFileError(ValueError):
    """A file's bytes or values are not what was written (a flipped byte, NaN weights)."""


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of the file's bytes, as hex (read in chunks, never whole into memory)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def write_checksums(directory: str | os.PathLike, names: Iterable[str]) -> None:
    """Write ``checksums.json`` in ``directory``: each of ``names`` -> the sha256 of that file."""
    directory = Path(directory)
    atomic_write_json(
        directory / CHECKSUMS_NAME, {name: file_sha256(directory / name) for name in names}
    )


def verify_checksums(directory: str | os.PathLike) -> None:
    """Compare every file ``checksums.json`` lists with its recorded sha256.

    A directory without ``checksums.json`` (written before checksums existed) passes unchecked.

    Raises:
        CorruptFileError: a listed file is missing or its bytes changed since it was written.
    """
    directory = Path(directory)
    path = directory / CHECKSUMS_NAME
    if not path.is_file():
        return
    recorded = read_json(path)
    if not isinstance(recorded, dict) or not all(isinstance(v, str) for v in recorded.values()):
        raise CorruptFileError(
            f"{path!s} is not a JSON object of file name -> sha256; the save is damaged. Save it "
            "again, or delete that file to load without checking."
        )
    for name, digest in recorded.items():
        verify_file_sha256(directory / name, digest, CHECKSUMS_NAME)


def verify_file_sha256(path: str | os.PathLike, digest: str, recorded_in: str) -> None:
    """Compare the file at ``path`` with the sha256 ``digest`` that ``recorded_in`` (a file name,
    for the message) holds for it.

    Raises:
        CorruptFileError: the file is missing or its bytes changed since it was written.
    """
    path = Path(path)
    if not path.is_file():
        raise CorruptFileError(f"{path!s} is missing but {recorded_in} lists it; it is incomplete.")
    found = file_sha256(path)
    if found != digest:
        raise CorruptFileError(
            f"{path!s} is corrupt: its sha256 is {found}, but {recorded_in} recorded {digest} when "
            "it was saved. Restore the file from a copy or save it again (verify=False loads it "
            "anyway)."
        )


def _tensor_bytes(tensor: Tensor) -> memoryview:
    # The bytes safetensors stores: contiguous, little-endian, on the host. Viewing as uint8
    # works for every dtype (numpy has no bfloat16) without another copy.
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy())


def tensor_sha256(tensors: Mapping[str, Tensor]) -> dict[str, str]:
    """Name -> the sha256 of each tensor's bytes (as safetensors stores them), as hex."""
    return {name: hashlib.sha256(_tensor_bytes(t)).hexdigest() for name, t in tensors.items()}


def verify_tensor_sha256(
    tensors: Mapping[str, Tensor], recorded: Mapping[str, str], path: str | os.PathLike
) -> None:
    """Compare each loaded tensor with the sha256 recorded for it in the file at ``path``.

    Raises:
        CorruptFileError: a tensor is missing, unexpected or its bytes changed.
    """
    if set(tensors) != set(recorded):
        raise CorruptFileError(
            f"{path!s} holds tensors {sorted(tensors)} but its header recorded checksums for "
            f"{sorted(recorded)}; the file is damaged."
        )
    for name, digest in tensor_sha256(tensors).items():
        if digest != recorded[name]:
            raise CorruptFileError(
                f"{path!s} is corrupt: tensor {name!r} has sha256 {digest}, but {recorded[name]} "
                "was recorded when it was saved. Restore the file from a copy or write it again "
                "(verify=False loads it anyway)."
            )


def check_finite(tensors: Mapping[str, Tensor], path: str | os.PathLike) -> None:
    """Refuse NaN or inf in any floating-point tensor, naming the tensor and ``path``.

    Raises:
        CorruptFileError: a tensor holds a non-finite value.
    """
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            n_bad = int((~torch.isfinite(tensor)).sum())
            raise CorruptFileError(
                f"{path!s} holds {n_bad} NaN/inf value(s) in {name!r}; the weights are damaged "
                "(or training diverged before the save). Restore the file from a copy or train "
                "again."
            )


def check_same_source(
    what: str, left: tuple[str, str | None], right: tuple[str, str | None], fix: str
) -> None:
    """Raise ValueError naming both sides when two recorded values of ``what`` differ.

    Args:
        what: The fact compared, for the message: ``"model fingerprint"``, ``"hook"``.
        left / right: ``(description of the side, value)``, e.g. ``("the prior", "ab12...")``;
            a None or empty value (an old file that recorded nothing) skips the comparison.
        fix: What to do about a mismatch, appended to the message.
    """
    (left_name, left_value), (right_name, right_value) = left, right
    if not left_value or not right_value or left_value == right_value:
        return
    raise ValueError(
        f"{what} mismatch: {left_name} has {left_value!r}, {right_name} has {right_value!r}. {fix}"
    )
