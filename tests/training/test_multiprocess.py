"""Two CPU processes (DDP over gloo, launched by accelerate) train exactly like one process with twice the batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from .test_train_dit import ROOT, corpus_cache  # noqa: F401  (shared fixture)

pytestmark = pytest.mark.slow  # minutes, not seconds: `make test-slow`

ACCELERATE = str(Path(sys.executable).parent / "accelerate")


def _args(out: Path, batch: int, steps: int = 4, *extra: str) -> list[str]:
    return [str(ROOT / "training" / "train_dit.py"), "--model", "hdit", "--config", "tiny", "--dataset", "pianoroll",
            "--dataset-args", '{"width": 32, "max_pieces": 40}', "--output-dir", str(out), "--batch-size", str(batch),
            "--max-steps", str(steps), "--grad-accum", "2", "--checkpoint-every", "2", "--log-every", "1",
            "--threads", "1", *extra]


def _run(args: list[str], processes: int, cache: Path, port: int, config: str = "ddp") -> None:
    """``python args`` for one process with the default config, else ``accelerate launch``
    with ``training/configs/<config>.yaml`` and ``processes`` processes."""
    env = {**os.environ, "LINGEN_CACHE": str(cache), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    if processes == 1 and config == "ddp":
        cmd = [sys.executable, *args]
    else:
        cmd = [ACCELERATE, "launch", "--config_file", str(ROOT / "training" / "configs" / f"{config}.yaml"),
               "--num_processes", str(processes), "--main_process_port", str(port), *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    # the failing rank's own traceback is usually not in the tail (which ends with the launcher's and the other
    # ranks' view of the crash): show every line that names an error as well
    errors = [line for line in proc.stderr.splitlines() if "Error" in line or "error:" in line]
    assert proc.returncode == 0, "\n".join(errors[:40]) + "\n--- stderr tail ---\n" + proc.stderr[-3000:]


def _max_rel_diff(a: Path, b: Path) -> float:
    ta, tb = load_file(str(a)), load_file(str(b))
    assert ta.keys() == tb.keys()
    return max(float((ta[k] - tb[k]).abs().max() / (ta[k].abs().max() + 1e-12)) for k in ta)


@pytest.fixture(scope="module")
def single(tmp_path_factory, corpus_cache):  # noqa: F811
    out = tmp_path_factory.mktemp("single")
    _run(_args(out, 4), 1, corpus_cache, 0)
    return out


def test_two_processes_with_half_batch_match_one_process(single, tmp_path, corpus_cache):  # noqa: F811
    _run(_args(tmp_path, 2), 2, corpus_cache, 29611)
    for name in ("model.safetensors", "ema.safetensors"):
        assert _max_rel_diff(single / "checkpoint-4" / name, tmp_path / "checkpoint-4" / name) < 1e-4, name
    losses = [json.loads(line)["loss"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    ref = [json.loads(line)["loss"] for line in (single / "metrics.jsonl").read_text().splitlines()]
    assert losses == pytest.approx(ref, rel=1e-5)


def test_resume_with_a_different_process_count(single, tmp_path, corpus_cache):  # noqa: F811
    _run(_args(tmp_path, 2, 2), 2, corpus_cache, 29612)  # two processes up to step 2 ...
    _run(_args(tmp_path, 4, 4, "--resume", "latest"), 1, corpus_cache, 0)  # ... then one process to step 4
    state = json.loads((tmp_path / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["step"] == 4
    assert _max_rel_diff(single / "checkpoint-4" / "model.safetensors",
                         tmp_path / "checkpoint-4" / "model.safetensors") < 1e-4
