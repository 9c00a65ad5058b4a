"""The dispatcher: CPU default, forcing by context and environment, clear failures."""

from __future__ import annotations

import pytest
import torch

from kernels import available_backends, dispatch, linear_attention, use_backend


@pytest.mark.parametrize("op", ["linear_attention", "delta_rule", "neighborhood_attention_2d"])
def test_every_op_has_naive_and_torch_paths(op):
    assert {"naive", "torch"} <= set(available_backends(op))


def test_cpu_default_is_torch(monkeypatch):
    monkeypatch.delenv("LINGEN_KERNELS", raising=False)
    impl = dispatch.select("linear_attention", torch.device("cpu"))
    assert impl is dispatch._REGISTRY["linear_attention"]["torch"]


def test_environment_forces_backend(monkeypatch):
    monkeypatch.setenv("LINGEN_KERNELS", "naive")
    assert dispatch.select("delta_rule", torch.device("cpu")) is dispatch._REGISTRY["delta_rule"]["naive"]
    monkeypatch.setenv("LINGEN_KERNELS", "cuda-magic")
    with pytest.raises(ValueError, match="LINGEN_KERNELS"):
        dispatch.select("delta_rule", torch.device("cpu"))


def test_context_overrides_environment(monkeypatch):
    monkeypatch.setenv("LINGEN_KERNELS", "naive")
    with use_backend("torch"):
        assert dispatch.select("delta_rule", torch.device("cpu")) is dispatch._REGISTRY["delta_rule"]["torch"]


def test_unknown_backend_is_rejected():
    with pytest.raises(ValueError, match="unknown backend"), use_backend("numpy"):
        pass


def test_forced_naive_is_actually_used(monkeypatch):
    calls = []
    real = dispatch._REGISTRY["linear_attention"]["naive"]
    monkeypatch.setitem(dispatch._REGISTRY["linear_attention"], "naive",
                        lambda *a, **kw: calls.append(1) or real(*a, **kw))
    q = torch.randn(1, 1, 4, 2)
    with use_backend("naive"):
        linear_attention(q, q, q, causal=True)
    assert calls == [1]
