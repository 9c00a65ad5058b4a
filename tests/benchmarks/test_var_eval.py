"""benchmarks/var_eval.py end to end on a tiny VAR pipeline folder (random weights, real oracle)."""

from __future__ import annotations

import json

import pytest

from benchmarks import var_eval, var_sampling_sweep
from tests.search.helpers import tiny_var_pipeline


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("var") / "var"
    tiny_var_pipeline().save_pretrained(root)
    return root


def test_sampling_sweep_ranks_every_setting(folder, tmp_path):
    rows = var_sampling_sweep.main(["--model", str(folder), "--per-category", "1", "--cfg", "0", "2", "--top-k", "0",
                                    "--top-p", "0.5", "1.0", "--json", str(tmp_path / "s.json")])
    assert len(rows) == 4 and rows == sorted(rows, key=lambda r: -r["overall"])
    assert {(r["cfg"], r["top_p"]) for r in rows} == {(0, 0.5), (0, 1.0), (2, 0.5), (2, 1.0)}


def test_var_eval_reports_oracle_fastvar_inpainting_outpainting_and_ceiling(folder, tmp_path):
    out = tmp_path / "r.json"
    report = var_eval.main(["--model", str(folder), "--per-category", "1", "--split", "val",
                            "--fastvar=-1:0.5", "--fastvar=-1:0.75;layers=0-0", "--seeds-per-prompt", "2",
                            "--inpaint", "2", "--outpaint", "2", "--ceiling", "4",
                            "--json", str(out), "--grid", str(tmp_path / "g.png")])
    entry = report["var"]
    assert entry["t2i"]["n"] == 12 and 0 <= entry["t2i"]["overall"] <= 1  # 6 prompts × 2 seeds
    assert [f["spec"] for f in entry["fastvar"]] == ["-1:0.5", "-1:0.75;layers=0-0"]
    for fv in entry["fastvar"]:
        assert 0 <= fv["identical_images"] <= 12 and fv["paired_se"] >= 0
        # equal counts per category: the overall change is the net gain over all samples
        assert fv["gained"] - fv["lost"] == round(12 * (fv["overall"] - entry["t2i"]["overall"]))
    assert entry["inpaint"]["known_pixels_changed"] == 0 and entry["inpaint"]["known_tokens_changed"] == 0
    assert entry["outpaint"]["known_pixels_changed"] == 0 and entry["outpaint"]["ground_truth"] == 1.0
    assert entry["tokenizer_ceiling"]["original"] == 1.0
    assert json.loads(out.read_text())["var"]["attention"] == "softmax"
    assert (tmp_path / "g.png").is_file()


def test_var_speed_times_fastvar_per_scale_on_a_trained_folder(folder, tmp_path):
    from benchmarks import var_speed

    report = var_speed.main(["--fastvar-model", str(folder), "--fastvar-spec=-1:0.5", "--only-trained",
                             "--fastvar-repeats", "1", "--threads", "1", "--json", str(tmp_path / "s.json")])
    r = report["fastvar_trained"]
    k = len(r["patch_nums"])
    assert r["pruned_scales"] == [k - 1] and r["ratios"] == [0.5] and r["cache_scale"] == k - 2
    assert len(r["base_per_scale_s"]) == len(r["fastvar_per_scale_s"]) == k
    assert all(t > 0 for t in r["base_per_scale_s"] + r["fastvar_per_scale_s"])
    assert r["speedup_overall"] == pytest.approx(r["base_total_s"] / r["fastvar_total_s"])
    assert set(report) == {"threads", "fastvar_trained"}  # sections 1–3 skipped
    assert json.loads((tmp_path / "s.json").read_text())["fastvar_trained"]["spec"] == "-1:0.5"
    with pytest.raises(SystemExit):
        var_speed.main(["--only-trained"])


def test_paired_change_counts_discordant_prompts():
    import numpy as np

    img = [np.zeros((2, 2, 3)), np.ones((2, 2, 3)), np.zeros((2, 2, 3)), np.zeros((2, 2, 3))]
    base = {"correct": [True, True, False, False], "images": img}
    other = {"correct": [True, False, True, False], "images": [img[0], img[0], img[2], img[3]]}
    r = var_eval.paired_change(base, other)
    assert (r["lost"], r["gained"], r["identical_images"]) == (1, 1, 3)
    assert r["paired_se"] == pytest.approx(np.sqrt(2) / 4)
    same = var_eval.paired_change(base, base)
    assert same == {"lost": 0, "gained": 0, "paired_se": 0.0, "identical_images": 4}
