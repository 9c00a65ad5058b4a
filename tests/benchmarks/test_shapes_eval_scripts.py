"""benchmarks/shapes_t2i_eval.py and benchmarks/sana_pruning.py on a tiny random 32×32 pipeline."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from benchmarks import sana_pruning, shapes_t2i_eval
from genmodels.data.shapes import CATEGORIES, COLOURS, ShapeObject
from genmodels.diffusion.flow import make_flow_scheduler
from genmodels.eval.shapes_oracle import evaluate_imagefolder, load_eval_set
from genmodels.pipelines.text_to_image import TextToImagePipeline
from genmodels.sana import SanaDiT
from genmodels.text import CLIPTextEncoder


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory):
    """A saved tiny pipeline folder (random weights, nudged so the velocity field is not trivial)."""
    torch.manual_seed(0)
    model = SanaDiT(**SanaDiT.tiny_config())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    pipe = TextToImagePipeline(transformer=model, scheduler=make_flow_scheduler("dpmsolver++"),
                               text_encoder=CLIPTextEncoder(**CLIPTextEncoder.tiny_config()))
    folder = tmp_path_factory.mktemp("tiny") / "pipeline"
    pipe.save_pretrained(folder)
    return folder


def test_eval_script_scores_every_category_and_writes_json(tiny_pipeline, tmp_path, capsys):
    out = tmp_path / "eval.json"
    report = shapes_t2i_eval.main(["--model", str(tiny_pipeline), "--steps", "2", "--per-category", "2",
                                   "--batch-size", "5", "--json", str(out), "--samples-dir", str(tmp_path / "s"),
                                   "--grid", str(tmp_path / "grid.png"), "--no-progress"])
    printed = capsys.readouterr().out
    assert "overall" in printed and all(c in printed for c in CATEGORIES)
    data = json.loads(out.read_text())
    assert data == json.loads(json.dumps(report))
    (entry,) = data["models"]
    assert set(entry["per_category"]) == set(CATEGORIES)
    assert all(0 <= v <= 1 for v in entry["per_category"].values()) and 0 <= entry["overall"] <= 1
    assert entry["overall"] == pytest.approx(np.mean(list(entry["per_category"].values())))
    assert entry["n"] == 12 and entry["cross_attn"] == "crosswkv" and entry["seconds"] > 0
    assert data["settings"]["steps"] == 2 and data["settings"]["per_category"] == 2
    # the saved samples re-score to the same numbers; the grid is a PNG
    rescored = evaluate_imagefolder(tmp_path / "s")
    assert rescored["per_category"] == entry["per_category"]
    assert (tmp_path / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_script_scores_validation_captions_on_request(tiny_pipeline):
    report = shapes_t2i_eval.main(["--model", str(tiny_pipeline), "--steps", "2", "--split", "val",
                                   "--per-category", "1", "--no-progress"])
    (entry,) = report["models"]
    assert report["settings"]["split"] == "val" and entry["n"] == 6 and set(entry["per_category"]) == set(CATEGORIES)


def test_eval_script_records_planned_captions_and_no_plan_turns_them_off(tiny_pipeline, tmp_path):
    import shutil

    planning = tmp_path / "planning"
    shutil.copytree(tiny_pipeline, planning)
    index = json.loads((planning / "model_index.json").read_text())
    (planning / "model_index.json").write_text(json.dumps({**index, "prompt_planner": "shapes_layout"}))
    args = ["--steps", "1", "--split", "val", "--per-category", "1", "--no-progress"]
    (plain,) = shapes_t2i_eval.main(["--model", str(tiny_pipeline), *args])["models"]
    (planned,) = shapes_t2i_eval.main(["--model", str(planning), *args])["models"]
    report = shapes_t2i_eval.main(["--model", str(planning), *args, "--no-plan"])
    (off,) = report["models"]
    assert plain["prompt_planner"] is None and planned["prompt_planner"] == "shapes_layout"
    assert off["model_prompts"] == plain["model_prompts"] and report["settings"]["plan_prompts"] is False
    assert all(a != b for a, b in zip(planned["model_prompts"], plain["model_prompts"], strict=True))
    assert off["correct"] == plain["correct"]  # the same weights and captions: the same images


def test_eval_script_passes_the_guidance_interval_to_the_pipeline(tiny_pipeline):
    args = ["--model", str(tiny_pipeline), "--steps", "3", "--split", "val", "--per-category", "1", "--no-progress"]
    full = shapes_t2i_eval.main(args)
    narrow = shapes_t2i_eval.main([*args, "--guidance-interval", "0", "0.5"])
    assert narrow["settings"]["guidance_interval"] == [0.0, 0.5] and "guidance_interval" not in full["settings"]
    pipe = shapes_t2i_eval.load_t2i_pipeline(tiny_pipeline)
    items = shapes_t2i_eval.validation_items(1)
    images = shapes_t2i_eval.generate(pipe, items, steps=3, guidance=4.0, batch_size=6, progress=False,
                                      guidance_interval=(0.0, 0.5))
    assert not np.array_equal(images, shapes_t2i_eval.generate(pipe, items, steps=3, guidance=4.0, batch_size=6,
                                                               progress=False))
    assert narrow["models"][0]["correct"] == shapes_t2i_eval.evaluate(images, [i["spec"] for i in items])["correct"]


def test_text_dependence_reports_true_wrong_and_null_caption_errors(tiny_pipeline, tmp_path, capsys):
    from benchmarks import text_dependence

    report = text_dependence.main(["--model", str(tiny_pipeline), "--items", "6", "--times", "0.5", "1.0",
                                   "--json", str(tmp_path / "dep.json")])
    assert json.loads((tmp_path / "dep.json").read_text()) == json.loads(json.dumps(report))
    per_time = report["models"][0]["per_time"]
    assert set(per_time) == {"0.5", "1.0"} and "wrong gap" in capsys.readouterr().out
    for r in per_time.values():
        assert all(np.isfinite(r[k]) and r[k] > 0 for k in ("true", "wrong", "null"))
        assert r["wrong_gap"] == pytest.approx((r["wrong"] - r["true"]) / r["true"])
        assert r["null_gap"] == pytest.approx((r["null"] - r["true"]) / r["true"])
        assert r["true"] != r["wrong"] != r["null"]  # the (nudged) text path reaches the prediction
    # at t = 1 the input is pure noise, so the error is the same noise whatever the batching: batch 1 agrees
    pipe = shapes_t2i_eval.load_t2i_pipeline(tiny_pipeline)
    one = text_dependence.text_dependence(pipe, items=6, times=[1.0], batch=1)[1.0]
    assert one["true"] == pytest.approx(per_time["1.0"]["true"], rel=1e-5)
    with pytest.raises(ValueError, match="items"):
        text_dependence.text_dependence(pipe, items=1)
    with pytest.raises(ValueError, match="times"):
        text_dependence.text_dependence(pipe, items=4, times=[0.0])
    with pytest.raises(ValueError, match="wrong"):
        text_dependence.text_dependence(pipe, items=4, wrong="other")


def test_text_dependence_can_reverse_only_the_relation(tiny_pipeline, capsys):
    from benchmarks import text_dependence
    from genmodels.data.shapes import reverse_relation as rev

    assert rev("a red circle to the left of a blue square") == "a red circle to the right of a blue square"
    assert rev("there is a square on the right of a circle") == "there is a square on the left of a circle"
    assert rev("a photo of a circle right of a triangle") == "a photo of a circle left of a triangle"
    assert rev("a square under a circle") == "a square above a circle"
    assert rev("a circle above a square") == "a circle below a square"
    with pytest.raises(ValueError, match="no relation"):
        rev("two red circles")
    report = text_dependence.main(["--model", str(tiny_pipeline), "--items", "4", "--times", "0.5",
                                   "--wrong", "relation"])
    assert report["wrong"] == "relation" and "relation reversed" in capsys.readouterr().out
    r = report["models"][0]["per_time"]["0.5"]
    assert r["wrong"] != r["true"] and r["wrong_gap"] == pytest.approx((r["wrong"] - r["true"]) / r["true"])


def test_text_dependence_can_mirror_the_places_of_layout_captions(tiny_pipeline, capsys):
    from benchmarks import text_dependence
    from genmodels.data.shapes_layout import mirror_places

    assert mirror_places("small red circle top left, large blue square middle, small green triangle right") == \
        "small red circle bottom right, large blue square middle, small green triangle left"
    report = text_dependence.main(["--model", str(tiny_pipeline), "--items", "4", "--times", "0.5",
                                   "--wrong", "place"])
    assert report["wrong"] == "place" and "places mirrored" in capsys.readouterr().out
    r = report["models"][0]["per_time"]["0.5"]
    assert r["wrong"] != r["true"] and r["wrong_gap"] == pytest.approx((r["wrong"] - r["true"]) / r["true"])


def test_batched_sampling_matches_one_pipeline_call_per_prompt(tiny_pipeline):
    pipe = shapes_t2i_eval.load_t2i_pipeline(tiny_pipeline)
    items = shapes_t2i_eval.select_items(load_eval_set(), 1)[:4]
    one = shapes_t2i_eval.generate(pipe, items, steps=2, guidance=4.0, batch_size=1, progress=False)
    batched = shapes_t2i_eval.generate(pipe, items, steps=2, guidance=4.0, batch_size=3, progress=False)
    assert one.shape == batched.shape == (4, 32, 32, 3)
    diff = np.abs(one.astype(int) - batched.astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.99  # same noise per prompt; batched matmuls may round
    # a prompt's image depends on its own seed only, not on its batch neighbours
    alone = shapes_t2i_eval.generate(pipe, items[2:3], steps=2, guidance=4.0, batch_size=1, progress=False)
    assert np.abs(alone[0].astype(int) - batched[2].astype(int)).max() <= 1


def test_inpaint_cases_are_deterministic_and_well_formed():
    cases = shapes_t2i_eval.make_inpaint_cases(12, side=64, seed=3)
    again = shapes_t2i_eval.make_inpaint_cases(12, side=64, seed=3)
    assert [c["prompt"] for c in cases] == [c["prompt"] for c in again]
    assert all(np.array_equal(a["image"], b["image"]) for a, b in zip(cases, again))
    for case in cases:
        (obj,) = case["scene"]
        x0, _, x1, _ = ShapeObject(**obj).bbox(64)
        assert x0 > 32 and x1 <= 63
        assert case["mask"][:, :32].all() and not case["mask"][:, 32:].any()
        assert not case["image"][:, :32].any()  # nothing to copy from on the generated side
        target = case["spec"]["objects"][0]
        assert case["spec"]["category"] == "colours" and target["colour"] in COLOURS
        assert target["shape"] != obj["shape"] and target["colour"] != obj["colour"]


def test_inpaint_mode_keeps_the_known_half_exactly(tiny_pipeline, tmp_path):
    out = tmp_path / "inpaint.json"
    report = shapes_t2i_eval.main(["--model", str(tiny_pipeline), "--inpaint", "--inpaint-cases", "4", "--steps",
                                   "2", "--json", str(out), "--grid", str(tmp_path / "inpaint.png"), "--no-progress"])
    (entry,) = json.loads(out.read_text())["models"]
    assert report["mode"] == "inpaint" and entry["n"] == 4 and entry["outputs_checked"] == 8
    assert entry["known_region_violations"] == 0
    assert 0 <= entry["with_prompt"] <= 1 and 0 <= entry["without_prompt"] <= 1
    assert entry["difference"] == pytest.approx(entry["with_prompt"] - entry["without_prompt"])
    assert (tmp_path / "inpaint.png").is_file()


def test_pruning_script_removes_blocks_and_fine_tunes(tiny_pipeline, tmp_path, capsys):
    out = tmp_path / "prune.json"
    report = sana_pruning.main(["--model", str(tiny_pipeline), "--text-encoder-from-pipeline", "--remove", "0", "1",
                                "--finetune-steps", "2", "--train-batch-size", "4", "--per-category", "1",
                                "--steps", "2", "--importance-batches", "1", "--importance-batch-size", "4",
                                "--json", str(out), "--plot", str(tmp_path / "prune.png"), "--no-progress"])
    assert "fine-tuned" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data == json.loads(json.dumps(report))
    assert {"model", "cross_attn", "depth", "importance", "order", "settings", "rows"} <= set(data)
    depth = data["depth"]
    assert depth == 2 and len(data["importance"]) == depth and sorted(data["order"]) == list(range(depth))
    assert [r["k"] for r in data["rows"]] == [0, 1]
    for row in data["rows"]:
        assert row["depth"] == depth - row["k"] and len(row["removed"]) == row["k"]
        assert sorted(row["removed"] + row["kept"]) == list(range(depth))
        assert row["removed"] == data["order"][: row["k"]]  # least important first
        for result in (row["pruned"], row["finetuned"]):
            assert set(result["per_category"]) == set(CATEGORIES) and 0 <= result["overall"] <= 1
        assert row["finetune"]["steps"] == 2 and np.isfinite(row["finetune"]["loss_last"])
    assert (tmp_path / "prune.png").read_bytes()[:4] == b"\x89PNG"
