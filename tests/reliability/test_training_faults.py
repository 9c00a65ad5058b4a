"""Training faults (issue 11, part 3): SIGKILL at random points, a full disk, an unwritable output folder.

SIGKILL: the tiny HDiT is trained to ``STEPS`` steps in one folder by a chain of runs, each started with
``--resume latest`` and killed at a random point (fixed seed): during start-up, in a step, or while a checkpoint
is being written or pruned. After every kill each ``checkpoint-N`` folder present is complete and loadable, and
``metrics.jsonl`` holds steps 1..k exactly once (no step repeated or skipped). A last run finishes the job; its
final parameters, EMA, optimizer state and per-step losses equal those of one uninterrupted run, bit for bit
(training is deterministic), so resume never repeated or skipped an optimizer step.
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from accelerate.utils.other import load as accelerate_load
from safetensors.torch import load_file

from tests.reliability.trainproc import context, run_training
from training.checkpoint import STATE_FILE, CheckpointWriteError, list_checkpoints

pytestmark = pytest.mark.slow  # minutes, not seconds: `make test-slow`

ROOT = Path(__file__).resolve().parents[2]
STEPS = 40
EVERY = 2
KILLS = 10
SEED = 20_251_129
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


@pytest.fixture(scope="module")
def corpus_cache(tmp_path_factory) -> Path:
    """The 40-piece piano-roll cache the training tests use (copied from the user cache when it is there)."""
    from genmodels.data.pianoroll import DEFAULT_COLLECTIONS, cache_path, load_pieces

    root = tmp_path_factory.mktemp("lingen-cache")
    cached = cache_path(None, DEFAULT_COLLECTIONS, 40)
    if cached.is_file():
        (root / "pianoroll").mkdir()
        shutil.copy2(cached, root / "pianoroll" / cached.name)
    load_pieces(max_pieces=40, cache_dir=root / "pianoroll", progress=False)
    return root


def train_args(out: Path, *extra: str, steps: int = STEPS) -> list[str]:
    return ["--model", "hdit", "--config", "tiny", "--dataset", "pianoroll", "--dataset-args",
            '{"width": 32, "max_pieces": 40}', "--output-dir", str(out), "--batch-size", "4", "--max-steps", str(steps),
            "--checkpoint-every", str(EVERY), "--checkpoints-total-limit", "2", "--log-every", "1", "--threads", "1",
            *extra]


def metrics(out: Path) -> list[dict]:
    """Loss records of ``metrics.jsonl``; a torn last line (the kill hit the write) is ignored."""
    path = out / "metrics.jsonl"
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    records = []
    for i, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            assert i == len(lines) - 1, f"a corrupt line in the middle of metrics.jsonl: {line!r}"
    return [r for r in records if "loss" in r]


def last_logged_step(out: Path) -> int:
    try:
        return max((r["step"] for r in metrics(out)), default=0)
    except AssertionError:
        return 0


def check_checkpoints(out: Path, reference: Path) -> list[int]:
    """Every ``checkpoint-N`` folder in ``out`` is complete: the files of ``reference`` (a finished checkpoint),
    weights that load, the RNG / optimizer states loadable without unpickling code, and its own step."""
    expected = sorted(p.name for p in reference.iterdir())
    steps = []
    for folder in sorted(out.iterdir()):
        m = CHECKPOINT.match(folder.name)
        if not m:
            continue
        step = int(m.group(1))
        assert sorted(p.name for p in folder.iterdir()) == expected, f"{folder.name} is incomplete"
        state = json.loads((folder / STATE_FILE).read_text())
        assert state["step"] == step and state["ema_step"] == step
        for name in expected:
            if name.endswith(".safetensors"):
                load_file(str(folder / name))
            elif name.endswith((".bin", ".pkl", ".pt")):  # as resume reads them: weights_only, numpy allowed
                accelerate_load(folder / name)
        steps.append(step)
    steps.sort()
    assert steps == [s for s, _ in list_checkpoints(out)]
    return steps


def assert_same_tensors(a: Path, b: Path, what: str) -> None:
    ta, tb = load_file(str(a)), load_file(str(b))
    assert ta.keys() == tb.keys()
    for key in ta:
        assert torch.equal(ta[key], tb[key]), f"{what}: {key} differs from the uninterrupted run"


def assert_same_optimizer(a: Path, b: Path) -> None:
    sa, sb = (torch.load(p, weights_only=True) for p in (a, b))
    assert sa["param_groups"] == sb["param_groups"]
    assert sa["state"].keys() == sb["state"].keys()
    for index, state in sa["state"].items():
        for name, value in state.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(sb["state"][index][name])), (index, name)
        assert int(state["step"]) == STEPS  # one optimizer step per training step, none repeated or skipped


@pytest.fixture(scope="module")
def straight(tmp_path_factory, corpus_cache) -> Path:
    """One uninterrupted run, as from the shell."""
    out = tmp_path_factory.mktemp("straight")
    env = {**os.environ, "LINGEN_CACHE": str(corpus_cache), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, str(ROOT / "training" / "train_dit.py"), *train_args(out)], env=env, check=True,
                   capture_output=True, timeout=600)
    return out


def wait_for(predicate, proc, timeout: float = 120.0, poll: float = 0.005) -> bool:
    """Poll ``predicate`` until it holds (True) or ``proc`` ends (False)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if not proc.is_alive():
            return False
        assert time.monotonic() < deadline, "training made no progress"
        time.sleep(poll)
    return True


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None


def test_sigkill_at_random_points_then_resume_matches_an_uninterrupted_run(straight, corpus_cache, tmp_path):
    reference = straight / f"checkpoint-{STEPS}"
    ctx = context()
    rng = random.Random(SEED)
    out, log = tmp_path / "killed", tmp_path / "train.log"
    kills = []
    # where each run is killed: 2 in start-up, 3 while writing a checkpoint, 5 at random times after a step
    modes = ["start-up"] * 2 + ["writing"] * 3 + ["step"] * 5
    rng.shuffle(modes)
    for i, mode in enumerate(modes):
        resume_from = max((s for s, _ in list_checkpoints(out)), default=0)
        old_log = _inode(out / "metrics.jsonl")
        log.write_text("")
        proc = ctx.Process(target=run_training, args=(train_args(out, "--resume", "latest"), str(corpus_cache),
                                                      str(log)))
        proc.start()
        started = time.monotonic()
        if mode == "start-up":  # start-up: model, data, accelerate, reading the checkpoint
            # a random delay, cut short when the run has rewound metrics.jsonl (it is about to take its first
            # step): a resumed run starts in a fraction of a second, and must not train on before the kill
            where = "start-up"
            delay = rng.uniform(0.0, 0.3)

            def started_training(d=delay, old=old_log, t0=started) -> bool:
                return time.monotonic() - t0 >= d or _inode(out / "metrics.jsonl") not in (None, old)

            wait_for(started_training, proc, poll=0.001)
        elif mode == "writing":  # while this run writes a checkpoint (its checkpoint-N.tmp-<pid> folder exists)
            where = "writing a checkpoint"
            pattern = f"checkpoint-*.tmp-{proc.pid}"
            assert wait_for(lambda p=pattern: any(out.glob(p)), proc, poll=0.001), log.read_text()[-3000:]
            time.sleep(rng.uniform(0.0, 0.01))
        else:  # after this run logged a step (its rewound metrics.jsonl is a new file), 0-50 ms on
            target = min(resume_from + rng.randint(1, 3), STEPS - 10)
            where = f"after step {target}"

            def reached(t=target, old=old_log) -> bool:
                return _inode(out / "metrics.jsonl") not in (None, old) and last_logged_step(out) >= t

            assert wait_for(reached, proc), log.read_text()[-3000:]
            time.sleep(rng.uniform(0.0, 0.05))  # a step takes ~30 ms here: the kill lands 0-2 steps on
        assert proc.is_alive(), f"run {i} ended before its kill ({where}): {log.read_text()[-3000:]}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        assert proc.exitcode == -signal.SIGKILL
        partial = sorted(p.name for p in out.glob(f"checkpoint-*.tmp-{proc.pid}*"))
        kills.append((where, last_logged_step(out), round(time.monotonic() - started, 2), partial))

        steps = check_checkpoints(out, reference)
        logged = [r["step"] for r in metrics(out)]
        assert logged == list(range(1, len(logged) + 1)), f"run {i}: steps logged {logged}"
        if resume_from and "resumed from" in log.read_text():
            assert f"resumed from {out / f'checkpoint-{resume_from}'} at step {resume_from}" in log.read_text()
        assert not steps or max(steps) <= max(logged, default=0)
    print("kills (where, last logged step, seconds after start, partial folders left):", *kills, sep="\n  ")
    assert len(kills) == KILLS and last_logged_step(out) < STEPS
    assert any(partial for *_, partial in kills), "no kill hit a checkpoint write"

    # the last run completes the job
    log.write_text("")
    proc = ctx.Process(target=run_training, args=(train_args(out, "--resume", "latest"), str(corpus_cache),
                                                  str(log)))
    proc.start()
    proc.join(600)
    assert proc.exitcode == 0, log.read_text()[-3000:]
    final = out / f"checkpoint-{STEPS}"
    check_checkpoints(out, reference)
    for name in ("model.safetensors", "ema.safetensors"):
        assert_same_tensors(reference / name, final / name, name)
    assert_same_optimizer(reference / "optimizer.bin", final / "optimizer.bin")
    assert json.loads((final / STATE_FILE).read_text()) == json.loads((reference / STATE_FILE).read_text())
    assert_same_tensors(straight / "pipeline" / "transformer" / "diffusion_pytorch_model.safetensors",
                        out / "pipeline" / "transformer" / "diffusion_pytorch_model.safetensors", "final pipeline")
    # every step logged once, with the loss, LR and EMA decay of the uninterrupted run's same step
    keys = ("step", "loss", "lr", "ema_decay")
    assert [{k: r[k] for k in keys} for r in metrics(out)] == [{k: r[k] for k in keys} for r in metrics(straight)]


# ---------------------------------------------------------------------------------------------------------
# A full disk and an unwritable output folder, in-process


def _main(argv: list[str], cache: Path, monkeypatch) -> dict:
    from training.train_dit import main

    monkeypatch.setenv("LINGEN_CACHE", str(cache))
    return main(argv)


def _disk_full_after(monkeypatch, kind: str, calls_before_failing: int) -> None:
    """From the ``calls_before_failing + 1``-th call on, the EMA writer (``kind="ema"``: safetensors, raising
    ENOSPC like a write(2) on a full disk) or ``torch.save`` (``kind="torch"``: the RuntimeError torch's zip
    writer raises on a full disk) fails."""
    import training.checkpoint as checkpoint

    calls = []
    if kind == "ema":
        real = checkpoint.save_file

        def save_file(*args, **kwargs):
            calls.append(1)
            if len(calls) > calls_before_failing:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real(*args, **kwargs)

        monkeypatch.setattr(checkpoint, "save_file", save_file)
    else:
        real = torch.save

        def save(obj, f, *args, **kwargs):
            calls.append(1)
            if len(calls) > calls_before_failing:
                raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 0: "
                                   "PytorchStreamWriter failed writing file data/0: file write failed")
            return real(obj, f, *args, **kwargs)

        monkeypatch.setattr(torch, "save", save)


@pytest.mark.parametrize("kind", ["ema", "torch"])
def test_a_full_disk_while_checkpointing_gives_a_clear_error_and_keeps_the_last_checkpoint(
        kind, tmp_path, corpus_cache, monkeypatch):
    out = tmp_path / "run"
    # torch.save writes the optimizer and the RNG state: 2 calls per checkpoint; the EMA writer: 1
    _disk_full_after(monkeypatch, kind, 1 if kind == "ema" else 2)
    with pytest.raises(CheckpointWriteError) as info:
        _main(train_args(out, steps=4), corpus_cache, monkeypatch)
    message = str(info.value)
    assert str(out / "checkpoint-4") in message and "checkpoint-2" in message and "--resume latest" in message
    if kind == "ema":
        assert info.value.errno == errno.ENOSPC and "No space left on device" in message
    assert [p.name for p in out.iterdir() if p.name.startswith("checkpoint")] == ["checkpoint-2"], \
        "the partial checkpoint was left behind"
    assert json.loads((out / "checkpoint-2" / STATE_FILE).read_text())["step"] == 2
    load_file(str(out / "checkpoint-2" / "model.safetensors"))

    monkeypatch.undo()  # space is back: the run continues from checkpoint-2
    summary = _main(train_args(out, "--resume", "latest", steps=4), corpus_cache, monkeypatch)
    assert summary["step"] == 4 and [s for s, _ in list_checkpoints(out)] == [2, 4]
    assert [r["step"] for r in metrics(out)] == [1, 2, 3, 4]


def test_an_unwritable_output_folder_is_refused_before_any_work(tmp_path, corpus_cache, monkeypatch):
    import training.train_dit as train_dit

    def no_work(*args, **kwargs):
        raise AssertionError("training work started before the output folder was checked")

    monkeypatch.setattr(train_dit, "build_dataset", no_work)
    monkeypatch.setattr(train_dit, "build_model", no_work)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    # a folder under a regular file cannot be created, even by root (chmod does not stop root)
    for out in (blocker / "run", blocker):
        with pytest.raises(SystemExit, match=f"output folder {re.escape(str(out))} is not writable"):
            _main(train_args(out), corpus_cache, monkeypatch)
    if os.geteuid() != 0:  # where permissions apply, a read-only folder too
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(SystemExit, match="is not writable"):
            _main(train_args(locked / "run"), corpus_cache, monkeypatch)
