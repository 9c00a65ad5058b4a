"""Compiled C kernels for CPU tensors: built on first use with the system C compiler, loaded with ctypes.

No PyTorch headers and no OpenMP: a library builds in well under a second and works with any torch build.
The shared object is cached under ``$LINGEN_CACHE_DIR/native`` (default ``~/.cache/lingen/native``), named by a
hash of its source, the compiler's version, the flags and this CPU's model and feature flags (the build uses
``-march=native``), and written atomically (a temporary file renamed into place), so concurrent processes
never load a half-written library. ``LINGEN_NATIVE=0`` turns the native backend off; so does the lack of a
compiler, in which case the PyTorch paths are used and :func:`status` says why.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
FLAGS = ["-O3", "-march=native", "-std=c11", "-fPIC", "-shared", "-pthread", "-fno-math-errno"]
if platform.machine().lower() in ("x86_64", "amd64"):
    FLAGS.append("-mprefer-vector-width=512")  # full-width AVX-512 loops where the CPU has it (ignored otherwise)


def enabled() -> bool:
    return os.environ.get("LINGEN_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _cpu_signature() -> str:
    """The CPU's model name and feature flags (what -march=native compiles for), or the machine type."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.machine()
    keep = [line for line in text.splitlines() if line.startswith(("model name", "flags", "Features"))]
    return "\n".join(sorted(set(keep))) or platform.machine()


def cache_dir() -> Path:
    root = os.environ.get("LINGEN_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "lingen")
    return Path(root) / "native"


class BuildError(RuntimeError):
    pass


def build(name: str) -> Path:
    """Compile ``<name>.c`` (beside this file) into the cache if needed; returns the shared object's path."""
    source = HERE / f"{name}.c"
    cc = _compiler()
    if cc is None:
        raise BuildError("no C compiler found (set CC, or install gcc / clang)")
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise BuildError(f"{cc} --version failed: {exc}") from exc
    key = hashlib.sha256("\0".join([source.read_text(), version, " ".join(FLAGS), _cpu_signature()]).encode())
    target = cache_dir() / f"{name}-{key.hexdigest()[:16]}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}-", suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        proc = subprocess.run([cc, *FLAGS, str(source), "-o", tmp, "-lm"], capture_output=True, text=True,
                              timeout=300)
        if proc.returncode != 0:
            raise BuildError(f"{cc} failed to build {source.name}:\n{proc.stderr.strip()[-2000:]}")
        os.replace(tmp, target)
    except (OSError, subprocess.SubprocessError) as exc:
        raise BuildError(f"building {source.name} with {cc} failed: {exc}") from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


_ERRORS: dict[str, str] = {}


@functools.cache
def _load(name: str) -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(str(build(name)))
    except (BuildError, OSError) as exc:
        _ERRORS[name] = str(exc)
        return None


def library(name: str) -> ctypes.CDLL | None:
    """The loaded library ``name`` (built if needed), or None when disabled or unbuildable (see :func:`status`)."""
    if not enabled():
        return None
    return _load(name)


def status(name: str) -> str:
    """A line saying whether the native library ``name`` is in use, and why not when it is not."""
    if not enabled():
        return "off (LINGEN_NATIVE=0)"
    if library(name) is not None:
        return f"built ({build(name)})"
    return f"unavailable: {_ERRORS.get(name, 'unknown error')}"
