"""Glue shared by the Triton backends: lazy registration, interpreter detection, launch helpers, autograd.

``triton`` is imported only when a Triton kernel first runs, never by ``import kernels``: under the
interpreter (``TRITON_INTERPRET=1``, kernels simulated with numpy on CPU tensors) the mode is fixed when
``triton.language`` is imported, because ``@triton.jit`` decides at decoration time whether it builds a
compiled or an interpreted function, and ``triton.language``'s own helpers (``tl.zeros``, ``tl.sum``, ...)
are decorated on import. A process that imported triton before setting the variable cannot interpret.

Every Triton backend runs its forward pass in Triton and recomputes its backward pass through the
registered PyTorch (``torch``) implementation; see :class:`RecomputeBackward`.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
from collections.abc import Callable

import torch

from . import dispatch

HALF = (torch.float16, torch.bfloat16)


def interpreting() -> bool:
    """Whether ``TRITON_INTERPRET`` asks for the interpreter (read now, as triton reads it)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")


@functools.cache
def triton_importable() -> bool:
    """Whether the ``triton`` package is installed, without importing it."""
    return importlib.util.find_spec("triton") is not None


def register_lazy(op: str, module: str, name: str, **fused: str) -> None:
    """Register ``module.name`` as the ``triton`` backend of ``op``, importing ``module`` at the first call.

    Does nothing when triton is not installed, so the package and its torch paths import without it. The
    registered backend declares ``accepts_half``: the public op hands it float16 / bfloat16 tensors
    unconverted and the kernels load them in their own dtype, accumulating in float32. Each ``fused`` entry
    ``attribute="function"`` attaches a fused variant the public op may call instead (equally lazy)."""
    if not triton_importable():
        return

    def lazy(fn_name: str) -> Callable:
        def call(*args, **kwargs):
            return getattr(importlib.import_module(module), fn_name)(*args, **kwargs)

        call.__name__ = call.__qualname__ = f"{fn_name}_lazy"
        call.__doc__ = f"Triton kernel of {op!r}: imports {module} on first use and calls its {fn_name}."
        return call

    impl = lazy(name)
    impl.accepts_half = True
    for attribute, fn_name in fused.items():
        setattr(impl, attribute, lazy(fn_name))
    dispatch.register(op, "triton")(impl)


def input_caster(impl: Callable, dtype: torch.dtype) -> Callable[[torch.Tensor], torch.Tensor]:
    """How a public op hands its tensors to ``impl``: promoted to ``dtype`` (the torch and naive paths), or,
    for a backend that declares ``accepts_half``, float16 / bfloat16 / float32 tensors as they are (its
    kernels widen each tile on load). Anything else, and everything when float64 is involved, is promoted."""
    if getattr(impl, "accepts_half", False) and dtype == torch.float32:
        return lambda x: x if x.dtype in (*HALF, torch.float32) else x.to(dtype)
    return lambda x: x.to(dtype)


def check_launchable(*tensors: torch.Tensor | None) -> None:
    """Fail with a clear message before launching a kernel that cannot run where its tensors are."""
    if all(t is None or t.device.type == "cuda" for t in tensors):
        return
    if not interpreting():
        raise RuntimeError("Triton kernels need CUDA tensors; set TRITON_INTERPRET=1 (before importing triton) "
                           "to run them on the CPU under the interpreter")
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction

    if not isinstance(tl.zeros, InterpretedFunction):
        raise RuntimeError("TRITON_INTERPRET=1 was set after triton had been imported (e.g. by diffusers or "
                           "torch._dynamo), so triton.language was built for compilation and cannot be "
                           "interpreted; set the variable before anything imports triton")


def autotune(configs: list, key: list[str], keep: Callable[..., bool] | None = None) -> Callable:
    """``triton.autotune`` over ``configs`` on a GPU; only the first config under the interpreter.

    Multi-config autotuning asks the GPU driver for a benchmarker, which fails on a CPU-only machine, and
    timing simulated kernels would be meaningless anyway. ``keep(config, **launch_kwargs)`` drops, before
    anything is compiled, the configs that spill registers or overflow shared memory for a launch (its
    constexprs: tile sizes, ``PREC`` ...), as found by ``python -m kernels.aot``; it must keep at least one."""
    import triton

    if interpreting():
        return triton.autotune(configs[:1], key=key)
    prune = None
    if keep is not None:
        prune = {"early_config_prune": lambda cfgs, named_args, **kw: [c for c in cfgs if keep(c, **kw)]}
    return triton.autotune(configs, key=key, prune_configs_by=prune)


def gpu_arch() -> int:
    """Compute capability × 10 of the GPU the kernels are being compiled for (80 A100, 90 H100 / H200): the
    active triton driver's target, so ``kernels.aot``'s stand-in targets answer too."""
    from triton.runtime.driver import driver

    return int(driver.active.get_current_target().arch)


def shape_of(config) -> tuple[int | None, int, int]:
    """(BV, num_warps, num_stages) of an autotune config, the terms the ``keep`` rules are written in."""
    return config.kwargs.get("BV"), config.num_warps, config.num_stages


def tile(n: int, lo: int = 16, hi: int | None = None) -> int:
    """Power-of-two tile covering ``n`` (masked loads pad the rest), clamped to [lo, hi]; ``tl.dot`` needs ≥ 16."""
    import triton

    size = max(lo, triton.next_power_of_2(max(int(n), 1)))
    return size if hi is None else min(size, hi)


def dot_precision(*tensors: torch.Tensor | None) -> str:
    """``input_precision`` of the kernels' float32 ``tl.dot``s.

    Half-precision inputs are exact in TF32 (10 mantissa bits ≥ fp16's 10 and bf16's 7), so their tiles, loaded
    and widened to float32, use TF32 tensor cores. Float32 inputs follow PyTorch's own matmul setting
    (``torch.backends.cuda.matmul.allow_tf32``, off by default): IEEE float32 unless TF32 was allowed. The
    interpreter ignores the setting (numpy matmul in float32)."""
    if any(t is not None and t.dtype in HALF for t in tensors) or torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return "ieee"


def native_dots(*tensors: torch.Tensor) -> bool:
    """Whether a kernel may ``tl.dot`` these input tiles in their own dtype: all float16, or all bfloat16 outside
    the interpreter (which reads bfloat16 operands as raw bits). A product of two half-precision values is exact in
    the float32 accumulator, so such a dot equals the widened one, with half the registers for its operands."""
    dtypes = {t.dtype for t in tensors}
    return dtypes == {torch.float16} or (dtypes == {torch.bfloat16} and not interpreting())


def last_dim_contiguous(x: torch.Tensor | None) -> torch.Tensor | None:
    """``x`` itself when its last dimension is dense (kernels take the other strides), else a contiguous copy."""
    if x is None or x.stride(-1) == 1:
        return x
    return x.contiguous()


def strides(x: torch.Tensor | None, ndim: int) -> tuple[int, ...]:
    """The leading ``ndim - 1`` strides of ``x`` (the last is 1), zeros for an absent tensor."""
    if x is None:
        return (0,) * (ndim - 1)
    assert x.ndim == ndim and (x.stride(-1) == 1 or x.shape[-1] == 1), (x.shape, x.stride())
    return tuple(x.stride()[:-1])


class RecomputeBackward(torch.autograd.Function):
    """Triton forward, PyTorch backward by recomputation.

    ``forward_fn(*tensors, **options)`` runs the Triton kernels without building a graph. In the backward pass
    the inputs are widened to float32 and ``backward_fn`` (the op's registered ``torch`` implementation) is
    re-run under ``torch.enable_grad()``; ``torch.autograd.grad`` of its outputs against the incoming
    cotangents gives the input gradients, cast back to each input's dtype. Costs one extra forward in PyTorch
    per backward, in exchange for no hand-written backward kernels.

    Both functions return a tuple of tensors; ``tensors`` may contain ``None`` (absent optional inputs).
    """

    @staticmethod
    def forward(ctx, forward_fn, backward_fn, options, *tensors):
        ctx.backward_fn, ctx.options = backward_fn, options
        ctx.save_for_backward(*tensors)
        ctx.set_materialize_grads(False)
        return tuple(forward_fn(*tensors, **options))

    @staticmethod
    def backward(ctx, *grad_outputs):
        saved = ctx.saved_tensors
        needs = ctx.needs_input_grad[3:]
        inputs = [None if t is None else t.detach().to(torch.promote_types(t.dtype, torch.float32))
                  .requires_grad_(need) for t, need in zip(saved, needs)]
        with torch.enable_grad():
            outputs = ctx.backward_fn(*inputs, **ctx.options)
        pairs = [(o, g) for o, g in zip(outputs, grad_outputs) if g is not None and o.requires_grad]
        wanted = [x for x, need in zip(inputs, needs) if need]
        grads = iter(torch.autograd.grad([o for o, _ in pairs], wanted, [g.to(o.dtype) for o, g in pairs],
                                         allow_unused=True) if pairs and wanted else [None] * len(wanted))
        result = []
        for t, need in zip(saved, needs):
            g = next(grads) if need else None
            result.append(None if g is None else g.to(t.dtype))
        return (None, None, None, *result)


def with_recompute_backward(forward_fn: Callable, backward_fn: Callable, tensors: list, options: dict):
    """Run ``forward_fn`` through :class:`RecomputeBackward` (a tuple of outputs)."""
    return RecomputeBackward.apply(forward_fn, backward_fn, options, *tensors)
