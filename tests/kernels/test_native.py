"""The native (compiled C) delta rule: built with the system compiler, checked against the step loop, dispatched
as the CPU default without grad, and the chunked PyTorch path with it."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from kernels import delta_rule, dispatch, native, use_backend
from kernels.delta_rule import native as native_delta

from .helpers import rel_err, run_backend
from .test_delta_rule import _inputs


def test_the_library_builds_here():
    assert native.status("delta_rule").startswith("built"), native.status("delta_rule")
    assert native.library("delta_rule") is not None


# (B, H, T, K, V): one step, T not a multiple of anything, V over one 64-column tile (a remainder tile),
# exactly two tiles, tiny K, many heads
SHAPES = [(1, 1, 1, 4, 4), (2, 3, 77, 8, 6), (1, 2, 50, 16, 70), (1, 1, 40, 64, 128), (2, 2, 33, 3, 65),
          (1, 9, 20, 8, 8)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("with_state", [False, True])
def test_forward_matches_the_step_loop(shape, with_state):
    b, h, t, dk, dv = shape
    inputs = _inputs(b, h, t, dk, dv)
    s0 = torch.randn(b, h, dk, dv) if with_state else None
    with use_backend("naive"):
        ref, s_ref = delta_rule(*(x.double() for x in inputs), initial_state=None if s0 is None else s0.double(),
                                return_state=True)
    out, state = native_delta.forward(*inputs, initial_state=s0)
    assert out.dtype == state.dtype == torch.float32
    assert rel_err(ref, out) < 1e-5 and rel_err(s_ref, state) < 1e-5


def test_decays_over_the_whole_range_match_the_step_loop():
    """The kernel's own exp: log-decays from 0 down past float32's normal range (−87.3) and far below."""
    inputs = list(_inputs(1, 2, 64, 16, 64))
    inputs[1] = -torch.cat([torch.zeros(1, 2, 4, 16), torch.logspace(-8, 2.1, 60 * 16).reshape(1, 1, 60, 16)
                            .expand(1, 2, 60, 16)], dim=2)
    s0 = torch.randn(1, 2, 16, 64)
    with use_backend("naive"):
        ref, s_ref = delta_rule(*(x.double() for x in inputs), initial_state=s0.double(), return_state=True)
    out, state = native_delta.forward(*inputs, initial_state=s0)
    assert float(inputs[1].min()) < -120 and rel_err(ref, out) < 1e-5 and rel_err(s_ref, state) < 1e-5


def test_empty_sequence_returns_the_initial_state():
    inputs = [x[:, :, :0] for x in _inputs(1, 2, 5, 4, 3)]
    s0 = torch.randn(1, 2, 4, 3)
    out, state = native_delta.forward(*inputs, initial_state=s0)
    assert out.shape == (1, 2, 0, 3) and torch.equal(state, s0)


def test_the_result_does_not_depend_on_the_thread_count():
    inputs = _inputs(2, 3, 60, 16, 80)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = native_delta.forward(*inputs)
        torch.set_num_threads(2)
        two = native_delta.forward(*inputs)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])


def test_strided_inputs_are_read_correctly():
    inputs = _inputs(1, 2, 30, 8, 8)
    strided = [x.transpose(2, 3).contiguous().transpose(2, 3) for x in inputs]  # same values, other strides
    assert not strided[0].is_contiguous()
    assert torch.equal(native_delta.forward(*inputs)[0], native_delta.forward(*strided)[0])


def test_is_the_cpu_default_without_grad(monkeypatch):
    monkeypatch.delenv("LINGEN_KERNELS", raising=False)
    assert dispatch.select("delta_rule", torch.device("cpu")) is native_delta.delta_rule_native
    calls = []
    real = native_delta.forward
    monkeypatch.setattr(native_delta, "forward", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    inputs = _inputs(1, 2, 20, 8, 8)
    with torch.no_grad():
        out = delta_rule(*inputs)
    with use_backend("torch"):
        ref = delta_rule(*inputs)
    assert calls == [1] and rel_err(ref, out) < 1e-5


def test_with_grad_the_chunked_path_runs_and_gradients_match_the_step_loop(monkeypatch):
    monkeypatch.setattr(native_delta, "forward", lambda *a, **kw: pytest.fail("the forward-only kernel ran"))
    inputs = _inputs(1, 2, 45, 8, 6)
    fn = lambda *x: delta_rule(*x, return_state=True)  # noqa: E731
    ref_out, ref_grads = run_backend("naive", fn, *inputs)
    out, grads = run_backend("native", fn, *inputs)
    for a, b in zip([*ref_out, *ref_grads], [*out, *grads], strict=True):
        assert rel_err(a, b) < 5e-5


def test_float64_goes_to_the_chunked_path():
    inputs = _inputs(1, 1, 12, 4, 4, dtype=torch.float64)
    with use_backend("native"):
        out = delta_rule(*inputs)
    with use_backend("naive"):
        ref = delta_rule(*inputs)
    assert out.dtype == torch.float64 and rel_err(ref, out) < 1e-12


def test_switched_off_it_falls_back_to_torch_and_a_forced_use_says_why(monkeypatch):
    monkeypatch.delenv("LINGEN_KERNELS", raising=False)
    monkeypatch.setenv("LINGEN_NATIVE", "0")
    assert dispatch.select("delta_rule", torch.device("cpu")) is dispatch._REGISTRY["delta_rule"]["torch"]
    with pytest.raises(RuntimeError, match=r"unavailable for 'delta_rule': off \(LINGEN_NATIVE=0\)"), \
            use_backend("native"):
        delta_rule(*_inputs(1, 1, 4, 4, 4))


def test_builds_are_cached_and_leave_no_temporary_files(monkeypatch, tmp_path):
    monkeypatch.setenv("LINGEN_CACHE_DIR", str(tmp_path))
    first = native.build("delta_rule")
    mtime = first.stat().st_mtime_ns
    assert native.build("delta_rule") == first and first.stat().st_mtime_ns == mtime
    assert [p.name for p in (tmp_path / "native").iterdir()] == [first.name]


def test_a_failing_compiler_raises_a_clear_error_and_leaves_nothing(monkeypatch, tmp_path):
    broken = tmp_path / "cc"
    broken.write_text("#!/bin/sh\nif [ \"$1\" = --version ]; then echo broken-cc 1.0; exit 0; fi\n"
                      "echo 'error: this compiler is broken' >&2\nexit 1\n")
    broken.chmod(broken.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("CC", str(broken))
    monkeypatch.setenv("LINGEN_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(native.BuildError, match="this compiler is broken"):
        native.build("delta_rule")
    assert os.listdir(tmp_path / "cache" / "native") == []
