"""delta_rule: the chunked WY path against the step loop, and the op's contract."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kernels import delta_rule, use_backend

from .helpers import assert_paths_agree, rel_err


def _inputs(b=1, h=2, t=50, dk=8, dv=8, dtype=torch.float32, decay_scale=0.6065):
    """RWKV-7-style inputs: a = −κ̂, b = κ̂ ⊙ iclr with κ̂ unit-norm, so the transition is a contraction."""
    r, k = torch.randn(b, h, t, dk, dtype=dtype), torch.randn(b, h, t, dk, dtype=dtype) * 0.5
    v = torch.randn(b, h, t, dv, dtype=dtype)
    kappa = F.normalize(torch.randn(b, h, t, dk, dtype=dtype), dim=-1)
    iclr = torch.rand(b, h, t, dk, dtype=dtype)
    log_w = -decay_scale * torch.rand(b, h, t, dk, dtype=dtype)
    return r, log_w, k, v, -kappa, kappa * iclr


@pytest.mark.parametrize("shape", [(1, 1, 1, 4, 4), (1, 2, 31, 8, 8), (2, 2, 64, 16, 8), (1, 3, 100, 8, 12)])
def test_chunked_matches_step_loop_forward_and_backward(shape):
    b, h, t, dk, dv = shape
    fn = lambda *x: delta_rule(*x, return_state=True)  # noqa: E731
    assert_paths_agree(fn, *_inputs(b, h, t, dk, dv), tol=5e-5)


def test_unbounded_decay_takes_exact_path():
    inputs = _inputs(1, 2, 70, 8, 8, decay_scale=8.0)
    with use_backend("naive"):
        ref = delta_rule(*inputs)
    with use_backend("torch"):
        out = delta_rule(*inputs)
    assert torch.isfinite(out).all() and rel_err(ref, out) < 1e-5


@pytest.mark.parametrize("split", [1, 32, 45])
def test_two_pieces_with_carried_state_equal_one_pass(split):
    inputs = _inputs(2, 2, 90, 8, 6, dtype=torch.float64)
    s0 = torch.randn(2, 2, 8, 6, dtype=torch.float64)
    full, s_full = delta_rule(*inputs, initial_state=s0, return_state=True)
    first = [x[:, :, :split] for x in inputs]
    second = [x[:, :, split:] for x in inputs]
    o1, s1 = delta_rule(*first, initial_state=s0, return_state=True)
    o2, s2 = delta_rule(*second, initial_state=s1, return_state=True)
    assert rel_err(full, torch.cat([o1, o2], dim=2)) < 1e-10
    assert rel_err(s_full, s2) < 1e-10


def test_matches_official_layout_and_raw_w_convention():
    """One step by hand in RWKV's official layout S [V, K] with raw w (decay = exp(−exp(w)))."""
    r, _, k, v, a, b = (x[0, 0, 0] for x in _inputs(1, 1, 1, 4, 3, dtype=torch.float64))
    raw_w = torch.randn(4, dtype=torch.float64)
    s_prev = torch.randn(3, 4, dtype=torch.float64)
    s_new = s_prev @ (torch.diag(torch.exp(-torch.exp(raw_w))) + a[:, None] * b[None, :]) + v[:, None] * k[None, :]
    expected = s_new @ r
    out, state = delta_rule(r[None, None, None], -torch.exp(raw_w)[None, None, None], k[None, None, None],
                            v[None, None, None], a[None, None, None], b[None, None, None],
                            initial_state=s_prev.T[None, None].contiguous(), return_state=True)
    assert rel_err(expected, out[0, 0, 0]) < 1e-12
    assert rel_err(s_new.T, state[0, 0]) < 1e-12


def test_gradcheck_float64_chunked():
    inputs = [x.requires_grad_() for x in _inputs(1, 1, 7, 3, 2, dtype=torch.float64)]
    with use_backend("torch"):
        assert torch.autograd.gradcheck(lambda *x: delta_rule(*x), inputs)


def test_half_inputs_give_float32_state():
    inputs = [x.half() for x in _inputs(1, 2, 40, 8, 8)]
    out, state = delta_rule(*inputs, return_state=True)
    ref = delta_rule(*[x.float() for x in inputs])
    assert out.dtype == torch.float16 and state.dtype == torch.float32
    assert rel_err(ref, out) < 1e-2


def test_bad_arguments_raise_value_error():
    r, log_w, k, v, a, b = _inputs(1, 2, 10, 4, 4)
    with pytest.raises(ValueError, match="≤ 0"):
        delta_rule(r, -log_w, k, v, a, b)
    with pytest.raises(ValueError, match="r's shape"):
        delta_rule(r, log_w, k[..., :3], v, a, b)
    with pytest.raises(ValueError, match="initial_state"):
        delta_rule(r, log_w, k, v, a, b, initial_state=torch.zeros(1, 2, 4, 5))
    with pytest.raises(ValueError, match="4-D"):
        delta_rule(r[0], log_w, k, v, a, b)


@pytest.mark.parametrize("chunk", [8, 16, 64])
def test_other_chunk_sizes_match_step_loop(chunk):
    from kernels.delta_rule.chunk import delta_rule_torch

    inputs = _inputs(2, 2, 77, 8, 6, dtype=torch.float64)
    s0 = torch.randn(2, 2, 8, 6, dtype=torch.float64)
    with use_backend("naive"):
        ref, s_ref = delta_rule(*inputs, initial_state=s0, return_state=True)
    out, state = delta_rule_torch(*inputs, initial_state=s0, chunk=chunk)
    assert rel_err(ref, out) < 1e-10 and rel_err(s_ref, state) < 1e-10


def test_strong_decay_near_the_factorising_limit_stays_accurate():
    """Decays whose span inside a chunk nears the factorising bound (e^{±Γ} up to ~e^{60}) stay exact in fp32."""
    from kernels.utils import can_factorise

    inputs = list(_inputs(1, 2, 64, 8, 8))
    inputs[1] = torch.full_like(inputs[1], -1.8) * (0.9 + 0.1 * torch.rand_like(inputs[1]))  # span 52–58 per chunk
    g_last = inputs[1].reshape(1, 2, 2, 32, 8).sum(3)
    assert can_factorise(g_last) and float(-g_last.min()) > 50
    assert_paths_agree(lambda *x: delta_rule(*x, return_state=True), *inputs, tol=5e-5)
