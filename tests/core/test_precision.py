import pytest
import torch

from tl_diffusion_prior.core import precision
from tl_diffusion_prior.core.precision import has_fast_bf16, resolve_auto_dtype


def test_cpu_bf16_probe_answers_a_bool():
    assert precision.cpu_has_fast_bf16() in (True, False)


def test_auto_is_bf16_only_on_a_cpu_that_computes_it_natively(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: True)
    assert has_fast_bf16("cpu") and has_fast_bf16(None)
    assert resolve_auto_dtype("auto", "cpu") == torch.bfloat16
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: False)
    assert not has_fast_bf16(torch.device("cpu"))
    assert resolve_auto_dtype("auto", None) == torch.float32


def test_auto_on_cuda_asks_for_native_bf16_not_emulation(monkeypatch):
    asked = {}

    def supported(including_emulation=True):
        asked["including_emulation"] = including_emulation
        return False

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", supported)
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: True)  # the CPU does not count
    assert resolve_auto_dtype("auto", "cuda") == torch.float32
    assert asked == {"including_emulation": False}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert not has_fast_bf16("cuda")


def test_explicit_dtypes_pass_through_and_other_names_are_refused():
    assert resolve_auto_dtype(torch.float32, "cpu") == torch.float32
    assert resolve_auto_dtype(torch.bfloat16, "cpu") == torch.bfloat16
    assert resolve_auto_dtype(None, "cpu") is None
    with pytest.raises(ValueError, match="torch.float32 or torch.bfloat16"):
        resolve_auto_dtype("fp16", "cpu")
