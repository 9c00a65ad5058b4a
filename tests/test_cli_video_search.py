"""`lingen generate --search` with a text-to-video model: best-of-N, tournaments and Tree-of-Frames over clips,
verified by clip-video or the moving-shapes oracle. The model is a tiny random Diffusion Mamba (8 frames of
32×32, so the oracle can read its clips) and the CLIP a tiny random open_clip: these tests check files, seeds,
NFE and the refusals, not what the clips show."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import genmodels.cli as cli
from genmodels.data.moving_shapes import clip_for_spec, parse_video_caption
from genmodels.pipelines.video_io import read_frames
from tests.search.helpers import save_tiny_open_clip, tiny_text_to_image_pipeline, tiny_text_to_video_pipeline

PROMPTS = ["a red circle moves to the right", "a blue square stays still"]
STEPS = 2
FRAMES = 8


@pytest.fixture(scope="module")
def video_model(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("t2v") / "model"
    tiny_text_to_video_pipeline().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def image_model(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("t2i") / "model"
    tiny_text_to_image_pipeline().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    return save_tiny_open_clip(tmp_path_factory.mktemp("clip") / "clip")


def run(*argv) -> int:
    try:
        return cli.main([str(a) for a in argv])
    except SystemExit as exc:
        return exc.code


def manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def search(model, out, *extra, prompts=PROMPTS, video=True) -> int:
    return run("generate", "--model", model, *[x for p in prompts for x in ("--prompt", p)], "--steps", STEPS,
               *(["--mp4-scale", 1] if video else []), "--out", out, *extra)


def test_the_direction_verifier_adds_its_weighted_direction_term(video_model, clip_dir, tmp_path):
    from genmodels.search import direction_agreement
    from genmodels.search.video import DIRECTION_WEIGHT

    scores = {}
    for verifier in ("clip-video", "clip-video-direction"):
        out = tmp_path / verifier
        assert search(video_model, out, "--search", "best-of-n", "--n", 2, "--clip", clip_dir, "--seed", 3,
                      "--verifier", verifier, "--save-candidates", prompts=PROMPTS[:1]) == 0
        (r,) = manifest(out)
        assert r["verifier"] == verifier and r["candidate_seeds"] == [3, 4]
        scores[verifier] = np.array(r["scores"])
    # the same clips (same seeds); the GIFs hold them up to their 256-colour palette
    clips = [read_frames(out / f) for f in r["candidate_files"]]
    direction = [direction_agreement(c, parse_video_caption(PROMPTS[0])["objects"]) for c in clips]
    added = scores["clip-video-direction"] - scores["clip-video"]
    assert (added < 0).all() and np.allclose(added, DIRECTION_WEIGHT * np.array(direction), atol=0.03)


def test_best_of_n_writes_the_argmax_clip_with_scores_nfe_and_a_plot(video_model, clip_dir, tmp_path):
    out = tmp_path / "out"
    assert search(video_model, out, "--search", "best-of-n", "--n", 3, "--clip", clip_dir, "--seed", 10,
                  "--save-candidates") == 0
    records = manifest(out)
    assert [r["prompt"] for r in records] == PROMPTS
    for i, r in enumerate(records):
        assert r["verifier"] == "clip-video-direction" and r["verifier_is_oracle"] is False
        assert "verifier_warning" not in r
        assert r["candidate_seeds"] == [10 + 3 * i + j for j in range(3)]
        assert r["chosen"] == int(np.argmax(r["scores"])) and r["seed"] == r["candidate_seeds"][r["chosen"]]
        assert r["nfe"] == 3 * STEPS and r["nfe_per_candidate"] == [STEPS] * 3 and r["seconds"] > 0
        assert r["files"] == [f"{i:04d}.mp4", f"{i:04d}.gif"] and r["frames"] == FRAMES
        chosen = read_frames(out / r["files"][1])
        assert np.array_equal(chosen, read_frames(out / r["candidate_files"][r["chosen"]]))
        assert read_frames(out / r["files"][0]).shape == (FRAMES, 32, 32, 3)
    assert (out / "score_vs_nfe.png").read_bytes()[:4] == b"\x89PNG"


def test_one_candidate_reproduces_the_plain_run(video_model, clip_dir, tmp_path):
    assert search(video_model, tmp_path / "plain", "--seed", 4, "--batch-size", 1) == 0  # one clip a call, like n = 1
    assert search(video_model, tmp_path / "one", "--search", "best-of-n", "--n", 1, "--clip", clip_dir, "--seed",
                  4) == 0
    for i in range(len(PROMPTS)):
        assert np.array_equal(read_frames(tmp_path / "plain" / f"{i:04d}.gif"),
                              read_frames(tmp_path / "one" / f"{i:04d}.gif"))
    assert [r["seed"] for r in manifest(tmp_path / "one")] == [4, 5]


def test_tournament_takes_n_minus_1_comparisons(video_model, clip_dir, tmp_path):
    out = tmp_path / "out"
    assert search(video_model, out, "--search", "tournament", "--n", 4, "--clip", clip_dir,
                  prompts=PROMPTS[:1]) == 0
    (r,) = manifest(out)
    assert r["comparisons"] == 3 and r["chosen"] == int(np.argmax(r["scores"]))


def test_tree_of_frames_defaults_are_the_measured_configuration(video_model, clip_dir, tmp_path):
    out = tmp_path / "out"
    assert search(video_model, out, "--search", "tree-of-frames", "--n", 2, "--clip", clip_dir, "--seed", 3) == 0
    # 8 frames, 4 per unit: 2 units, grown; 2 roots × 2 first draws at --steps, judged on motion and pruned at
    # depth 0; continuations at ceil(0.4 × 2) = 1 step; seeds ≤ 4 + 2
    for i, r in enumerate(manifest(out)):
        assert r["tree"] == {"frames_per_unit": 4, "grow_units": True, "extend_steps": 1, "first_stage": "motion",
                             "units": 2, "branches": [2, 1], "candidates": [2, 1], "judge_depths": [0],
                             "screen": [0, 0]}
        assert r["first_seed"] == 3 + 6 * i
        assert r["nfe_per_depth"] == [4 * STEPS, r["live_per_depth"][1] * 1]
        # the first unit's 4 frames cost half a clip per call; a continuation denoises the whole 8 frames
        assert r["clip_nfe"] == pytest.approx(r["nfe_per_depth"][0] / 2 + r["nfe_per_depth"][1])
        assert read_frames(out / r["files"][1]).shape == (FRAMES, 32, 32, 3)


def test_the_cli_offers_the_first_stages_the_search_defines():
    from genmodels.search import TREE_FIRST_STAGE, TREE_FIRST_STAGES, TREE_SCREEN

    assert set(cli.TREE_FIRST_STAGE_CHOICES) == set(TREE_FIRST_STAGES) and TREE_FIRST_STAGE in TREE_FIRST_STAGES
    assert cli.TREE_SCREEN == TREE_SCREEN


def test_best_of_n_on_drafts_draws_the_chosen_seed_in_full(video_model, clip_dir, tmp_path):
    out = tmp_path / "out"
    assert search(video_model, out, "--search", "best-of-n", "--n", 3, "--clip", clip_dir, "--seed", 10,
                  "--preview-steps", 1, "--save-candidates") == 0
    for i, r in enumerate(manifest(out)):
        assert r["preview_steps"] == 1 and r["candidate_seeds"] == [10 + 3 * i + j for j in range(3)]
        assert r["preview_keep"] == 1 and r["final_seeds"] == [r["seed"]]  # ceil(3 / 4) = 1 drawn in full
        assert r["nfe_per_candidate"] == [1] * 3 and r["final_nfe"] == STEPS and r["nfe"] == 3 * 1 + STEPS
        assert r["chosen"] == int(np.argmax(r["scores"])) and r["seed"] == r["candidate_seeds"][r["chosen"]]
        # the clip is the chosen seed at --steps, as a plain run with that seed draws it; the candidates are drafts
        plain = tmp_path / f"plain{i}"
        assert search(video_model, plain, "--seed", r["seed"], prompts=PROMPTS[i:i + 1]) == 0
        clip = read_frames(out / r["files"][1])
        assert np.array_equal(clip, read_frames(plain / "0000.gif"))
        assert not np.array_equal(clip, read_frames(out / r["candidate_files"][r["chosen"]]))


def test_best_of_n_on_drafts_keeps_the_best_of_several_full_draws(video_model, clip_dir, tmp_path):
    out = tmp_path / "out"
    assert search(video_model, out, "--search", "best-of-n", "--n", 5, "--clip", clip_dir, "--seed", 7,
                  "--preview-steps", 1, prompts=PROMPTS[:1]) == 0
    (r,) = manifest(out)
    top2 = sorted(np.argsort(-np.array(r["scores"]), kind="stable")[:2].tolist())  # ceil(5 / 4) = 2 kept
    assert r["preview_keep"] == 2 and r["final_seeds"] == [7 + j for j in top2]
    assert r["final_nfe"] == 2 * STEPS and r["nfe"] == 5 * 1 + 2 * STEPS
    assert r["seed"] == r["final_seeds"][int(np.argmax(r["final_scores"]))]
    assert search(video_model, tmp_path / "three", "--search", "best-of-n", "--n", 5, "--clip", clip_dir,
                  "--preview-steps", 1, "--preview-keep", 5, prompts=PROMPTS[:1]) == 0
    (r,) = manifest(tmp_path / "three")
    assert r["final_seeds"] == list(range(5)) and r["nfe"] == 5 * 1 + 5 * STEPS


def test_tree_of_frames_on_drafts_screens_each_roots_first_unit(video_model, clip_dir, tmp_path):
    out = tmp_path / "out"
    assert search(video_model, out, "--search", "tree-of-frames", "--n", 2, "--clip", clip_dir, "--seed", 3,
                  "--preview-steps", 1, prompts=PROMPTS[:1]) == 0
    (r,) = manifest(out)
    assert r["preview_steps"] == 1 and r["tree"]["screen"] == [cli.TREE_SCREEN, 0]
    assert r["tree"]["candidates"] == [1, 1]  # the best draft's seed is drawn once
    # per root: TREE_SCREEN one-step drafts + one draw at --steps; then the live branches' 1-step continuations
    assert r["nfe_per_depth"] == [2 * (cli.TREE_SCREEN * 1 + STEPS), r["live_per_depth"][1] * 1]
    assert r["seeds_used"] == 2 * cli.TREE_SCREEN + r["live_per_depth"][1]
    assert search(video_model, tmp_path / "three", "--search", "tree-of-frames", "--n", 1, "--clip", clip_dir,
                  "--preview-steps", 1, "--screen", 3, "--extend-candidates", 2, prompts=PROMPTS[:1]) == 0
    (r,) = manifest(tmp_path / "three")
    assert r["tree"]["screen"] == [3, 0] and r["tree"]["candidates"] == [1, 2]
    assert r["nfe_per_depth"] == [3 * 1 + STEPS, 2 * 1]  # two 1-step draws of the one continuation


def test_tree_of_frames_the_video_t1_way_records_the_tree_and_its_nfe(video_model, clip_dir, tmp_path):
    out = tmp_path / "out"
    assert search(video_model, out, "--search", "tree-of-frames", "--n", 2, "--clip", clip_dir, "--seed", 3,
                  "--save-candidates", "--frames-per-unit", 2, "--no-grow-units", "--extend-steps", STEPS,
                  "--first-stage", "start") == 0
    records = manifest(out)
    # 8 frames, 2 per unit: 4 units; 2 roots × 2 first draws, pruned at depths 1 and 2; seeds ≤ 4+2+2+2
    for i, r in enumerate(records):
        assert r["tree"] == {"frames_per_unit": 2, "grow_units": False, "extend_steps": STEPS,
                             "first_stage": "start", "units": 4, "branches": [2, 1, 1, 1],
                             "candidates": [2, 1, 1, 1], "judge_depths": [1, 2], "screen": [0] * 4}
        assert r["clip_nfe"] == r["nfe"]
        assert r["first_seed"] == 3 + 10 * i and r["seed"] is None
        assert r["nfe"] == sum(r["nfe_per_depth"]) == STEPS * r["seeds_used"]
        assert r["nfe_per_depth"][0] == 4 * STEPS and r["live_per_depth"][0] == 2
        assert r["live_per_depth"][-1] == len(r["scores"]) == len(r["candidate_files"]) <= 2
        assert read_frames(out / r["files"][1]).shape == (FRAMES, 32, 32, 3)
    assert (out / "score_vs_nfe.png").is_file()


def test_tree_of_frames_with_grown_units_costs_less_than_its_nfe(video_model, clip_dir, tmp_path):
    out = tmp_path / "out"
    assert search(video_model, out, "--search", "tree-of-frames", "--n", 2, "--clip", clip_dir, "--grow-units",
                  "--frames-per-unit", 2, prompts=PROMPTS[:1]) == 0
    (r,) = manifest(out)
    assert r["tree"]["grow_units"] is True and r["nfe"] == sum(r["nfe_per_depth"])
    # depth d denoises 2·(d + 1) of 8 frames: compute in whole clips is NFE at depth d × (d + 1) / 4
    assert r["clip_nfe"] == pytest.approx(sum(n * (d + 1) / 4 for d, n in enumerate(r["nfe_per_depth"])))
    assert r["clip_nfe"] < r["nfe"] and read_frames(out / r["files"][1]).shape == (FRAMES, 32, 32, 3)


def given_frames(tmp_path: Path, count: int) -> tuple[np.ndarray, Path]:
    """The first ``count`` frames of a rendered clip of PROMPTS[0] (few colours: a GIF keeps them exactly), and a
    folder holding them as PNGs in order, for --first-frames."""
    given = clip_for_spec(parse_video_caption(PROMPTS[0]), seed=0).frames[:count]
    folder = tmp_path / "given"
    folder.mkdir()
    for t, frame in enumerate(given):
        Image.fromarray(frame).save(folder / f"{t}.png")
    return given, folder


def test_tree_of_frames_continues_given_frames(video_model, clip_dir, tmp_path):
    given, folder = given_frames(tmp_path, 2)
    out = tmp_path / "out"
    assert search(video_model, out, "--search", "tree-of-frames", "--n", 2, "--clip", clip_dir, "--first-frames",
                  folder, "--frames-per-unit", 3, prompts=PROMPTS[:1]) == 0
    (r,) = manifest(out)
    assert r["tree"]["units"] == 2 and r["given"] == 2  # 6 frames to make, 3 per unit
    assert np.array_equal(read_frames(out / r["files"][1])[:2], given)


def test_tree_of_frames_with_one_frame_to_make_is_one_judged_unit(video_model, clip_dir, tmp_path):
    given, folder = given_frames(tmp_path, FRAMES - 1)
    out = tmp_path / "out"
    assert search(video_model, out, "--search", "tree-of-frames", "--n", 3, "--clip", clip_dir, "--first-frames",
                  folder, "--verifier", "clip-video-direction", prompts=PROMPTS[:1]) == 0
    (r,) = manifest(out)
    assert r["tree"]["units"] == 1 and r["tree"]["frames_per_unit"] == 1 and r["tree"]["judge_depths"] == []
    assert len(r["scores"]) == 3 and r["nfe"] == 6 * STEPS  # 3 roots, each the best of 2 draws: 3 leaves
    assert np.array_equal(read_frames(out / r["files"][1])[:FRAMES - 1], given)


def test_oracle_verifier_is_marked_in_the_manifest(video_model, tmp_path):
    out = tmp_path / "out"
    assert search(video_model, out, "--search", "best-of-n", "--n", 2, "--verifier", "oracle") == 0
    for r in manifest(out):
        assert r["verifier"] == "oracle" and r["verifier_is_oracle"] is True
        assert "evaluator" in r["verifier_warning"] and "clip" not in r
        assert all(0 <= s <= 1 for s in r["scores"])


@pytest.mark.parametrize("case, message", [
    ("image_verifier_on_video", "--verifier ensemble take an image model"),
    ("video_verifier_on_image", "--verifier clip-video take a text-to-video model"),
    ("tree_on_image", "--search tree-of-frames take a text-to-video model"),
    ("frames_per_unit_on_image", "--frames-per-unit take a text-to-video model"),
    ("frames_per_unit_without_tree", "--frames-per-unit takes --search tree-of-frames"),
    ("grow_units_without_tree", "--grow-units takes --search tree-of-frames"),
    ("grow_units_without_search", "--grow-units need --search"),
    ("grow_units_on_image", "--grow-units take a text-to-video model"),
    ("no_grow_units_without_tree", "--no-grow-units takes --search tree-of-frames"),
    ("verifier_without_search", "--verifier clip-video need --search"),
    ("n_without_search", "--n 3 need --search"),
    ("n_zero", "--n must be in"),
    ("frames_per_unit_too_large", "--frames-per-unit must be in 1..8"),
    ("extend_steps_zero", "--extend-steps must be at least 1"),
    ("extend_steps_without_tree", "--extend-steps takes --search tree-of-frames"),
    ("extend_candidates_zero", "--extend-candidates must be at least 1"),
    ("extend_candidates_without_tree", "--extend-candidates takes --search tree-of-frames"),
    ("first_stage_without_search", "--first-stage need --search"),
    ("preview_steps_zero", "--preview-steps must be at least 1"),
    ("preview_steps_without_search", "--preview-steps need --search"),
    ("preview_steps_on_image", "--preview-steps take a text-to-video model"),
    ("screen_without_preview_steps", "--screen must be at least 1 and takes --preview-steps"),
    ("screen_without_tree", "--screen takes --search tree-of-frames"),
    ("preview_keep_without_preview_steps", "--preview-keep takes --search best-of-n and --preview-steps"),
    ("preview_keep_on_tournament", "--preview-keep takes --search best-of-n"),
    ("preview_keep_above_n", "--preview-keep must be in 1..4"),
    ("oracle_outside_grammar", "--verifier oracle needs moving-shapes captions"),
    ("oracle_small_clips", "at least 24 pixels"),
    ("missing_clip", "not an open_clip folder"),
])
def test_search_errors_exit_2_and_write_nothing(video_model, image_model, clip_dir, tmp_path, capsys, case,
                                               message):
    out = tmp_path / "out"
    model, extra, prompts = video_model, ["--search", "best-of-n", "--clip", clip_dir], PROMPTS
    if case == "image_verifier_on_video":
        extra += ["--verifier", "ensemble"]
    elif case == "video_verifier_on_image":
        model, extra = image_model, ["--search", "best-of-n", "--verifier", "clip-video"]
    elif case == "tree_on_image":
        model, extra = image_model, ["--search", "tree-of-frames"]
    elif case == "frames_per_unit_on_image":
        model, extra = image_model, ["--search", "best-of-n", "--frames-per-unit", 2]
    elif case == "frames_per_unit_without_tree":
        extra += ["--frames-per-unit", 2]
    elif case == "grow_units_without_tree":
        extra += ["--grow-units"]
    elif case == "grow_units_without_search":
        extra = ["--grow-units"]
    elif case == "no_grow_units_without_tree":
        extra += ["--no-grow-units"]
    elif case == "grow_units_on_image":
        model, extra = image_model, ["--grow-units"]
    elif case == "verifier_without_search":
        extra = ["--verifier", "clip-video"]
    elif case == "n_without_search":
        extra = ["--n", 3]
    elif case == "n_zero":
        extra += ["--n", 0]
    elif case == "frames_per_unit_too_large":
        extra = ["--search", "tree-of-frames", "--clip", clip_dir, "--frames-per-unit", 9]
    elif case == "extend_steps_zero":
        extra = ["--search", "tree-of-frames", "--clip", clip_dir, "--extend-steps", 0]
    elif case == "extend_steps_without_tree":
        extra += ["--extend-steps", 4]
    elif case == "extend_candidates_zero":
        extra = ["--search", "tree-of-frames", "--clip", clip_dir, "--extend-candidates", 0]
    elif case == "extend_candidates_without_tree":
        extra += ["--extend-candidates", 2]
    elif case == "first_stage_without_search":
        extra = ["--first-stage", "start"]
    elif case == "preview_steps_zero":
        extra += ["--preview-steps", 0]
    elif case == "preview_steps_without_search":
        extra = ["--preview-steps", 4]
    elif case == "preview_steps_on_image":
        model, extra = image_model, ["--search", "best-of-n", "--preview-steps", 4]
    elif case == "screen_without_preview_steps":
        extra = ["--search", "tree-of-frames", "--clip", clip_dir, "--screen", 4]
    elif case == "screen_without_tree":
        extra += ["--preview-steps", 1, "--screen", 4]
    elif case == "preview_keep_without_preview_steps":
        extra += ["--preview-keep", 2]
    elif case == "preview_keep_on_tournament":
        extra = ["--search", "tournament", "--clip", clip_dir, "--preview-steps", 1, "--preview-keep", 2]
    elif case == "preview_keep_above_n":
        extra += ["--preview-steps", 1, "--preview-keep", 5]
    elif case == "oracle_outside_grammar":
        extra, prompts = ["--search", "best-of-n", "--verifier", "oracle"], ["a cat"]
    elif case == "oracle_small_clips":
        extra += ["--verifier", "oracle", "--height", 16, "--width", 16]
    elif case == "missing_clip":
        extra = ["--search", "tree-of-frames", "--clip", tmp_path / "nowhere"]
    assert search(model, out, *extra, prompts=prompts, video=model == video_model) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()
