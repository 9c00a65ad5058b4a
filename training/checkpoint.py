"""Atomic ``checkpoint-N`` folders on top of ``accelerator.save_state`` / ``load_state``.

A checkpoint is written into ``checkpoint-N.tmp-<pid>`` and renamed to ``checkpoint-N`` only when complete
(``trainer_state.json`` is the last file written), so a killed run never leaves a half-written checkpoint
that ``--resume latest`` could pick up. Model weights and the EMA are safetensors; accelerate stores the
optimizer, scheduler and RNG states with ``torch.save`` and reads them back with ``weights_only=True``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from safetensors.torch import load_file, save_file

STATE_FILE = "trainer_state.json"
EMA_FILE = "ema.safetensors"
_NAME = re.compile(r"^checkpoint-(\d+)$")


def list_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints in ``output_dir`` as (step, path), oldest first."""
    out = []
    root = Path(output_dir)
    if not root.is_dir():
        return out
    for p in root.iterdir():
        m = _NAME.match(p.name)
        if m and p.is_dir() and (p / STATE_FILE).is_file():
            out.append((int(m.group(1)), p))
    return sorted(out)


def resolve_resume(output_dir: str | Path, resume: str | None) -> Path | None:
    """``latest`` → the newest complete checkpoint (or None when there is none); a path → that folder."""
    if not resume:
        return None
    if resume == "latest":
        ckpts = list_checkpoints(output_dir)
        return ckpts[-1][1] if ckpts else None
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        raise ValueError(f"--resume {resume!r} is not a complete checkpoint folder (no {STATE_FILE})")
    return path


def save_checkpoint(accelerator, output_dir: str | Path, step: int, trainer_state: dict, ema=None,
                    total_limit: int | None = None) -> Path:
    """Write ``output_dir/checkpoint-<step>`` atomically; prune the oldest beyond ``total_limit``."""
    root = Path(output_dir)
    final = root / f"checkpoint-{step}"
    tmp = root / f"checkpoint-{step}.tmp-{os.getpid()}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    if accelerator.is_main_process:
        if ema is not None:
            save_file(ema.state_dict(), str(tmp / EMA_FILE))
            trainer_state = {**trainer_state, "ema_step": ema.step_count}
        with open(tmp / STATE_FILE, "w") as f:
            json.dump(trainer_state, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        if total_limit:
            for _, old in list_checkpoints(root)[:-total_limit]:
                shutil.rmtree(old, ignore_errors=True)
        for stale in root.glob("checkpoint-*.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, path: str | Path, ema=None) -> dict:
    """Restore model, optimizer, scheduler, RNG (and EMA) from ``path``; return the trainer state."""
    path = Path(path)
    accelerator.load_state(str(path))
    with open(path / STATE_FILE) as f:
        state = json.load(f)
    if ema is not None:
        ema.load_state_dict(load_file(str(path / EMA_FILE)), state.get("ema_step", state["step"]))
    return state
