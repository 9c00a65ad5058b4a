"""Atomic ``checkpoint-N`` folders on top of ``accelerator.save_state`` / ``load_state``.

A checkpoint is written into ``checkpoint-N.tmp-<pid>`` (the main process's pid, one folder for every rank) and
renamed to ``checkpoint-N`` only when complete (``trainer_state.json`` is the last file written, after every rank
has finished), so a killed run never leaves a half-written checkpoint
that ``--resume latest`` could pick up. Folders leave the same way: a checkpoint being pruned (or replaced) is
first renamed to a ``.tmp-`` name and only then deleted, so a kill mid-delete never leaves a ``checkpoint-N``
that still has its ``trainer_state.json`` but lost its weights. A failed write (a full disk) removes the
partial folder and raises :class:`CheckpointWriteError` naming the checkpoint; earlier checkpoints are untouched.
Model weights and the EMA are safetensors; accelerate stores the optimizer, scheduler and RNG states with
``torch.save`` and reads them back with ``weights_only=True``.
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


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (a full disk, an unwritable folder); the partial folder is gone."""


def check_output_dir(output_dir: str | Path) -> Path:
    """Create ``output_dir`` if needed and prove a file can be written in it; ``OSError`` with a clear message
    (naming the folder) otherwise. Run before any training work."""
    root = Path(output_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".write-test-{os.getpid()}"
        with open(probe, "wb") as f:
            f.write(b"ok")
            f.flush()
            os.fsync(f.fileno())
        probe.unlink()
    except OSError as err:
        raise OSError(err.errno, f"the output folder {root} is not writable: {err.strerror or err}") from err
    return root


def rewind_metrics(path: str | Path, step: int) -> None:
    """Keep only the ``metrics.jsonl`` records of steps up to ``step`` (the step a run resumes from) and drop a
    torn last line: what a killed run logged after its last checkpoint is logged again by the resumed run, so
    without this the log would repeat those steps."""
    path = Path(path)
    if not path.is_file():
        return
    keep = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= step:
            keep.append(line + "\n")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text("".join(keep))
    os.replace(tmp, path)


def _discard(folder: Path) -> None:
    """Delete a checkpoint folder so that no kill leaves it half-deleted under its ``checkpoint-N`` name."""
    trash = folder.with_name(f"{folder.name}.tmp-{os.getpid()}-old")
    shutil.rmtree(trash, ignore_errors=True)
    try:
        folder.rename(trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


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
    # One folder for every rank, named after the main process: each rank's own pid would give each its own folder,
    # and the main process, renaming only its own, would then delete the others' as stale (with their per-rank
    # files, e.g. RNG states), possibly while they are still being written.
    owner = [os.getpid()]
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        owner = broadcast_object_list(owner)
    tmp = root / f"checkpoint-{step}.tmp-{owner[0]}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(tmp), safe_serialization=True)
        if accelerator.is_main_process:
            if ema is not None:
                save_file(ema.state_dict(), str(tmp / EMA_FILE))
                trainer_state = {**trainer_state, "ema_step": ema.step_count}
            with open(tmp / STATE_FILE, "w") as f:
                json.dump(trainer_state, f, indent=2)
                f.flush()
                os.fsync(f.fileno())
    except Exception as err:  # OSError, or torch.save's RuntimeError / safetensors' error on a full disk
        shutil.rmtree(tmp, ignore_errors=True)
        kept = [p.name for _, p in list_checkpoints(root)]
        message = (f"cannot write checkpoint {final}: {type(err).__name__}: {err}. The partial checkpoint was "
                   f"removed; earlier checkpoints are intact ({', '.join(kept) or 'none yet'}): free some space "
                   "and continue with --resume latest")
        code = getattr(err, "errno", None)
        raise (CheckpointWriteError(code, message) if code else CheckpointWriteError(message)) from err
    accelerator.wait_for_everyone()  # every rank's files are in tmp before it is renamed
    if accelerator.is_main_process:
        if final.exists():
            _discard(final)
        os.replace(tmp, final)
        if total_limit:
            for _, old in list_checkpoints(root)[:-total_limit]:
                _discard(old)
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
