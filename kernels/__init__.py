"""lingen's linear-time operator core.

One public function per op, shapes ``[B, H, T, D]`` (``[B, H, Hgt, Wid, D]`` for 2-D neighborhoods), states
and accumulators in float32. Each op has a naive reference, a fast PyTorch path and (on CUDA) a Triton
kernel; the delta rule also a compiled C kernel for CPU inference (:mod:`kernels.native`). :mod:`kernels.dispatch`
chooses; ``LINGEN_KERNELS=torch|native|triton|naive`` forces one.
"""

from .delta_rule import delta_rule
from .dispatch import available_backends, use_backend
from .linear_attention import linear_attention
from .neighborhood import neighborhood_attention_2d

__all__ = ["available_backends", "delta_rule", "linear_attention", "neighborhood_attention_2d", "use_backend"]
