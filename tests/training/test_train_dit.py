"""The shared training script: a real run, checkpoints, and resume after SIGKILL on the tiny HDiT."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from training.checkpoint import list_checkpoints, resolve_resume
from training.ema import InversePowerEMA
from training.lr_scaling import LAMB, GradientNoiseScale, decay_factor, scaled_lr, surge_optimal_lr, warmup_factor

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def corpus_cache(tmp_path_factory):
    """A small piano-roll cache (40 corpus pieces) shared by the training tests."""
    from genmodels.data.pianoroll import load_pieces

    root = tmp_path_factory.mktemp("lingen-cache")
    load_pieces(max_pieces=40, cache_dir=root / "pianoroll", progress=False)
    return root


def _train_cmd(out: Path, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "training" / "train_dit.py"), "--model", "hdit", "--config", "tiny",
            "--dataset", "pianoroll", "--dataset-args", '{"width": 32, "max_pieces": 40}',
            "--output-dir", str(out), "--batch-size", "4", "--max-steps", "8", "--checkpoint-every", "2",
            "--checkpoints-total-limit", "2", "--log-every", "1", "--threads", "1", *extra]


def _env(cache: Path) -> dict:
    return {**os.environ, "LINGEN_CACHE": str(cache), "PYTHONPATH": str(ROOT)}


@pytest.mark.slow
def test_resume_after_sigkill_continues_exactly(tmp_path, corpus_cache):
    env = _env(corpus_cache)
    straight = tmp_path / "straight"
    subprocess.run(_train_cmd(straight), env=env, check=True, capture_output=True, timeout=600)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_train_cmd(killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not any(step >= 4 for step, _ in list_checkpoints(killed)):
        assert proc.poll() is None, "training ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = [step for step, _ in list_checkpoints(killed)]
    assert max(done) < 8, "the run finished before the kill"

    resumed = subprocess.run(_train_cmd(killed, "--resume", "latest"), env=env, check=True, capture_output=True,
                             text=True, timeout=600)
    assert f"resumed from {killed / f'checkpoint-{max(done)}'}" in resumed.stdout + resumed.stderr

    a, b = straight / "checkpoint-8", killed / "checkpoint-8"
    for name in ("model.safetensors", "ema.safetensors"):
        ta, tb = load_file(str(a / name)), load_file(str(b / name))
        assert ta.keys() == tb.keys()
        for key in ta:
            assert (ta[key] == tb[key]).all(), f"{name}:{key} differs after resume"
    state_a = json.loads((a / "trainer_state.json").read_text())
    state_b = json.loads((b / "trainer_state.json").read_text())
    assert state_a == state_b and state_b["step"] == 8 and state_b["ema_step"] == 8
    # the final EMA model is saved as a diffusers pipeline folder that loads
    from genmodels.pipelines import PianoRollInpaintPipeline

    pipe = PianoRollInpaintPipeline.from_pretrained(str(straight / "pipeline"))
    assert pipe.transformer.config.sample_size == [64, 32]
    # total limit: only the two newest checkpoints remain
    assert [s for s, _ in list_checkpoints(straight)] == [6, 8]


def test_incomplete_checkpoint_is_never_resumed(tmp_path):
    (tmp_path / "checkpoint-2").mkdir()
    (tmp_path / "checkpoint-2" / "trainer_state.json").write_text('{"step": 2}')
    (tmp_path / "checkpoint-4").mkdir()  # written up to the crash, no trainer_state.json
    (tmp_path / "checkpoint-6.tmp-123").mkdir()
    assert resolve_resume(tmp_path, "latest") == tmp_path / "checkpoint-2"
    assert resolve_resume(tmp_path / "nothing-here", "latest") is None
    with pytest.raises(ValueError, match="not a complete checkpoint"):
        resolve_resume(tmp_path, str(tmp_path / "checkpoint-4"))


def test_lr_scaling_rules():
    assert scaled_lr(1e-3, 64, 16, "none") == 1e-3
    assert scaled_lr(1e-3, 64, 16, "sqrt") == pytest.approx(2e-3)
    assert scaled_lr(1e-3, 64, 16, "linear") == pytest.approx(4e-3)
    with pytest.raises(ValueError):
        scaled_lr(1e-3, 64, 16, "cubic")


def test_ema_inverse_power_schedule_and_update():
    import torch

    model = torch.nn.Linear(2, 1, bias=False)
    ema = InversePowerEMA(model, power=0.75, max_decay=0.9999)
    with torch.no_grad():
        model.weight.fill_(1.0)
        ema.model.weight.fill_(0.0)
    ema.step(model)  # decay = 1 - 2^-0.75
    d = 1 - 2 ** -0.75
    assert ema.model.weight[0, 0].item() == pytest.approx(1 - d)
    ema.step_count = 10**9
    assert ema.decay() == 0.9999


def test_goyal_warmup_ramps_from_base_rate_to_scaled_rate():
    assert warmup_factor(0, 4, start_ratio=0.25) == pytest.approx(0.25 + 0.75 / 4)
    assert warmup_factor(3, 4, start_ratio=0.25) == 1.0
    assert warmup_factor(10, 0) == 1.0


def test_cooldown_holds_the_rate_then_decays_linearly_to_a_tenth():
    f = [decay_factor(s, 1000, 100, "cooldown", decay_start=600) for s in (100, 599, 600, 800, 1000, 5000)]
    assert f == pytest.approx([1.0, 1.0, 1.0, 0.55, 0.1, 0.1])
    assert decay_factor(0, 1000, 100, "cosine") == 1.0
    assert decay_factor(1000, 1000, 100, "cosine") == pytest.approx(0.1)
    for start in (None, 50, 1000):  # missing, inside the warm-up, at the end
        with pytest.raises(ValueError, match="decay_start"):
            decay_factor(0, 1000, 100, "cooldown", decay_start=start)
    with pytest.raises(ValueError, match="cooldown"):
        decay_factor(0, 1000, 100, "linear")


def test_surge_optimal_lr_peaks_at_the_noise_scale():
    lrs = {b: surge_optimal_lr(b, 256, 1e-3) for b in (16, 64, 256, 1024, 4096)}
    assert lrs[256] == pytest.approx(1e-3)
    assert lrs[64] < lrs[256] > lrs[1024]
    assert lrs[16] == pytest.approx(lrs[4096])  # symmetric in log B around B_noise


def test_noise_scale_estimator_recovers_a_known_b_noise():
    import torch

    gen = torch.Generator().manual_seed(0)
    true_g, sigma = torch.full((50,), 0.1), 1.0  # |G|² = 0.5, tr(Σ) = 50 → B_noise = 100
    est = GradientNoiseScale(beta=0.99)
    for _ in range(3000):
        small = true_g + torch.randn(50, generator=gen) * sigma / 4 ** 0.5
        big = true_g + torch.randn(50, generator=gen) * sigma / 64 ** 0.5
        est.update(float(small.pow(2).sum()), 4, float(big.pow(2).sum()), 64)
    assert 70 < est.value < 130


def test_lamb_scales_each_update_by_the_trust_ratio():
    import torch

    w = torch.nn.Parameter(torch.full((4,), 2.0))
    opt = LAMB([w], lr=0.1, weight_decay=0.0)
    w.grad = torch.tensor([1.0, -1.0, 1.0, -1.0])
    opt.step()
    # first Adam step: update = sign(g) (norm 2); ‖w‖ = 4 → trust 2 → each weight moves by lr·2 = 0.2
    assert torch.allclose(w.detach(), torch.tensor([1.8, 2.2, 1.8, 2.2]), atol=1e-4)


@pytest.mark.slow
def test_stop_at_step_saves_there_and_resumes_into_the_same_run(tmp_path, corpus_cache):
    env = _env(corpus_cache)
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    common = ("--checkpoints-total-limit", "5", "--lr-decay", "cooldown", "--decay-start", "2")
    subprocess.run(_train_cmd(straight, *common), env=env, check=True, capture_output=True, timeout=600)
    subprocess.run(_train_cmd(stopped, *common, "--stop-at-step", "3"), env=env, check=True, capture_output=True,
                   timeout=600)
    assert [s for s, _ in list_checkpoints(stopped)] == [2, 3]
    assert json.loads((stopped / "summary.json").read_text())["step"] == 3
    assert (stopped / "pipeline" / "model_index.json").exists()
    # run again with the same stop: nothing more is trained
    subprocess.run(_train_cmd(stopped, *common, "--stop-at-step", "3", "--resume", "latest"), env=env, check=True,
                   capture_output=True, timeout=600)
    assert [s for s, _ in list_checkpoints(stopped)] == [2, 3]
    # resumed without the stop, the run continues on the schedule of --max-steps and ends where the straight run did
    subprocess.run(_train_cmd(stopped, *common, "--resume", "latest"), env=env, check=True, capture_output=True,
                   timeout=600)
    for name in ("model.safetensors", "ema.safetensors"):
        ta, tb = load_file(str(straight / "checkpoint-8" / name)), load_file(str(stopped / "checkpoint-8" / name))
        assert all((ta[key] == tb[key]).all() for key in ta), name


def test_stop_at_step_outside_the_run_is_refused(tmp_path, corpus_cache):
    result = subprocess.run(_train_cmd(tmp_path / "bad", "--stop-at-step", "9"), env=_env(corpus_cache),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode != 0 and "stop_at_step must be in 1..max_steps (8)" in result.stderr
    assert not list_checkpoints(tmp_path / "bad")
