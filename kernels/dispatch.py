"""Backend selection for the operator core.

Every op has up to four implementations registered here under the names ``naive`` (step loop or dense
mask: readable ground truth, float64-capable, for tests), ``torch`` (chunked / blocked PyTorch: the CPU
default), ``native`` (a compiled C kernel for CPU tensors, see :mod:`kernels.native`; the CPU default for the
ops that have one, when it builds) and ``triton`` (GPU kernels, the CUDA default once registered).

Selection order: the innermost :func:`use_backend` context, then the ``LINGEN_KERNELS`` environment variable
(``torch``, ``native``, ``triton`` or ``naive``), then automatic: ``triton`` for CUDA tensors when it is
registered for the op and importable; for other tensors ``native`` when registered and available (an
implementation may declare ``available()``), else ``torch``.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator

import torch

BACKENDS = ("naive", "torch", "native", "triton")

_REGISTRY: dict[str, dict[str, Callable]] = {}
_FORCED: list[str] = []


def register(op: str, backend: str) -> Callable[[Callable], Callable]:
    """Decorator: register ``fn`` as the ``backend`` implementation of ``op``."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")

    def deco(fn: Callable) -> Callable:
        _REGISTRY.setdefault(op, {})[backend] = fn
        return fn

    return deco


@contextlib.contextmanager
def use_backend(backend: str) -> Iterator[None]:
    """Force one backend for every op inside the ``with`` block (tests and benchmarks)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    _FORCED.append(backend)
    try:
        yield
    finally:
        _FORCED.pop()


@functools.cache
def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except Exception:
        return False
    return True


def available_backends(op: str) -> list[str]:
    return [b for b in BACKENDS if b in _REGISTRY.get(op, {})]


def select(op: str, device: torch.device) -> Callable:
    """Return the implementation of ``op`` for tensors on ``device``."""
    impls = _REGISTRY.get(op)
    if not impls:
        raise KeyError(f"no implementation registered for op {op!r}")
    forced = _FORCED[-1] if _FORCED else os.environ.get("LINGEN_KERNELS", "").strip().lower() or None
    if forced is not None:
        if forced not in BACKENDS:
            raise ValueError(f"LINGEN_KERNELS={forced!r} is not one of {BACKENDS}")
        if forced not in impls:
            raise RuntimeError(f"backend {forced!r} is forced but has no implementation of {op!r}")
        if forced == "triton" and device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
            raise RuntimeError("the triton backend needs CUDA tensors (or TRITON_INTERPRET=1 on the CPU)")
        if not usable(impls[forced]):
            raise RuntimeError(f"backend {forced!r} is forced but unavailable for {op!r}: "
                               f"{getattr(impls[forced], 'why_unavailable', lambda: 'unknown reason')()}")
        return impls[forced]
    if device.type == "cuda" and "triton" in impls and triton_available():
        return impls["triton"]
    if device.type == "cpu" and "native" in impls and usable(impls["native"]):
        return impls["native"]
    return impls["torch"]


def usable(impl: Callable) -> bool:
    """Whether ``impl`` can run here (``impl.available()`` when it declares one, else True)."""
    check = getattr(impl, "available", None)
    return True if check is None else bool(check())
