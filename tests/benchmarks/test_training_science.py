"""benchmarks/training_science.py on tiny budgets: real training runs through train_dit.py, real FLOP counts."""

from __future__ import annotations

import json
import os

import pytest

from benchmarks import training_science as ts


def test_first_reaching():
    curve = [(10, 0.5), (20, 0.3), (30, 0.31), (40, 0.2)]
    assert ts.first_reaching(curve, 0.3) == 20
    assert ts.first_reaching(curve, 0.25) == 40
    assert ts.first_reaching(curve, 0.1) is None


@pytest.fixture()
def tiny_pianoroll(monkeypatch, tmp_path_factory):
    """The experiments' piano-roll recipe shrunk to the tiny HDiT on 40 corpus pieces (shared cache)."""
    from genmodels.data.pianoroll import load_pieces

    cache = tmp_path_factory.getbasetemp() / "science-cache"
    if not cache.exists():
        load_pieces(max_pieces=40, cache_dir=cache / "pianoroll", progress=False)
    monkeypatch.setenv("LINGEN_CACHE", str(cache))
    monkeypatch.setitem(ts.RECIPES, "pianoroll", {
        "args": ["--model", "hdit", "--config", "tiny", "--dataset", "pianoroll",
                 "--dataset-args", '{"width": 32, "max_pieces": 40}'],
        "lr": 5e-4})
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ts.ROOT), os.environ.get("PYTHONPATH")])))


@pytest.mark.slow
def test_immiscible_experiment_end_to_end(tiny_pianoroll, tmp_path):
    out = tmp_path / "imm.json"
    report = ts.main(["immiscible", "--variants", "plain", "knn4", "--seeds", "0", "--batch", "4", "--steps", "6",
                      "--eval-every", "2", "--eval-samples", "8", "--runs-dir", str(tmp_path / "runs"),
                      "--json", str(out), "--plot", str(tmp_path / "imm.png")])
    assert json.loads(out.read_text())["experiment"] == "immiscible" and (tmp_path / "imm.png").stat().st_size > 0
    plain, knn = report["variants"]["plain"], report["variants"]["knn4"]
    assert [s for s, _ in plain["runs"][0]["curve"]] == [2, 4, 6]
    # the plain run reaches its own final loss at its last evaluation at the latest: speed-up ≥ 1
    assert plain["steps_to_plain_final"][0] <= 6 and plain["speedup"][0] >= 1
    # the two runs differ only in the training noise: different curves, same held-out items and noise
    assert plain["runs"][0]["curve"] != knn["runs"][0]["curve"]
    # a second call reuses the finished runs instead of training again
    again = ts.main(["immiscible", "--variants", "plain", "knn4", "--seeds", "0", "--batch", "4", "--steps", "6",
                     "--eval-every", "2", "--eval-samples", "8", "--runs-dir", str(tmp_path / "runs")])
    assert again["variants"]["knn4"]["runs"][0]["curve"] == knn["runs"][0]["curve"]


@pytest.mark.slow
def test_lr_batch_scales_the_rate_at_equal_samples(tiny_pianoroll, tmp_path, monkeypatch):
    monkeypatch.setattr(ts, "pianoroll_metric", lambda run_dir: {"pitch_class_overlap": 0.0})  # sampling: elsewhere
    report = ts.main(["lr-batch", "--recipe", "pianoroll", "--samples", "32", "--base-batch", "2", "--factor", "4",
                      "--seeds", "0", "--evals", "2", "--eval-samples", "8", "--runs-dir", str(tmp_path / "runs")])
    cfgs = report["configs"]
    assert (cfgs["base"]["batch"], cfgs["base"]["steps"]) == (2, 16)
    assert all((cfgs[k]["batch"], cfgs[k]["steps"]) == (8, 4) for k in ("x4-none", "x4-sqrt", "x4-linear"))
    assert cfgs["x4-none"]["peak_lr"] == pytest.approx(5e-4)
    assert cfgs["x4-sqrt"]["peak_lr"] == pytest.approx(1e-3)
    assert cfgs["x4-linear"]["peak_lr"] == pytest.approx(2e-3)
    # evaluations at the same numbers of samples seen in every run
    assert cfgs["base"]["samples_to_base_final"][0] <= 32  # the base reaches its own final loss by its end
    assert [s for s, _ in cfgs["base"]["runs"][0]["curve_samples"]] == \
        [s for s, _ in cfgs["x4-linear"]["runs"][0]["curve_samples"]] == [16, 32]


@pytest.mark.slow
def test_throughput_counts_flops_against_the_measured_peak(tmp_path):
    report = ts.main(["throughput", "--families", "sana", "--seconds", "0", "--min-steps", "1",
                      "--runs-dir", str(tmp_path)])
    row = report["families"]["sana (shapes)"]
    assert report["matmul_peak_gflops"] > 1
    assert row["gflop_per_sample"] > 0.1 and row["samples_per_s"] > 0
    assert 0 < row["share_of_peak"] < 1.5


def test_grouped_convolution_backward_is_counted_like_its_forward():
    import torch

    conv = torch.nn.Conv2d(64, 64, 3, padding=1, groups=64, bias=False)
    x = torch.randn(2, 64, 8, 8, requires_grad=True)
    forward = 2 * 2 * 64 * 8 * 8 * 9  # 2 FLOPs per multiply-add, 9 taps per output, one input channel per group
    assert ts.count_flops(lambda: conv(x)) == forward
    assert ts.count_flops(lambda: conv(x).sum().backward()) == 3 * forward  # + grad-input + grad-weight
