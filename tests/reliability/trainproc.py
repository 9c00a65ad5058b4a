"""Training runs in forked processes that can be SIGKILLed, started from a fork server that has already imported
torch and the training code (a run then starts in about a second instead of eight).

The fork server only imports modules (no torch op, no thread pool, no accelerate state), so every run is a
fresh process as far as training is concerned; ``training/train_dit.py`` is called exactly as from the shell.
"""

from __future__ import annotations

import multiprocessing
import os
import sys

PRELOAD = ["tests.reliability.trainproc", "training.train_dit"]


def run_training(argv: list[str], cache_dir: str, log_path: str) -> None:
    """Process target: ``train_dit.main(argv)`` with stdout and stderr appended to ``log_path``."""
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    os.environ["LINGEN_CACHE"] = cache_dir
    from training.train_dit import main

    main(argv)


def context() -> multiprocessing.context.BaseContext:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx
