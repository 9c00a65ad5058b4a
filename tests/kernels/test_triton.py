"""The Triton kernels against the naive references, forward and backward (the backward recomputes in PyTorch).

Without a GPU the kernels run under the Triton interpreter on CPU tensors. ``TRITON_INTERPRET=1`` must be set
before triton is first imported: ``@triton.jit`` (triton.language's own helpers included) picks compiled or
interpreted mode when it decorates. This module sets it before importing triton; when something earlier in
the same pytest process (diffusers, torch._dynamo) already imported triton in compiled mode, the tests here
are re-run in a fresh interpreter process by :func:`test_interpreter_suite_in_fresh_process` instead. On a
machine with CUDA the same tests run the compiled kernels on the GPU.

Shapes are tiny (B·H ≤ 4, T ≤ 130, D ≤ 32, maps ≤ 12×12): the interpreter simulates every program in numpy.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu":
    os.environ["TRITON_INTERPRET"] = "1"

import triton.language as tl  # noqa: E402  (triton is a dependency of this torch build: fail loudly without it)
from triton.runtime.interpreter import InterpretedFunction  # noqa: E402

from kernels import (  # noqa: E402
    available_backends,
    delta_rule,
    dispatch,
    linear_attention,
    neighborhood_attention_2d,
    use_backend,
)

from .helpers import rel_err  # noqa: E402

IN_PROCESS = DEVICE == "cuda" or isinstance(tl.zeros, InterpretedFunction)

TOL = 2e-5  # float32 kernel vs float32 / float64 reference, relative RMS error
HALF_TOL = 1e-2


@pytest.fixture(autouse=True)
def _interpretable(request):
    if not IN_PROCESS and request.node.originalname != "test_interpreter_suite_in_fresh_process":
        pytest.skip("triton was imported in compiled mode before TRITON_INTERPRET=1 could be set; this test runs "
                    "in a fresh process (test_interpreter_suite_in_fresh_process)")


def _randn(*shape, dtype=torch.float32):
    return torch.randn(*shape, dtype=dtype).to(DEVICE)


def _run(backend, fn, *tensors, **kwargs):
    """Outputs and input gradients of ``fn`` under ``backend`` for a fixed random cotangent on every output."""
    leaves = [None if t is None else t.detach().clone().requires_grad_() for t in tensors]
    with use_backend(backend):
        out = fn(*leaves, **kwargs)
    outs = out if isinstance(out, tuple) else (out,)
    gen = torch.Generator().manual_seed(1234)
    loss = sum((o.float() * torch.randn(o.shape, generator=gen).to(o.device)).sum() for o in outs)
    loss.backward()
    return outs, [None if leaf is None else leaf.grad for leaf in leaves]


def _agree(fn, *tensors, tol=TOL, backward=True):
    """The Triton path matches the naive reference run on the same values widened to float32."""
    ref_out, ref_grads = _run("naive", fn, *(None if t is None else t.float() for t in tensors))
    out, grads = _run("triton", fn, *tensors)
    for i, (a, b) in enumerate(zip(ref_out, out)):
        assert rel_err(a, b) < tol, f"output {i}: rel err {rel_err(a, b):.2e}"
    if backward:
        for i, (a, b) in enumerate(zip(ref_grads, grads)):
            if a is None:
                continue
            assert b is not None and b.dtype == tensors[i].dtype
            assert rel_err(a, b) < tol, f"grad of input {i}: rel err {rel_err(a, b):.2e}"
    return out


# ----------------------------------------------------------------------------------------------------------
# Dispatch and the half-precision hand-over


def test_triton_backend_is_registered_for_every_op():
    for op in ("linear_attention", "delta_rule", "neighborhood_attention_2d"):
        assert "triton" in available_backends(op)
        assert dispatch._REGISTRY[op]["triton"].accepts_half


@pytest.mark.parametrize("backend, expected", [("triton", torch.float16), ("torch", torch.float32)])
def test_half_inputs_reach_only_the_triton_backend_unconverted(monkeypatch, backend, expected):
    seen = []
    real = dispatch._REGISTRY["linear_attention"][backend]

    def spy(q, k, v, **kw):
        seen.append((q.dtype, v.dtype))
        return real(q, k, v, **kw)

    spy.accepts_half = getattr(real, "accepts_half", False)
    monkeypatch.setitem(dispatch._REGISTRY["linear_attention"], backend, spy)
    q = _randn(1, 1, 5, 16).half()
    with use_backend(backend):
        out = linear_attention(q, q, q, causal=True, normalize=True, feature_map="relu")
    assert seen == [(expected, expected)] and out.dtype == torch.float16


# ----------------------------------------------------------------------------------------------------------
# Linear attention


def _la(causal=False, block_sizes=None, normalize=False, feature_map=None):
    def fn(q, k, v, g=None, s0=None):
        return linear_attention(q, k, v, causal=causal, block_sizes=block_sizes, log_decay=g, initial_state=s0,
                                normalize=normalize, feature_map=feature_map, return_state=True)
    return fn


def _decay(kind, b, h, t, dk, dtype=torch.float32):
    if kind == "head":
        return -torch.rand(b, h, t, dtype=dtype).to(DEVICE)
    return -torch.rand(b, h, t, dk, dtype=dtype).to(DEVICE) * 0.5


@pytest.mark.parametrize("shape", [(1, 1, 1, 16, 16), (1, 2, 37, 16, 20), (2, 1, 130, 32, 8)])
@pytest.mark.parametrize("decay", [None, "head", "key"])
def test_causal_matches_step_loop(shape, decay):
    b, h, t, dk, dv = shape
    q, k, v = _randn(b, h, t, dk), _randn(b, h, t, dk), _randn(b, h, t, dv)
    s0 = _randn(b, h, dk, dv)
    g = None if decay is None else _decay(decay, b, h, t, dk)
    _agree(_la(causal=True), q, k, v, g, s0)


def test_causal_head_dim_not_a_power_of_two_with_normaliser():
    q, k, v = _randn(1, 2, 45, 12), _randn(1, 2, 45, 12), _randn(1, 2, 45, 7)
    _agree(_la(causal=True, normalize=True, feature_map="elu+1"), q, k, v, _decay("key", 1, 2, 45, 12))


def test_causal_reads_strided_views_without_copies():
    q, k, v = (_randn(1, 50, 2, 16).transpose(1, 2) for _ in range(3))  # [B, T, H, D] projections, transposed
    assert not q.is_contiguous()
    _agree(_la(causal=True), q, k, v, _decay("head", 1, 2, 50, 16), backward=False)


def test_strong_per_key_decay_stays_finite():
    q, k, v = _randn(1, 1, 40, 16), _randn(1, 1, 40, 16), _randn(1, 1, 40, 16)
    g = -torch.rand(1, 1, 40, 16).to(DEVICE) * 20  # e^{-G} over a chunk would overflow float32
    out = _agree(_la(causal=True), q, k, v, g, backward=False)
    assert torch.isfinite(out[0]).all()


@pytest.mark.parametrize("split", [1, 16, 45])
@pytest.mark.parametrize("decay", [None, "key"])
def test_causal_two_pieces_with_carried_state_equal_one_pass(split, decay):
    t = 60
    q, k, v = _randn(1, 2, t, 16), _randn(1, 2, t, 16), _randn(1, 2, t, 16)
    g = None if decay is None else _decay(decay, 1, 2, t, 16)
    with use_backend("triton"):
        full, s_full = linear_attention(q, k, v, causal=True, log_decay=g, return_state=True)
        state, parts = None, []
        for sl in (slice(0, split), slice(split, t)):
            o, state = linear_attention(q[:, :, sl], k[:, :, sl], v[:, :, sl], causal=True, initial_state=state,
                                        log_decay=None if g is None else g[:, :, sl], return_state=True)
            parts.append(o)
    assert rel_err(full, torch.cat(parts, dim=2)) < TOL
    assert rel_err(s_full, state) < TOL


@pytest.mark.parametrize("t", [1, 100])
def test_non_causal_sana_form_matches_reference(t):
    q, k, v = _randn(2, 2, t, 16), _randn(2, 2, t, 16), _randn(2, 2, t, 24)
    _agree(_la(normalize=True, feature_map="relu"), q, k, v, None, _randn(2, 2, 16, 25))


def test_sana_form_takes_the_fused_kernels(monkeypatch):
    from kernels.linear_attention import triton as la_triton

    calls = []
    real = la_triton.linear_attention_relu_normalized_triton
    monkeypatch.setattr(la_triton, "linear_attention_relu_normalized_triton",
                        lambda *a, **kw: calls.append(1) or real(*a, **kw))
    q = _randn(1, 1, 8, 16)
    with use_backend("triton"):
        linear_attention(q, q, q, feature_map="relu", normalize=True)
        linear_attention(q, q, q, feature_map="elu+1", normalize=True)
        linear_attention(q, q, q, causal=True, feature_map="relu", normalize=True)
    assert calls == [1]


def test_non_causal_normaliser_with_other_feature_map():
    q, k, v = _randn(1, 2, 40, 16), _randn(1, 2, 40, 16), _randn(1, 2, 40, 8)
    _agree(_la(normalize=True, feature_map="elu+1"), q, k, v, None, _randn(1, 2, 16, 9))


@pytest.mark.parametrize("sana", [False, True])
def test_non_causal_split_reduction_over_several_spans(monkeypatch, sana):
    from kernels.linear_attention import triton as la_triton

    monkeypatch.setattr(la_triton, "SPAN", 32)  # T = 130 → spans of 64 tokens: 64 + 64 + 2
    q, k, v = _randn(1, 2, 130, 32), _randn(1, 2, 130, 32), _randn(1, 2, 130, 16)
    _agree(_la(normalize=sana, feature_map="relu" if sana else None), q, k, v)


@pytest.mark.parametrize("sana", [False, True])
def test_non_causal_output_programs_walk_several_row_tiles(monkeypatch, sana):
    """The output kernel's programs take 2 row tiles each (128 rows): T = 130 → a full program and one of 2 rows;
    T = 300 → 3 programs, the last with one full and one partial tile."""
    from kernels.linear_attention import triton as la_triton

    monkeypatch.setattr(la_triton, "OUT_TILES", 2)
    monkeypatch.setattr(la_triton, "OUT_PROGRAMS", 1)
    for t in (130, 300):
        q, k, v = _randn(1, 2, t, 16), _randn(1, 2, t, 16), _randn(1, 2, t, 8)
        _agree(_la(normalize=sana, feature_map="relu" if sana else None), q, k, v)


def test_sana_form_with_several_value_tiles():
    """V = 130 > 128: two V-tiles per span; the normaliser z is written once, by the first tile's programs."""
    q, k, v = _randn(1, 1, 20, 16), _randn(1, 1, 20, 16), _randn(1, 1, 20, 130)
    _agree(_la(normalize=True, feature_map="relu"), q, k, v, None, _randn(1, 1, 16, 131))


def test_native_half_dots_only_where_exact_and_interpretable():
    from kernels.triton_utils import native_dots

    half, bf16, f32 = (torch.zeros(1, dtype=d) for d in (torch.float16, torch.bfloat16, torch.float32))
    assert native_dots(half, half)
    assert native_dots(bf16, bf16) == (DEVICE == "cuda")  # the interpreter reads bfloat16 operands as raw bits
    assert not native_dots(half, bf16) and not native_dots(f32, f32) and not native_dots(half, f32)


@pytest.mark.parametrize("blocks", [[1] * 6, [1, 4, 9, 16, 30], [70], [3, 64, 2]])
def test_block_causal_matches_dense_masked(blocks):
    t = sum(blocks)
    q, k, v = _randn(1, 2, t, 16), _randn(1, 2, t, 16), _randn(1, 2, t, 12)
    _agree(_la(block_sizes=blocks), q, k, v, None, _randn(1, 2, 16, 12))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode", ["causal-key", "causal-head", "non-causal", "block"])
def test_half_inputs_accumulate_in_float32(dtype, mode):
    b, h, t, d = 1, 2, 50, 16
    q, k, v = (_randn(b, h, t, d).to(dtype) for _ in range(3))
    if mode.startswith("causal"):
        fn, extra = _la(causal=True, normalize=True, feature_map="relu"), (_decay(mode[7:], b, h, t, d),)
    elif mode == "non-causal":
        fn, extra = _la(normalize=True, feature_map="relu"), ()
    else:
        fn, extra = _la(block_sizes=[2, 16, 32]), ()
    out = _agree(fn, q, k, v, *extra, tol=HALF_TOL)
    assert out[0].dtype == dtype and out[1].dtype == torch.float32


# ----------------------------------------------------------------------------------------------------------
# Delta rule


def _delta_inputs(b, h, t, dk, dv, dtype=torch.float32):
    """RWKV-7-style inputs (a = −κ̂, b = κ̂ ⊙ iclr, κ̂ unit-norm): a contracting transition."""
    kappa = F.normalize(torch.randn(b, h, t, dk), dim=-1)
    xs = (torch.randn(b, h, t, dk), -0.6 * torch.rand(b, h, t, dk), torch.randn(b, h, t, dk) * 0.5,
          torch.randn(b, h, t, dv), -kappa, kappa * torch.rand(b, h, t, dk))
    return [x.to(dtype).to(DEVICE) for x in xs]


def _dr(*x):
    *inputs, s0 = x
    return delta_rule(*inputs, initial_state=s0, return_state=True)


@pytest.mark.parametrize("shape", [(1, 1, 1, 4, 4), (1, 2, 33, 16, 12), (2, 2, 20, 32, 40)])
def test_delta_rule_matches_step_loop(shape):
    b, h, t, dk, dv = shape
    _agree(_dr, *_delta_inputs(b, h, t, dk, dv), _randn(b, h, dk, dv))


@pytest.mark.parametrize("shape", [(1, 2, 65, 16, 12), (1, 1, 100, 32, 40), (2, 1, 80, 8, 70)])
def test_delta_rule_chunked_kernel_matches_step_loop(shape):
    """Past RECURRENT_MAX steps the chunked kernel runs: odd lengths (a padded last chunk), K and V tiles wider
    than the sizes, V split over several tiles (70 > 64)."""
    from kernels.delta_rule import triton as dr_triton

    b, h, t, dk, dv = shape
    assert t > dr_triton.RECURRENT_MAX
    _agree(_dr, *_delta_inputs(b, h, t, dk, dv), _randn(b, h, dk, dv))


def test_delta_rule_chunked_and_recurrent_kernels_agree(monkeypatch):
    from kernels.delta_rule import triton as dr_triton

    inputs = [*_delta_inputs(1, 2, 50, 16, 16), _randn(1, 2, 16, 16)]
    with use_backend("triton"):
        recurrent = _dr(*inputs)
        monkeypatch.setattr(dr_triton, "RECURRENT_MAX", 0)
        chunked = _dr(*inputs)
    for a, b in zip(recurrent, chunked):
        assert rel_err(a, b) < TOL


def test_delta_rule_chunked_kernel_with_strong_decay_stays_exact(monkeypatch):
    """log_w down to −30 per step: the chunked PyTorch path must leave its factorised form here; the kernel
    forms every pair exponent exactly and needs no such check."""
    from kernels.delta_rule import triton as dr_triton

    monkeypatch.setattr(dr_triton, "RECURRENT_MAX", 0)
    r, log_w, k, v, a, b = _delta_inputs(1, 1, 40, 16, 16)
    log_w = log_w * 50
    assert log_w.min() < -25
    out = _agree(_dr, r, log_w, k, v, a, b, _randn(1, 1, 16, 16))
    assert torch.isfinite(out[0]).all()


def test_delta_rule_two_pieces_with_carried_state_equal_one_pass():
    inputs = _delta_inputs(1, 2, 30, 16, 16)
    with use_backend("triton"):
        full, s_full = delta_rule(*inputs, return_state=True)
        o1, s1 = delta_rule(*(x[:, :, :11] for x in inputs), return_state=True)
        o2, s2 = delta_rule(*(x[:, :, 11:] for x in inputs), initial_state=s1, return_state=True)
    assert rel_err(full, torch.cat([o1, o2], dim=2)) < TOL
    assert rel_err(s_full, s2) < TOL


@pytest.mark.parametrize("t", [24, 70])  # the recurrent and the chunked kernel
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_delta_rule_half_inputs(t, dtype):
    inputs = _delta_inputs(1, 2, t, 16, 16, dtype=dtype)
    out = _agree(_dr, *inputs, _randn(1, 2, 16, 16), tol=HALF_TOL)
    assert out[0].dtype == dtype and out[1].dtype == torch.float32


# ----------------------------------------------------------------------------------------------------------
# Neighborhood attention


@pytest.mark.parametrize("size, kernel_size, d", [((5, 6), 3, 20), ((12, 12), 7, 16), ((9, 11), 1, 8),
                                                  ((10, 12), 5, 32)])
def test_neighborhood_matches_dense_masked(size, kernel_size, d):
    q, k, v = (_randn(1, 2, *size, d) for _ in range(3))
    _agree(lambda q, k, v: neighborhood_attention_2d(q, k, v, kernel_size), q, k, v)


def test_neighborhood_half_inputs_and_separate_value_dim():
    q, k = _randn(1, 1, 9, 10, 16).half(), _randn(1, 1, 9, 10, 16).half()
    v = _randn(1, 1, 9, 10, 24).half()
    out = _agree(lambda q, k, v: neighborhood_attention_2d(q, k, v, 5, scale=0.3), q, k, v, tol=HALF_TOL)
    assert out[0].dtype == torch.float16


# ----------------------------------------------------------------------------------------------------------
# Fallback when triton was imported before TRITON_INTERPRET could be set

if not IN_PROCESS:

    def test_interpreter_suite_in_fresh_process():
        root = Path(__file__).resolve().parents[2]
        env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_WAIT_POLICY": "PASSIVE"}
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(Path(__file__))],
                              cwd=root, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
