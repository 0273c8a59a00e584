"""Which dtype `auto` resolves to: bf16 on CUDA and on CPUs with native bf16, fp32 elsewhere."""

from __future__ import annotations

import pytest

from sensecf import precision


@pytest.mark.parametrize(("native", "expected"), [(True, "bfloat16"), (False, "float32")])
def test_auto_on_a_cpu_follows_native_bf16(monkeypatch, native, expected):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    assert precision.resolve_dtype("auto", "cpu") == expected
    assert precision.resolve_dtype("auto", "cuda:1") == "bfloat16"


def test_an_explicit_dtype_is_kept_and_an_unknown_one_is_named(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert precision.resolve_dtype("bfloat16", "cpu") == "bfloat16"
    assert precision.resolve_dtype("float32", "cuda") == "float32"
    with pytest.raises(ValueError, match="unknown dtype 'fp16'"):
        precision.resolve_dtype("fp16", "cpu")
