"""neighborhood_attention_2d: the blocked path against dense masked attention, and NATTEN semantics."""

from __future__ import annotations

import pytest
import torch

from kernels import neighborhood_attention_2d, use_backend
from kernels.neighborhood.naive import neighborhood_mask, window_start

from .helpers import assert_paths_agree, rel_err


def _qkv(b, h, hy, wx, d, dtype=torch.float32):
    return tuple(torch.randn(b, h, hy, wx, d, dtype=dtype) for _ in range(3))


@pytest.mark.parametrize("size", [(7, 7), (8, 8), (13, 11), (16, 24), (9, 30)])
@pytest.mark.parametrize("kernel_size", [1, 3, 7])
def test_blocked_matches_dense_reference(size, kernel_size):
    fn = lambda q, k, v: neighborhood_attention_2d(q, k, v, kernel_size)  # noqa: E731
    assert_paths_agree(fn, *_qkv(1, 2, *size, 8), tol=2e-5)


def test_every_query_sees_exactly_k_squared_keys_inside_the_map():
    mask = neighborhood_mask(10, 12, 5)
    assert (mask.sum(-1) == 25).all()
    assert window_start(10, 5).tolist() == [0, 0, 0, 1, 2, 3, 4, 5, 5, 5]


def test_kernel_equal_to_map_is_global_attention():
    q, k, v = _qkv(1, 2, 7, 7, 8, dtype=torch.float64)
    out = neighborhood_attention_2d(q, k, v, 7, scale=0.3)
    flat = lambda x: x.reshape(1, 2, 49, 8)  # noqa: E731
    dense = torch.softmax(flat(q) @ flat(k).transpose(-1, -2) * 0.3, -1) @ flat(v)
    assert rel_err(dense.reshape(out.shape), out) < 1e-12


def test_corner_query_window_is_shifted_inward():
    q, k, v = _qkv(1, 1, 9, 9, 4, dtype=torch.float64)
    out = neighborhood_attention_2d(q, k, v, 3)
    # the corner (0, 0) attends rows 0..2 and columns 0..2
    keys, vals = k[0, 0, :3, :3].reshape(9, 4), v[0, 0, :3, :3].reshape(9, 4)
    expected = torch.softmax(keys @ q[0, 0, 0, 0] * 0.5, 0) @ vals
    assert rel_err(expected, out[0, 0, 0, 0]) < 1e-12


def test_gradcheck_float64_blocked():
    inputs = [x.requires_grad_() for x in _qkv(1, 1, 5, 6, 3, dtype=torch.float64)]
    with use_backend("torch"):
        assert torch.autograd.gradcheck(lambda q, k, v: neighborhood_attention_2d(q, k, v, 3), inputs)


def test_bad_arguments_raise_value_error():
    q, k, v = _qkv(1, 1, 6, 8, 4)
    with pytest.raises(ValueError, match="larger than"):
        neighborhood_attention_2d(q, k, v, 7)
    with pytest.raises(ValueError, match="odd"):
        neighborhood_attention_2d(q, k, v, 4)
    with pytest.raises(ValueError, match="must match"):
        neighborhood_attention_2d(q, k[:, :, :5], v, 3)
    with pytest.raises(ValueError, match="5-D"):
        neighborhood_attention_2d(q[0], k[0], v[0], 3)
