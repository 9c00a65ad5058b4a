"""Shared test fixtures."""

from __future__ import annotations

import os

# Idle OpenMP threads must not spin: on a shared 2-core machine spinning makes small matmuls 20-60x slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Without CUDA, Triton kernels can only run in the interpreter; the mode is fixed when triton is first imported.
if not os.path.exists("/dev/nvidiactl"):
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

# Tests are small; two threads match the CI machine and keep timings stable.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
