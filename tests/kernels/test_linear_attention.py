"""linear_attention: the chunked torch path against the naive reference, and the op's contract."""

from __future__ import annotations

import pytest
import torch

from kernels import linear_attention, use_backend
from kernels.linear_attention.naive import block_mask

from .helpers import assert_paths_agree, rel_err


def _qkv(b=2, h=2, t=37, dk=8, dv=6, dtype=torch.float32):
    return (torch.randn(b, h, t, dk, dtype=dtype), torch.randn(b, h, t, dk, dtype=dtype),
            torch.randn(b, h, t, dv, dtype=dtype))


SHAPES = [(1, 1, 1, 4, 4), (2, 2, 37, 8, 6), (1, 3, 64, 16, 16), (2, 1, 130, 8, 12), (1, 2, 200, 32, 8)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("decay", [None, "head", "key"])
def test_causal_chunked_matches_step_loop(shape, decay):
    b, h, t, dk, dv = shape
    q, k, v = _qkv(b, h, t, dk, dv)
    g = None
    if decay == "head":
        g = -torch.rand(b, h, t)
    elif decay == "key":
        g = -torch.rand(b, h, t, dk) * 0.5
    fn = lambda q, k, v: linear_attention(q, k, v, causal=True, log_decay=g, return_state=True)  # noqa: E731
    assert_paths_agree(fn, q, k, v, tol=2e-5)


def test_strong_per_key_decay_uses_exact_path_without_overflow():
    # A cumulative log-decay of ~ -300 inside one chunk would overflow a factorised e^{-G}.
    q, k, v = _qkv(1, 2, 150, 8, 4)
    g = -torch.rand(1, 2, 150, 8) * 10
    with use_backend("torch"):
        out = linear_attention(q, k, v, causal=True, log_decay=g)
    with use_backend("naive"):
        ref = linear_attention(q, k, v, causal=True, log_decay=g)
    assert torch.isfinite(out).all()
    assert rel_err(ref, out) < 1e-5


def test_log_decay_gradient_matches_reference():
    q, k, v = _qkv(1, 2, 70, 8, 4)
    g = -torch.rand(1, 2, 70, 8) * 0.3
    fn = lambda q, k, v, g: linear_attention(q, k, v, causal=True, log_decay=g)  # noqa: E731
    assert_paths_agree(fn, q, k, v, g, tol=2e-5)


@pytest.mark.parametrize("blocks", [[1] * 20, [1, 4, 9, 16, 30], [60], [256, 3], [5, 256]])
def test_block_causal_matches_dense_masked(blocks):
    t = sum(blocks)
    q, k, v = _qkv(1, 2, t, 8, 8)
    fn = lambda q, k, v: linear_attention(q, k, v, block_sizes=blocks, return_state=True)  # noqa: E731
    assert_paths_agree(fn, q, k, v, tol=2e-5)


def test_block_causal_equals_dense_attention_with_block_mask():
    blocks = [1, 4, 16, 43]
    q, k, v = _qkv(2, 2, sum(blocks), 8, 5, dtype=torch.float64)
    dense = ((q @ k.transpose(-1, -2)) * block_mask(blocks, q.device)) @ v
    assert rel_err(dense, linear_attention(q, k, v, block_sizes=blocks)) < 1e-12


@pytest.mark.parametrize("piece", [1, 16, 2048])
def test_block_causal_without_a_graph_writes_pieces_that_equal_the_dense_form(monkeypatch, piece):
    """The no-grad path writes outputs BLOCK_PIECE tokens at a time into one tensor; pieces split blocks."""
    from kernels.linear_attention import chunk

    monkeypatch.setattr(chunk, "BLOCK_PIECE", piece)
    blocks = [1, 4, 16, 43]
    q, k, v = _qkv(2, 2, sum(blocks), 8, 5, dtype=torch.float64)
    dense = ((q @ k.transpose(-1, -2)) * block_mask(blocks, q.device)) @ v
    with use_backend("torch"):
        out, state = linear_attention(q, k, v, block_sizes=blocks, return_state=True)
        graph_out, graph_state = linear_attention(q.requires_grad_(), k, v, block_sizes=blocks, return_state=True)
    assert graph_out.requires_grad and not out.requires_grad
    assert rel_err(dense, out) < 1e-12 and rel_err(graph_out, out) < 1e-14
    assert torch.equal(state, graph_state.detach())


@pytest.mark.parametrize("decay", [False, True])
def test_causal_segments_with_and_without_a_graph_equal_the_step_reference(monkeypatch, decay):
    """Sequences longer than SEGMENT run segment by segment (outputs concatenated with a graph, copied into one
    tensor without); both equal the step reference, also where a segment is shorter than a chunk."""
    from kernels.linear_attention import chunk

    monkeypatch.setattr(chunk, "SEGMENT", 64)
    q, k, v = _qkv(2, 2, 64 * 3 + 20, 8, 5, dtype=torch.float64)
    g = -torch.rand(2, 2, q.shape[2], dtype=torch.float64) * 0.2 if decay else None
    with use_backend("naive"):
        ref, s_ref = linear_attention(q, k, v, causal=True, log_decay=g, return_state=True)
    with use_backend("torch"):
        out, state = linear_attention(q, k, v, causal=True, log_decay=g, return_state=True)
        graph_out, graph_state = linear_attention(q.requires_grad_(), k, v, causal=True, log_decay=g,
                                                  return_state=True)
    assert graph_out.requires_grad and not out.requires_grad
    assert rel_err(ref, out) < 1e-12 and rel_err(s_ref, state) < 1e-12
    assert rel_err(out, graph_out) < 1e-14 and rel_err(state, graph_state) < 1e-14


def test_blocks_of_one_equal_causal():
    q, k, v = _qkv(1, 2, 50, 8, 8, dtype=torch.float64)
    a = linear_attention(q, k, v, block_sizes=[1] * 50)
    b = linear_attention(q, k, v, causal=True)
    assert rel_err(a, b) < 1e-12


def test_non_causal_sana_form_matches_formula():
    q, k, v = _qkv(2, 3, 40, 8, 6, dtype=torch.float64)
    out = linear_attention(q, k, v, feature_map="relu", normalize=True, eps=1e-8)
    fq, fk = q.relu(), k.relu()
    expected = (fq @ (fk.transpose(-1, -2) @ v)) / (fq @ fk.sum(2, keepdim=True).transpose(-1, -2) + 1e-8)
    assert rel_err(expected, out) < 1e-12


@pytest.mark.parametrize("mode", [{"causal": False}, {"causal": True}, {"block_sizes": [3, 17, 20]}])
def test_normalized_paths_agree(mode):
    q, k, v = _qkv(2, 2, 40, 8, 6)
    fn = lambda q, k, v: linear_attention(q, k, v, feature_map="elu+1", normalize=True, **mode)  # noqa: E731
    assert_paths_agree(fn, q, k, v, tol=2e-5)


@pytest.mark.parametrize("split", [1, 30, 64, 99])
@pytest.mark.parametrize("decay", [False, True])
def test_two_pieces_with_carried_state_equal_one_pass(split, decay):
    t = 100
    q, k, v = _qkv(2, 2, t, 8, 6, dtype=torch.float64)
    g = -torch.rand(2, 2, t, 8, dtype=torch.float64) if decay else None
    full, s_full = linear_attention(q, k, v, causal=True, log_decay=g, normalize=True,
                                    feature_map="relu", return_state=True)
    parts, state = [], None
    for sl in (slice(0, split), slice(split, t)):
        o, state = linear_attention(q[:, :, sl], k[:, :, sl], v[:, :, sl], causal=True,
                                    log_decay=None if g is None else g[:, :, sl], normalize=True,
                                    feature_map="relu", initial_state=state, return_state=True)
        parts.append(o)
    assert rel_err(full, torch.cat(parts, dim=2)) < 1e-10
    assert rel_err(s_full, state) < 1e-10


def test_block_pieces_with_carried_state_equal_one_pass():
    blocks = [1, 4, 16, 64]
    q, k, v = _qkv(1, 2, sum(blocks), 8, 8, dtype=torch.float64)
    full = linear_attention(q, k, v, block_sizes=blocks)
    o1, s = linear_attention(q[:, :, :21], k[:, :, :21], v[:, :, :21], block_sizes=[1, 4, 16],
                             return_state=True)
    o2 = linear_attention(q[:, :, 21:], k[:, :, 21:], v[:, :, 21:], block_sizes=[64], initial_state=s)
    assert rel_err(full, torch.cat([o1, o2], dim=2)) < 1e-12


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_accumulate_in_float32(dtype):
    q, k, v = _qkv(1, 2, 300, 16, 16)
    out, state = linear_attention(q.to(dtype), k.to(dtype), v.to(dtype), causal=True, return_state=True)
    ref = linear_attention(q.to(dtype).float(), k.to(dtype).float(), v.to(dtype).float(), causal=True)
    assert out.dtype == dtype and state.dtype == torch.float32
    assert rel_err(ref, out) < 1e-2


def test_gradcheck_float64_chunked():
    q, k, v = (x.requires_grad_() for x in _qkv(1, 1, 9, 3, 2, dtype=torch.float64))
    g = (-torch.rand(1, 1, 9, 3, dtype=torch.float64)).requires_grad_()
    with use_backend("torch"):
        assert torch.autograd.gradcheck(
            lambda q, k, v, g: linear_attention(q, k, v, causal=True, log_decay=g, normalize=True,
                                                feature_map="elu+1"), (q, k, v, g))


def test_gradcheck_float64_reference():
    q, k, v = (x.requires_grad_() for x in _qkv(1, 1, 6, 3, 2, dtype=torch.float64))
    with use_backend("naive"):
        assert torch.autograd.gradcheck(lambda q, k, v: linear_attention(q, k, v, causal=True), (q, k, v))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"causal": True, "log_decay": torch.full((1, 2, 10), 0.1)}, "≤ 0"),
        ({"causal": True, "log_decay": torch.zeros(1, 2, 9)}, "log_decay must be"),
        ({"causal": False, "log_decay": torch.zeros(1, 2, 10)}, "causal=True"),
        ({"causal": True, "log_decay": torch.full((1, 2, 10), float("nan"))}, "finite"),
        ({"block_sizes": [3, 3]}, "summing to T=10"),
        ({"block_sizes": [0, 10]}, "positive"),
        ({"causal": True, "block_sizes": [10]}, "causal=False"),
        ({"initial_state": torch.zeros(1, 2, 4, 4)}, "initial_state"),
        ({"feature_map": "softmax"}, "feature_map"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, message):
    q, k, v = _qkv(1, 2, 10, 4, 3)
    with pytest.raises(ValueError, match=message):
        linear_attention(q, k, v, **kwargs)


def test_mismatched_shapes_raise_value_error():
    q, k, v = _qkv(1, 2, 10, 4, 3)
    with pytest.raises(ValueError, match="same shape"):
        linear_attention(q, k[:, :, :9], v)
    with pytest.raises(ValueError, match="B, H, T"):
        linear_attention(q, k, v[:, :1])
    with pytest.raises(ValueError, match="4-D"):
        linear_attention(q[0], k[0], v[0])


@pytest.mark.parametrize("t", [40, 2 * 1024 + 77])  # one piece, and several pieces with a ragged last one
def test_fused_sana_form_matches_the_reference_forward_and_backward_with_a_carried_state(t):
    """The torch backend's fused ReLU + normaliser path (in pieces of time) against the naive step-by-step
    reference, which has no fused path, for the output, the state and every gradient."""
    q, k, v = _qkv(1, 2, t, 8, 6, dtype=torch.float64)
    s0 = torch.rand(1, 2, 8, 7, dtype=torch.float64)  # [K, V + 1]: the normaliser column too
    fn = lambda q, k, v, s: linear_attention(q, k, v, feature_map="relu", normalize=True,  # noqa: E731
                                             initial_state=s, return_state=True)
    assert_paths_agree(fn, q, k, v, s0, tol=1e-10)


@pytest.mark.parametrize("t", [40, 2 * 1024 + 77])
def test_fused_sana_form_without_a_graph_writes_pieces_in_place_and_matches_the_reference(t):
    """Without autograd the fused form writes every piece into one preallocated output (no concatenation)."""
    q, k, v = _qkv(1, 2, t, 8, 6)
    s0 = torch.rand(1, 2, 8, 7)
    with torch.no_grad():
        with use_backend("torch"):
            o, s = linear_attention(q, k, v, feature_map="relu", normalize=True, initial_state=s0,
                                    return_state=True)
        with use_backend("naive"):
            o_ref, s_ref = linear_attention(q.double(), k.double(), v.double(), feature_map="relu",
                                            normalize=True, initial_state=s0.double(), return_state=True)
    assert o.dtype == torch.float32 and o.is_contiguous()
    assert rel_err(o, o_ref) < 1e-5 and rel_err(s, s_ref) < 1e-5
