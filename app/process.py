"""Process-level settings for a long-running app: keep the C heap from growing under a threaded web server.

glibc gives every thread that allocates its own malloc arena (up to 8 × cores); a web server that runs each
request on a pool thread then holds many partly used arenas whose freed memory is rarely returned to the
system, so resident memory creeps up under load. :func:`limit_malloc_arenas` caps the arenas (what
``MALLOC_ARENA_MAX`` does) and :func:`trim_heap` hands freed heap pages back (``malloc_trim``). Both are no-ops
where glibc is not the C library.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

M_ARENA_MAX = -8  # mallopt parameter number in glibc's malloc.h


@functools.lru_cache(maxsize=1)
def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt  # noqa: B018  (glibc only)
        libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas for threads created from now on; True when applied. Call it early, before the
    server's thread pool exists."""
    libc = _glibc()
    return bool(libc is not None and libc.mallopt(M_ARENA_MAX, int(arenas)))


def trim_heap() -> bool:
    """Return freed heap memory to the system (``malloc_trim(0)``); True when some was released."""
    libc = _glibc()
    return bool(libc is not None and libc.malloc_trim(0))


__all__ = ["limit_malloc_arenas", "trim_heap"]
