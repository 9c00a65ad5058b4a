"""benchmarks/dim_video_eval.py on a tiny random 8-frame 32×32 pipeline: both tests, the two-pass sampler."""

from __future__ import annotations

import json

import pytest

from benchmarks import dim_video_eval
from tests.search.helpers import tiny_text_to_video_pipeline

KEYS = ("object", "motion", "identity", "all")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dim_eval") / "model"
    tiny_text_to_video_pipeline().save_pretrained(folder)
    return str(folder)


def test_text_to_video_in_one_and_two_passes(model, tmp_path):
    common = ["--model", model, "--limit", "2", "--steps", "2", "--skip-continuation", "--threads", "1"]
    one = dim_video_eval.main(common)
    two = dim_video_eval.main([*common, "--first-frame-pass", "--json", str(tmp_path / "r.json")])
    for result in (one, two):
        assert "continuation" not in result and result["prompts"] == 2
        assert all(0 <= result["text_to_video"][k] <= 1 for k in KEYS) and result["text_to_video"]["n"] == 2
    assert not one["first_frame_pass"] and two["first_frame_pass"]
    assert json.loads((tmp_path / "r.json").read_text())["first_frame_pass"] is True


def test_continuation_only_from_one_given_frame(model):
    result = dim_video_eval.main(["--model", model, "--limit", "2", "--steps", "2", "--skip-text-to-video",
                                  "--given", "1", "--threads", "1"])
    assert "text_to_video" not in result
    cont = result["continuation"]
    assert cont["given"] == 1 and cont["given_frames_exact"] == 1.0 and cont["truth_oracle"] == 1.0


def test_skipping_both_tests_is_refused(model):
    with pytest.raises(SystemExit, match="nothing to evaluate"):
        dim_video_eval.main(["--model", model, "--skip-text-to-video", "--skip-continuation"])


def test_negative_prompts_per_item_and_in_a_run(model):
    from genmodels.eval.video_oracle import load_video_eval_set

    items = load_video_eval_set()
    still = dim_video_eval.negative_prompts(items, "still")
    reverse = dim_video_eval.negative_prompts(items, "reversed")
    assert dim_video_eval.negative_prompts(items, "null") is None
    for item, s, r in zip(items, still, reverse):
        motions = [o["motion"] for o in item["spec"]["objects"]]
        assert (s is None) == all(m == "still" for m in motions)
        assert (r is None) == all(m == "still" for m in motions)
        if s is not None:
            assert "still" in s and s != item["prompt"]
    result = dim_video_eval.main(["--model", model, "--limit", "2", "--steps", "2", "--skip-continuation",
                                  "--negative", "still", "--threads", "1"])
    assert result["negative"] == "still" and result["text_to_video"]["n"] == 2


def test_category_filter_and_guidance_interval(model):
    two = dim_video_eval.main(["--model", model, "--category", "two", "--limit", "2", "--steps", "2",
                               "--skip-continuation", "--guidance-interval", "0", "0.8", "--threads", "1"])
    assert two["category"] == "two" and two["prompts"] == 2 and two["guidance_interval"] == (0.0, 0.8)
    assert set(two["text_to_video"]["per_category"]) == {"two"}
    plain = dim_video_eval.main(["--model", model, "--category", "two", "--limit", "2", "--steps", "2",
                                 "--skip-continuation", "--threads", "1"])
    assert plain["guidance_interval"] is None
