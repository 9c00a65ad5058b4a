"""benchmarks/video_tof.py (Tree-of-Frames vs best-of-N at matched NFE) on a tiny random 8-frame 32×32 pipeline."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import video_tof
from genmodels.search import TreeConfig, video_tree_config
from tests.search.helpers import save_tiny_open_clip, tiny_text_to_video_pipeline

KEYS = ("object", "motion", "identity", "all")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("video_tof")
    tiny_text_to_video_pipeline().save_pretrained(root / "model")
    return root / "model", save_tiny_open_clip(root / "clip")


def test_nominal_cost_halves_the_live_branches_at_judged_depths():
    assert video_tof.nominal_cost(video_tree_config(4, 4)) == 8 + 4 + 2 + 1  # judged at depths 1 and 2
    assert video_tof.nominal_cost(video_tree_config(3, 4)) == 6 + 3 + 2 + 1  # ceil(3 / 2) = 2
    assert video_tof.nominal_cost(TreeConfig([1] * 4, [1] * 4)) == 4
    # grown units, 2 of 8 frames each: 8·¼ + 4·½ + 2·¾ + 1 = 6.5 → 7 clips
    assert video_tof.nominal_cost(video_tree_config(4, 4), grow=(2, 8)) == 7
    # continuation units at half the steps: 8·¼ + (4·½ + 2·¾ + 1)·½ = 4.25 → 5 clips
    assert video_tof.nominal_cost(video_tree_config(4, 4), grow=(2, 8), extend_ratio=0.5) == 5
    assert video_tof.matched_clips({4: video_tree_config(4, 4)}, {"frames_per_unit": 2, "frames": 8, "grow": True,
                                                                 "steps": 20, "extend_steps": 10}) == {4: 5}
    # 4 roots each screening 6 drafts of a 4-of-8-frame first unit at 4 of 20 steps, the best drawn in full, 2
    # continued at 8 steps: 4·(6·½·⅕ + ½) + 2·1·0.4 = 5.2 → 6 clips (the drafts are 2.4 of them)
    screened = video_tree_config(4, 2, first_candidates=1, screen=6)
    assert video_tof.nominal_cost(screened, grow=(4, 8), extend_ratio=0.4, preview_ratio=0.2) == 6
    assert video_tof.nominal_cost(screened, grow=(4, 8), extend_ratio=0.4) == 3  # the drafts left out: 2.8 → 3
    # two draws per continuation: 4·(6·½·⅕ + ½) + 2·2·0.4 = 6.0 clips
    doubled = video_tree_config(4, 2, first_candidates=1, screen=6, extend_candidates=2)
    assert video_tof.nominal_cost(doubled, grow=(4, 8), extend_ratio=0.4, preview_ratio=0.2) == 6


def test_reach_fraction_finds_the_first_tree_budget_at_best_of_ns_best():
    r = video_tof.reach_fraction([2, 4, 8, 16], [0.2, 0.5, 0.5, 0.4], [5, 3, 9], [0.5, 0.1, 0.6])
    assert r["best_of_n_best"] == 0.5 and r["best_of_n_nfe"] == 4 and r["tree_of_frames_best"] == 0.6
    assert r["tree_of_frames_nfe"] == 5 and r["fraction"] == 1.25 and r["meets_target"] is False
    assert not r["degenerate"]
    assert video_tof.reach_fraction([4, 8], [0.5, 0.5], [2, 9], [0.5, 0.7])["fraction"] == 0.5
    assert video_tof.reach_fraction([1], [0.5], [1], [0.4])["fraction"] is None


def test_reach_fraction_gives_no_fraction_when_best_of_n_never_scores():
    r = video_tof.reach_fraction([1, 2, 4], [0.0, 0.0, 0.0], [5, 8], [0.0, 0.3])
    assert r["degenerate"] and r["fraction"] is None and r["tree_of_frames_nfe"] is None
    assert r["meets_target"] is None and r["tree_of_frames_best"] == 0.3


def test_mean_scores_adds_the_mean_of_the_three_checks():
    rows = [{"object": 1.0, "motion": 0.0, "identity": 1.0, "all": 0.0},
            {"object": 0.0, "motion": 0.0, "identity": 1.0, "all": 0.0}]
    m = video_tof.mean_scores(rows)
    assert m["object"] == 0.5 and m["identity"] == 1.0 and m["mean"] == pytest.approx(0.5)


def test_select_prompts_takes_the_first_of_each_category_in_order():
    items = [{"id": i, "category": c} for i, c in enumerate("aabbbab")]
    assert [x["id"] for x in video_tof.select_prompts(items, per_category=2)] == [0, 1, 2, 3]
    assert [x["id"] for x in video_tof.select_prompts(items, limit=3, per_category=2)] == [0, 1, 2]
    assert [x["id"] for x in video_tof.select_prompts(items, limit=2)] == [0, 1]
    assert len(video_tof.select_prompts(items)) == 7
    # a held-out set: the next two of each category ("a": 0 1 5; "b": 2 3 4 6)
    assert [x["id"] for x in video_tof.select_prompts(items, per_category=2, skip=2)] == [5, 4, 6]
    with pytest.raises(SystemExit):
        video_tof.parse_args(["--per-category", "0"])
    with pytest.raises(SystemExit):
        video_tof.parse_args(["--per-category", "2", "--skip-per-category", "-1"])


def test_smoke_run_on_two_prompts_writes_json_and_a_plot(folders, tmp_path, capsys):
    model, clip = folders
    out, plot = tmp_path / "tof.json", tmp_path / "tof.png"
    report = video_tof.main(["--model", str(model), "--clip", str(clip), "--quick", "--device", "cpu",
                             "--batch-size", "4", "--json", str(out), "--plot", str(plot), "--no-progress"])
    printed = capsys.readouterr().out
    assert "Tree-of-Frames" in printed
    data = json.loads(out.read_text())
    assert data == json.loads(json.dumps(report))
    assert data["settings"]["prompts"] == 2 and data["settings"]["verifier"] == "clip-video"
    assert data["settings"]["units"] == 4 and data["nfe_per_clip"] == 2
    # roots 1: 2 + 1 + 1 + 1 = 5 clips; roots 2: 4 + 2 + 1 + 1 = 8 clips; the best-of-N pool holds 8
    assert data["configs"]["1"]["nominal_clips"] == 5 and data["configs"]["2"]["nominal_clips"] == 8
    assert [b["n"] for b in data["best_of_n"]] == list(range(1, 9))  # every N of the pool
    assert [b["nfe"] for b in data["budgets"]] == [10, 16]
    assert [b["best_of_n"]["n"] for b in data["budgets"]] == [5, 8]
    for row in data["best_of_n"] + data["tree_of_frames"]:
        assert all(0 <= row[k] <= 1 for k in KEYS)
    for p in data["per_prompt"]:
        assert len(p["verifier_scores"]) == 8 and np.isfinite(p["verifier_scores"]).all()
        assert p["best_of_n"]["8"]["index"] == int(np.argmax(p["verifier_scores"]))
        t = {k: np.array(v) for k, v in p["verifier_terms"].items()}  # kept to re-weight the pool offline
        assert np.allclose(t["clip"] + 0.5 * t["temporal"] + 0.5 * t["path"], p["verifier_scores"])
        assert (t["direction"] <= 0).all()  # saved even when its weight is 0, so the pool can be re-weighted
        assert p["tree_of_frames"]["1"]["nfe"] == 5 * 2 and p["tree_of_frames"]["1"]["live_per_depth"] == [1] * 4
    for key, h in (("all", data["headline"]), ("mean", data["headline_mean"])):
        assert h["target"] == 0.6 and h["best_of_n_best"] == max(b[key] for b in data["best_of_n"])
        assert (h["fraction"] is None) == (h["tree_of_frames_nfe"] is None)
        assert h["degenerate"] == (h["best_of_n_best"] == 0)
    assert plot.read_bytes()[:4] == b"\x89PNG"
    again = tmp_path / "again.json"
    resummed = video_tof.main(["--summarize", str(out), "--json", str(again)])
    assert resummed == json.loads(again.read_text()) and resummed["settings"]["summarized_from"] == [str(out)]
    assert {k: v for k, v in resummed.items() if k != "settings"} == {k: v for k, v in data.items() if k != "settings"}
    reweighted = video_tof.main(["--summarize", str(out), "--reweight", "0", "1"])["reweighted_best_of_n"]
    assert list(reweighted) == ["0.0", "1.0"] and [r["n"] for r in reweighted["1.0"]] == list(range(1, 9))
    assert reweighted["0.0"] == [{"n": b["n"], **{k: b[k] for k in (*KEYS, "mean")}} for b in data["best_of_n"]]
    assert "re-selected from the same pool" in capsys.readouterr().out
    # the saved pool reused: same best-of-N rows and (deterministic) trees, no pool sampled
    args = ["--model", str(model), "--clip", str(clip), "--quick", "--device", "cpu", "--no-progress"]
    reran = video_tof.main([*args, "--reuse-pool", str(out)])
    assert reran["best_of_n"] == data["best_of_n"] and reran["tree_of_frames"] == data["tree_of_frames"]
    assert reran["settings"]["pool_from"] == str(out)
    with pytest.raises(SystemExit, match="guidance"):
        video_tof.main([*args, "--reuse-pool", str(out), "--guidance", "3"])
    with pytest.raises(SystemExit, match="layout"):
        video_tof.main([*args, "--reuse-pool", str(out), "--layout", "off"])
    # a pool drawn by other weights saved at the same path (an older shipped checkpoint) is not reused
    saved = json.loads(out.read_text())
    assert saved["settings"]["model_sha256"] == video_tof.model_fingerprint(model)
    saved["settings"]["model_sha256"] = "0" * 64
    (tmp_path / "older.json").write_text(json.dumps(saved))
    with pytest.raises(SystemExit, match="model_sha256"):
        video_tof.main([*args, "--reuse-pool", str(tmp_path / "older.json")])


def test_saved_runs_combine_trees_of_the_same_prompts_and_pool_other_prompts(tmp_path):
    oracle = [{"object": 1.0, "motion": float(j == 3), "identity": 1.0, "all": float(j == 3)} for j in range(16)]

    def run(ids, roots, **settings):
        tree = {"nfe": 8, "clip_nfe": 8.0, "object": 1.0, "motion": 1.0, "identity": 1.0, "all": 1.0}
        per_prompt = [{"id": i, "seed": 7, "nfe_per_clip": 2, "verifier_scores": [0.1, 0.3, 0.2, 0.9] + [0.0] * 12,
                       "oracle": oracle, "best_of_n": {}, "tree_of_frames": {str(r): tree for r in roots}}
                      for i in ids]
        base = {"model": "m", "clip": "c", "steps": 2, "guidance": 4.0, "frames": 8, "direction_weight": 0.0,
                "frames_per_unit": 4, "grow": True, "units": 2, "first_candidates": 2, "extend_steps": None,
                "first_stage": "motion", "verifier": "clip-video"}
        return {"settings": {**base, **settings}, "seconds": 1.0, "per_prompt": per_prompt,
                "configs": {str(r): {"branches": [r, 1], "candidates": [2, 1], "judge_depths": [0]} for r in roots}}

    paths = []
    for name, data in (("a", run(["p1", "p2"], [1, 2])), ("b", run(["p1", "p2"], [4])), ("c", run(["p3"], [1, 4])),
                       ("d", run(["p4"], [1], guidance=3.0))):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(data))
    merged = video_tof.main(["--summarize", str(paths[0]), str(paths[1])])
    assert merged["settings"]["prompts"] == 2 and [t["roots"] for t in merged["tree_of_frames"]] == [1, 2, 4]
    # best-of-N re-selected at every N from the pool: the verifier picks index 1, then 3 (which passes) at N = 4
    assert [b["n"] for b in merged["best_of_n"]] == list(range(1, 17))
    assert [b["all"] for b in merged["best_of_n"]] == [0.0] * 3 + [1.0] * 13
    # expected over random N-subsets: the passing candidate has the top score, so it is picked iff drawn: N / 16
    assert [b["all"] for b in merged["best_of_n_expected"]] == pytest.approx([n / 16 for n in range(1, 17)])
    assert merged["best_of_n_expected"][0]["object"] == pytest.approx(1.0)
    assert merged["headline_expected"]["best_of_n_nfe"] == 32 and merged["headline_expected"]["fraction"] == 0.25
    pooled = video_tof.main(["--summarize", str(paths[0]), str(paths[1]), str(paths[2])])
    assert pooled["settings"]["prompts"] == 3 and [t["roots"] for t in pooled["tree_of_frames"]] == [1, 4]
    with pytest.raises(SystemExit, match="guidance"):
        video_tof.main(["--summarize", str(paths[0]), str(paths[3])])
    # a run on a fresh evaluation set pools with the fixed set's (its ids are its own)
    fresh = tmp_path / "fresh.json"
    fresh.write_text(json.dumps(run(["s9-p1"], [1, 2], eval_seed=9)))
    both = video_tof.main(["--summarize", str(paths[0]), str(fresh)])
    assert both["settings"]["prompts"] == 3 and both["settings"]["eval_seeds"] == [None, 9]


def test_grown_units_cost_their_share_of_a_clip(folders, tmp_path):
    model, clip = folders
    report = video_tof.main(["--model", str(model), "--clip", str(clip), "--quick", "--grow", "--device", "cpu",
                             "--batch-size", "4", "--no-progress"])
    assert report["settings"]["grow"] is True
    directed = video_tof.main(["--model", str(model), "--clip", str(clip), "--quick", "--grow", "--device", "cpu",
                               "--batch-size", "4", "--no-progress", "--direction-weight", "0.25"])
    assert directed["settings"]["direction_weight"] == 0.25 and "direction_weight=0.25" in \
        directed["settings"]["verifier_repr"]
    p = directed["per_prompt"][0]
    assert (np.array(p["verifier_terms"]["direction"]) < 0).all()
    assert np.allclose(np.array(p["verifier_scores"]) - 0.25 * np.array(p["verifier_terms"]["direction"]),
                       report["per_prompt"][0]["verifier_scores"])  # the same pool, the term added
    # re-selecting the saved pool at the run's own weight gives the run's best-of-N rows
    ns = [b["n"] for b in directed["best_of_n"]]
    rows = video_tof.reweighted_best_of_n(directed["per_prompt"], ns, [0.25, 0.0])
    for ours, again in zip(directed["best_of_n"], rows["0.25"], strict=True):
        assert all(ours[k] == again[k] for k in (*KEYS, "mean"))
    for ours, again in zip(report["best_of_n"], rows["0.0"], strict=True):  # and at 0, the plain run's
        assert all(ours[k] == again[k] for k in (*KEYS, "mean"))
    # roots 1: 2·¼ + ½ + ¾ + 1 = 2.75 → 3 clips; roots 2: 4·¼ + 2·½ + ¾ + 1 = 3.75 → 4 clips
    assert report["configs"]["1"]["nominal_clips"] == 3 and report["configs"]["2"]["nominal_clips"] == 4
    for roots, t in zip((1, 2), report["tree_of_frames"], strict=True):
        assert t["roots"] == roots and t["clip_nfe_mean"] < t["nfe_mean"]
    one = report["per_prompt"][0]["tree_of_frames"]["1"]
    assert one["nfe"] == 5 * 2 and one["clip_nfe"] == (2 * 2 + 4 + 6 + 8) * 2 / 8


def test_layout_off_samples_every_clip_from_the_prompt_alone(tmp_path, monkeypatch):
    """With a layout-planning model, ``--layout auto`` lets best-of-N's 8-frame clips follow a planned layout (the
    trees' 4-frame units and continuations get none); ``--layout off`` plans none anywhere."""
    from genmodels.pipelines.text_to_video import TextToVideoPipeline

    tiny_text_to_video_pipeline(layout_planner="moving_shapes").save_pretrained(tmp_path / "model")
    clip = save_tiny_open_clip(tmp_path / "clip")
    calls, original = [], TextToVideoPipeline.__call__

    def recording(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        calls.append((kwargs.get("first_frames") is not None, kwargs.get("num_frames"), out.layouts is not None))
        return out

    monkeypatch.setattr(TextToVideoPipeline, "__call__", recording)
    common = ["--model", str(tmp_path / "model"), "--clip", str(clip), "--quick", "--roots", "1", "--grow",
              "--frames-per-unit", "4", "--device", "cpu", "--no-progress"]
    auto = video_tof.main(common)
    assert auto["settings"]["layout"] == "auto"
    planned = {(continuing, frames) for continuing, frames, laid_out in calls if laid_out}
    assert planned == {(False, 8)}  # best-of-N's whole clips only
    assert any(not continuing and frames == 4 and not laid_out for continuing, frames, laid_out in calls)
    calls.clear()
    off = video_tof.main([*common, "--layout", "off"])
    assert off["settings"]["layout"] == "off" and calls and not any(laid_out for *_, laid_out in calls)


def test_screened_trees_and_best_of_n_with_previews(folders, tmp_path):
    model, clip = folders
    report = video_tof.main(["--model", str(model), "--clip", str(clip), "--quick", "--roots", "1", "2", "--grow",
                             "--frames-per-unit", "4", "--first-candidates", "1", "--screen", "3",
                             "--preview-steps", "1", "--device", "cpu", "--batch-size", "4", "--no-progress",
                             "--json", str(tmp_path / "r.json")])
    assert report["settings"]["screen"] == 3 and report["configs"]["2"]["screen"] == [3, 0]
    # 1 root: 3 one-step drafts of 4 frames + the chosen seed's 2-step draw + one 2-step continuation of 8 frames
    one = report["per_prompt"][0]["tree_of_frames"]["1"]
    assert one["nfe"] == 3 * 1 + 2 + 2 and one["clip_nfe"] == (3 * 1 + 2) * 4 / 8 + 2
    # best-of-N on drafts, keep 1: the pick among N drafts of the pool's seeds is the pool's clip of that seed
    pool = len(report["per_prompt"][0]["oracle"])
    rows = report["best_of_n_preview"]["1"]
    assert [r["n"] for r in rows] == list(range(1, pool + 1)) and rows[2]["nfe"] == 3 * 1 + 2
    for r in rows:
        picks = [p["oracle"][int(np.argmax(p["preview_scores"][: r["n"]]))] for p in report["per_prompt"]]
        assert r["all"] == np.mean([o["all"] for o in picks])
    # keep 4: the 4 best drafts' full clips, the verifier's best of them; min(4, N) clips drawn in full
    four = report["best_of_n_preview"]["4"]
    assert [r["nfe"] for r in four] == [1 + 2, 2 + 4, 3 + 6, 4 + 8] and pool == 4
    assert four[3]["all"] == report["best_of_n"][3]["all"]  # all 4 drawn in full: plain best-of-4's pick
    assert video_tof.drafts_pick([0.1, 0.9, 0.5, 0.8], [5.0, 3.0, 7.0, 2.0], 4, 2) == 1  # drafts 1, 3: full 3 > 2
    assert video_tof.drafts_pick([0.1, 0.9, 0.5, 0.8], [5.0, 1.0, 7.0, 9.0], 4, 2) == 3
    assert video_tof.drafts_pick([0.1, 0.9, 0.5, 0.8], [5.0, 1.0, 7.0, 9.0], 4, 1) == 1
    assert set(report["headline_preview"]) == {"1", "4"} and set(report["headline_drafts_vs_plain"]) == {"1", "4"}
    again = video_tof.main(["--summarize", str(tmp_path / "r.json")])
    assert again["best_of_n_preview"] == report["best_of_n_preview"]
    assert again["headline_preview"] == report["headline_preview"]
    with pytest.raises(SystemExit):  # --screen without --preview-steps
        video_tof.parse_args(["--screen", "3"])


def test_a_fresh_evaluation_set_has_other_prompts_and_its_own_ids():
    from genmodels.eval.video_oracle import load_video_eval_set

    fixed, fresh = video_tof.eval_items(None), video_tof.eval_items(7)
    assert fixed == load_video_eval_set() and len(fresh) == len(fixed)
    assert all(f["id"] == "s7-" + g["id"] for f, g in zip(fresh, fixed, strict=True))
    assert [f["category"] for f in fresh] == [g["category"] for g in fixed]
    assert sum(f["prompt"] != g["prompt"] or f["seed"] != g["seed"] for f, g in zip(fresh, fixed, strict=True)) > 50
    assert video_tof.eval_items(7) == fresh  # drawn deterministically from the seed
