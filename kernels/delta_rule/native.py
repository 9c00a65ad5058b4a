"""Native (compiled C) generalized delta rule for CPU tensors: a fused recurrent kernel, the CPU default.

The step loop of :mod:`kernels.delta_rule.naive` fused into one pass per (b, h, 64-column tile of the state),
the tile living in L1 for the whole sequence (``kernels/native/delta_rule.c``). It is a forward kernel: when
autograd needs the graph (grad mode on and any input requiring grad), or for float64 inputs, the call goes to
the chunked PyTorch path, which has the backward. Inference and sampling — the paths that run without grad —
get the fused kernel.
"""

from __future__ import annotations

import ctypes

import torch

from .. import native
from ..dispatch import register
from ..utils import records_graph
from .chunk import delta_rule_torch

_LIB = "delta_rule"


def _fn():
    lib = native.library(_LIB)
    if lib is None:
        return None
    fn = lib.lingen_delta_rule_fwd
    if fn.argtypes is None:
        fn.argtypes = [ctypes.c_void_p] * 9 + [ctypes.c_int64] * 5
        fn.restype = ctypes.c_int
    return fn


def _ptr(x: torch.Tensor | None) -> int | None:
    return None if x is None else x.data_ptr()


def forward(r, log_w, k, v, a, b, initial_state=None):
    """The fused kernel itself on float32 CPU tensors [B, H, T, K] (v: [.., V]); returns (out, final state)."""
    fn = _fn()
    if fn is None:
        raise RuntimeError(f"the native delta rule is unavailable: {native.status(_LIB)}")
    r, log_w, k, v, a, b = (x.detach().contiguous() for x in (r, log_w, k, v, a, b))
    s0 = None if initial_state is None else initial_state.detach().contiguous()
    bsz, h, t, dk = r.shape
    dv = v.shape[-1]
    out = torch.empty(bsz, h, t, dv, dtype=torch.float32)
    state = torch.empty(bsz, h, dk, dv, dtype=torch.float32)
    if bsz * h * dk * dv == 0:
        state.copy_(s0) if s0 is not None else state.zero_()
        return out.zero_(), state
    rc = fn(_ptr(r), _ptr(log_w), _ptr(k), _ptr(v), _ptr(a), _ptr(b), _ptr(s0), _ptr(out), _ptr(state),
            bsz * h, t, dk, dv, torch.get_num_threads())
    if rc != 0:
        raise MemoryError("the native delta rule could not allocate its buffers or start its threads")
    return out, state


@register("delta_rule", "native")
def delta_rule_native(r, log_w, k, v, a, b, *, initial_state):
    """Native backend of :func:`kernels.delta_rule`: the fused kernel without grad, the chunked path with it."""
    tensors = [r, log_w, k, v, a, b, initial_state]
    wants_grad = records_graph(*tensors)
    plain = all(x is None or (x.dtype == torch.float32 and x.device.type == "cpu") for x in tensors)
    if wants_grad or not plain:
        return delta_rule_torch(r, log_w, k, v, a, b, initial_state=initial_state)
    return forward(r, log_w, k, v, a, b, initial_state)


delta_rule_native.available = lambda: native.library(_LIB) is not None
delta_rule_native.why_unavailable = lambda: native.status(_LIB)
