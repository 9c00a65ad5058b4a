"""Test-time search in the app's tabs, driven through the endpoints as a remote user would: a best-of-N or a
tournament returns N candidates with their seeds and scores (``/image_search_candidates``,
``/search_candidates``, ``/video_search_candidates``), keeps the best, and reports the NFE and wall time;
strategy "none" (the default) gives exactly the output it gave before; bad search settings are refused with a
clear message and change nothing.

Models: the tiny untrained pipelines of the tab tests and a tiny random open_clip CLIP, so these tests check the
search's bookkeeping (which candidate is chosen, what is reported), not what the pictures show.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import gradio as gr
import httpx
import numpy as np
import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from app import search
from app.main import build_app, launch_kwargs
from app.registry import LOADERS, ModelRegistry
from app.settings import Settings
from app.tabs.image import ImageTab
from app.tabs.pianoroll import MASK_FROM_RANGES, PianoRollTab
from app.tabs.video import VideoTab
from genmodels.music import render_roll
from genmodels.pipelines.pianoroll_io import load_roll, rect_mask
from genmodels.pipelines.video_io import read_frames, write_gif
from tests.app.conftest import free_port, make_client
from tests.app.test_image_tab import tiny_image_pipeline_dir  # noqa: F401  (fixture)
from tests.app.test_video_tab import tiny_video_pipeline_dir  # noqa: F401  (fixture)
from tests.search.helpers import save_tiny_open_clip

PROMPT = "a red circle to the left of a blue square"
BACH = "Bach chorale BWV 263 (8 bars)"
MAX_N = 4  # Settings.max_search_n of the app under test
IMAGE_SIZE, IMAGE_SCALE = 32, 4
ROLL_SCALE = 4
VIDEO_FRAMES, VIDEO_SIZE, VIDEO_SCALE = 4, 16, 8  # DiffusionMamba.tiny_config(), Settings.video_scale
# Enough steps that the tiny piano-roll model's candidates differ in their notes (2 steps fill the whole mask).
ROLL = {"repaint": 2, "samples": 1, "busyness": 100, "steps": 4}
CAPTION = re.compile(r"(✓ )?seed (\d+) · score (-?[\d.e+-]+)$")


def no_progress(*args, **kwargs) -> None:
    pass


# ---------------------------------------------------------------------------------------------------------
# Fixtures: an app with every tiny model and a tiny CLIP


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory) -> Path:
    return save_tiny_open_clip(tmp_path_factory.mktemp("clip-tiny") / "clip")


@pytest.fixture(scope="session")
def search_settings(tiny_pipeline_dir, tiny_image_pipeline_dir, tiny_video_pipeline_dir,  # noqa: F811
                    tiny_clip_dir, tmp_path_factory) -> Settings:
    models = {"pianoroll": tiny_pipeline_dir, "image": tiny_image_pipeline_dir, "video": tiny_video_pipeline_dir,
              "clip": tiny_clip_dir}
    return Settings(assets_dir=tmp_path_factory.mktemp("search-assets"), model_dirs=models,
                    output_dir=tmp_path_factory.mktemp("search-app-out"), device="cpu", max_samples=4, min_steps=2,
                    max_frames=8, max_search_n=MAX_N, search_batch=1, concurrency=1, max_queue=32)


@pytest.fixture(scope="session")
def search_server(search_settings):
    """URL of an app with every tiny model and the tiny CLIP, served from this process on a free local port."""
    demo = build_app(search_settings)
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                            **launch_kwargs(search_settings))
    try:
        yield url
    finally:
        demo.close()


@pytest.fixture
def client(search_server, downloads):
    return make_client(search_server, downloads)


def scored(found: tuple[list, str]) -> tuple[list[tuple[int, float, bool]], str]:
    """``candidates`` without the picture files (each call downloads them afresh)."""
    rows, line = found
    return [r[1:] for r in rows], line


def candidates(client, endpoint: str) -> tuple[list[tuple[str, int, float, bool]], str]:
    """The last search of this session: (picture file, seed, score, chosen) per candidate, and the search line."""
    gallery, line = client.predict(api_name=endpoint)
    rows = []
    for item in gallery:
        match = CAPTION.match(item["caption"])
        assert match, item["caption"]
        rows.append((item["image"], int(match[2]), float(match[3]), match[1] is not None))
    return rows, line


def assert_search_reported(rows, line, *, n: int, seed: int, strategy: str) -> int:
    """N candidates of seeds seed..seed+n−1, exactly one chosen, the argmax; the line names the strategy, the NFE
    and the wall time. Returns the chosen index."""
    assert [r[1] for r in rows] == list(range(seed, seed + n))
    chosen = [i for i, r in enumerate(rows) if r[3]]
    scores = [r[2] for r in rows]
    assert len(chosen) == 1 and chosen[0] == int(np.argmax(scores))
    assert f"**{strategy}** over {n} candidates" in line and "network evaluations (nfe)" in line
    assert re.search(r"\d+\.\d\d s wall time", line)
    return chosen[0]


def untimed(stats: str) -> str:
    return re.sub(r"\d+\.\d\d s", "_ s", stats)


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


# ---------------------------------------------------------------------------------------------------------
# Image tab


def generate_image(client, *search_args, seed=5, steps=3):
    return client.predict(PROMPT, None, steps, 4.0, seed, False, None, *search_args, api_name="/generate_image")


def test_the_search_endpoints_are_listed(client):
    names = set(client.view_api(return_format="dict", print_info=False)["named_endpoints"])
    assert {"/image_search_candidates", "/search_candidates", "/video_search_candidates"} <= names


@pytest.mark.parametrize("verifier", ["clip", "ensemble"])
def test_image_best_of_n_returns_n_scored_candidates_and_keeps_the_argmax(client, verifier):
    shown, file, stats = generate_image(client, "best-of-n", 3, verifier, seed=5)
    rows, line = candidates(client, "/image_search_candidates")
    chosen = assert_search_reported(rows, line, n=3, seed=5, strategy="best-of-n")
    assert f"scored by **{verifier}**" in line and "9 network evaluations (nfe) in all, 3 per candidate" in line
    assert np.array_equal(pixels(rows[chosen][0]), pixels(shown))  # the gallery shows what was chosen
    assert f"seed {rows[chosen][1]}" in stats and Image.open(file).size == (IMAGE_SIZE, IMAGE_SIZE)


def test_image_tournament_plays_n_minus_1_matches_and_keeps_the_argmax(client):
    shown, _file, _stats = generate_image(client, "tournament", 4, "clip", seed=0)
    rows, line = candidates(client, "/image_search_candidates")
    chosen = assert_search_reported(rows, line, n=4, seed=0, strategy="tournament")
    assert "3 comparisons" in line
    assert np.array_equal(pixels(rows[chosen][0]), pixels(shown))


def test_image_strategy_none_gives_the_output_of_a_request_without_search(client):
    old = generate_image(client, seed=9)  # the seven inputs an existing client sends
    none = generate_image(client, "none", 3, "ensemble", seed=9)
    assert Path(old[1]).read_bytes() == Path(none[1]).read_bytes() and untimed(old[2]) == untimed(none[2])
    assert candidates(client, "/image_search_candidates") == ([], "")


def test_a_plain_http_call_with_the_inputs_from_before_the_search_still_works(search_server):
    # gradio_client fills left-out parameters itself; a plain HTTP caller sends a list, which the app completes with
    # the search's defaults (app.gradio_fixes, fix 3).
    body = {"data": [PROMPT, None, 2, 4.0, 0, False, None]}
    post = httpx.post(f"{search_server}gradio_api/call/generate_image", json=body)
    post.raise_for_status()
    stream = httpx.get(f"{search_server}gradio_api/call/generate_image/{post.json()['event_id']}", timeout=60).text
    assert "event: complete" in stream and "2 network evaluations (nfe)" in stream and "seed 0" in stream


def test_an_image_candidate_is_the_picture_a_plain_request_with_its_seed_gives(client):
    generate_image(client, "best-of-n", 3, "clip", seed=20)
    rows, _line = candidates(client, "/image_search_candidates")
    for picture, seed, _score, _chosen in rows:
        plain, _file, _stats = generate_image(client, seed=seed)
        assert np.array_equal(pixels(picture), pixels(plain))


def test_image_search_reports_progress_candidate_by_candidate(search_settings):
    tab = ImageTab(search_settings, ModelRegistry(search_settings))
    calls = []
    tab.generate(PROMPT, None, 2, 4.0, 0, False, None, "best-of-n", 3, "clip",
                 progress=lambda value, desc=None, **kw: calls.append((value, desc)))
    assert list(dict.fromkeys(desc for _value, desc in calls)) == [
        "loading the model", "loading the verifier", "candidate 1 of 3", "candidate 2 of 3", "candidate 3 of 3",
        "scoring 3 candidates (clip)"]
    steps = [value for value, desc in calls if desc.startswith("candidate")]
    assert steps[-1] == (6, 6) and all(a[0] / a[1] <= b[0] / b[1] for a, b in zip(steps, steps[1:]))  # 3 × 2 steps


def test_the_clip_verifier_is_loaded_once_and_shared(search_settings):
    loads = []

    def counting_clip_loader(folder, device):
        loads.append(folder)
        return LOADERS["clip"](folder, device)

    registry = ModelRegistry(search_settings, loaders={**LOADERS, "clip": counting_clip_loader})
    tab = ImageTab(search_settings, registry)
    for verifier in ("clip", "ensemble", "clip"):
        tab.generate(PROMPT, None, 2, 4.0, 0, False, None, "best-of-n", 2, verifier, progress=no_progress)
    assert len(loads) == 1 and "clip" in registry.loaded()


def test_a_missing_clip_says_how_to_get_it_and_plain_requests_still_work(search_settings, tmp_path):
    settings = replace(search_settings, model_dirs={**search_settings.model_dirs, "clip": tmp_path / "no-clip"})
    tab = ImageTab(settings, ModelRegistry(settings))
    with pytest.raises(Exception, match=r"CLIP verifier model is not installed.*make assets-shapes"):
        tab.generate(PROMPT, None, 2, 4.0, 0, False, None, "best-of-n", 2, "clip", progress=no_progress)
    assert tab.generate(PROMPT, None, 2, 4.0, 0, False, None, "none", 2, "clip", progress=no_progress)[4] is None


# ---------------------------------------------------------------------------------------------------------
# Piano roll tab


@pytest.fixture
def roll_client(client):
    client.predict(BACH, api_name="/load_example")
    return client


def generate_roll(client, *search_args, seed=0):
    p = ROLL
    return client.predict(None, MASK_FROM_RANGES, "3-4", "", p["repaint"], p["samples"], p["busyness"], p["steps"],
                          seed, *search_args, api_name="/generate")


@pytest.mark.parametrize("strategy", ["best-of-n", "tournament"])
@pytest.mark.parametrize("verifier", ["busyness", "ensemble"])
def test_pianoroll_search_returns_n_scored_candidates_and_keeps_the_argmax(roll_client, examples, strategy, verifier):
    image, midi, _audio, stats = generate_roll(roll_client, strategy, 4, verifier, seed=3)
    rows, line = candidates(roll_client, "/search_candidates")
    chosen = assert_search_reported(rows, line, n=4, seed=3, strategy=strategy)
    assert "32 network evaluations (nfe) in all, 8 per candidate" in line  # 4 steps × RePaint 2
    assert f"Candidate **{chosen + 1} of 4**" in stats and "4 steps × RePaint 2" in stats
    assert np.array_equal(pixels(rows[chosen][0]), pixels(image))
    original, _ = load_roll(examples[BACH])
    result, _ = load_roll(midi)
    mask = rect_mask(original.shape[2], (3, 4), (28, 91))
    assert np.array_equal(result[:, ~mask], original[:, ~mask])  # a search inpaints like a plain request
    assert np.array_equal(pixels(image), np.asarray(render_roll(result, highlight_mask=mask, scale=ROLL_SCALE)))


def test_pianoroll_busyness_search_keeps_the_busiest_candidate_at_percentile_100(roll_client):
    generate_roll(roll_client, "best-of-n", 4, "busyness", seed=3)
    rows, _line = candidates(roll_client, "/search_candidates")
    assert max(r[2] for r in rows) == 0 and len({r[2] for r in rows}) > 1  # 0: the busiest; others fewer notes


def test_pianoroll_strategy_none_gives_the_output_of_a_request_without_search(roll_client):
    old = generate_roll(roll_client, seed=4)
    none = generate_roll(roll_client, "none", 4, "in-key", seed=4)
    assert Path(old[1]).read_bytes() == Path(none[1]).read_bytes() and untimed(old[3]) == untimed(none[3])
    assert candidates(roll_client, "/search_candidates") == ([], "")


@pytest.mark.parametrize("percentile, chosen", [(100, 1), (50, 2), (1, 0)])
def test_the_busyness_verifier_picks_the_candidate_at_the_percentile_like_the_pipeline(percentile, chosen):
    rolls, mask = [], np.zeros((64, 32), bool)
    mask[:, :16] = True
    for notes in (3, 9, 5):  # onsets (one-column notes) in the mask
        roll = np.zeros((2, 64, 32), np.float32)
        roll[0, 30 + np.arange(notes), 2 * np.arange(notes)] = 0.8
        roll[1, 30 + np.arange(notes), 2 * np.arange(notes)] = 0.8
        rolls.append(roll)
    scores = search.pianoroll_verifier("busyness", percentile).score(rolls, {"mask": mask})
    assert int(np.argmax(scores)) == chosen and scores[chosen] == 0


def test_pianoroll_search_reports_progress_candidate_by_candidate(search_settings):
    tab = PianoRollTab(search_settings, ModelRegistry(search_settings))
    _editor, _info, piece = tab.load_example(BACH)
    descs = []
    tab.generate(None, piece, MASK_FROM_RANGES, "2-2", "60-64", 1, 1, 100, 2, 0, "tournament", 3, "onset-grid",
                 progress=lambda value, desc=None, **kw: descs.append(desc))
    assert list(dict.fromkeys(descs)) == ["loading the model", "candidate 1 of 3", "candidate 2 of 3",
                                                 "candidate 3 of 3", "scoring 3 candidates (onset-grid)",
                                                 "rendering audio"]


# ---------------------------------------------------------------------------------------------------------
# Video tab


def generate_video(client, *search_args, seed=0):
    shown, files, stats = client.predict("a red circle moves to the right", VIDEO_FRAMES, 2, 4.0, seed, None,
                                         *search_args, api_name="/generate_video")
    gif = next(f for f in files if str(f).endswith(".gif"))
    return shown["video"] if isinstance(shown, dict) else shown, gif, stats


@pytest.mark.parametrize("strategy", ["best-of-n", "tournament"])
def test_video_search_returns_n_scored_candidate_clips_and_keeps_the_argmax(client, strategy):
    _shown, gif, stats = generate_video(client, strategy, 3, "clip-video", seed=2)
    rows, line = candidates(client, "/video_search_candidates")
    chosen = assert_search_reported(rows, line, n=3, seed=2, strategy=strategy)
    assert "scored by **clip-video**" in line and "6 network evaluations (nfe) in all, 2 per candidate" in line
    assert f"seed {rows[chosen][1]}" in stats
    clip = read_frames(gif)
    for picture, *_ in rows:  # each candidate an animated GIF of the whole clip, magnified
        assert read_frames(picture).shape == (VIDEO_FRAMES, VIDEO_SIZE * VIDEO_SCALE, VIDEO_SIZE * VIDEO_SCALE, 3)
    assert np.array_equal(read_frames(rows[chosen][0])[:, ::VIDEO_SCALE, ::VIDEO_SCALE], clip)


def test_video_strategy_none_gives_the_output_of_a_request_without_search(client):
    old = generate_video(client, seed=6)
    none = generate_video(client, "none", 3, "clip-video", seed=6)
    assert np.array_equal(read_frames(old[1]), read_frames(none[1])) and untimed(old[2]) == untimed(none[2])
    assert candidates(client, "/video_search_candidates") == ([], "")


def test_a_video_candidate_is_the_clip_a_plain_request_with_its_seed_gives(client):
    generate_video(client, "best-of-n", 2, "clip-video", seed=30)
    rows, _line = candidates(client, "/video_search_candidates")
    for picture, seed, _score, _chosen in rows:
        plain = read_frames(generate_video(client, seed=seed)[1])
        assert np.array_equal(read_frames(picture)[:, ::VIDEO_SCALE, ::VIDEO_SCALE], plain)


LEAF = re.compile(r"(✓ )?leaf (\d+) · score (-?[\d.e+-]+)$")
TREE_LINE = re.compile(r"\*\*tree-of-frames\*\* from (\d+) roots, (\d+) units of (\d+) frames?, scored by "
                       r"\*\*([\w-]+)\*\*: branches alive after each unit ([\d →]+); leaf (\d+) of (\d+) chosen · "
                       r"(\d+) network evaluations \(nfe\) on growing clips, the compute of ([\d.]+) whole clips")


@pytest.mark.parametrize("verifier", ["clip-video", "clip-video-direction"])
def test_video_tree_of_frames_grows_units_prunes_and_keeps_the_best_leaf(client, verifier):
    _shown, gif, stats = generate_video(client, "tree-of-frames", 3, verifier, seed=4)
    gallery, line = client.predict(api_name="/video_search_candidates")
    match = TREE_LINE.search(line)
    assert match, line
    roots, units, per_unit = int(match[1]), int(match[2]), int(match[3])
    assert (roots, units, per_unit, match[4]) == (3, 2, 2, verifier)  # 4 frames to make: 2 units of 2
    live = [int(k) for k in match[5].split(" → ")]
    assert len(live) == units and live[0] < 3 and live[1] == live[0]  # pruned at the median after the 1st unit
    assert len(gallery) == live[-1] == int(match[7])
    rows = [LEAF.match(item["caption"]) for item in gallery]
    assert all(rows), [item["caption"] for item in gallery]
    scores = [float(r[3]) for r in rows]
    chosen = [i for i, r in enumerate(rows) if r[1]]
    assert chosen == [int(np.argmax(scores))] == [int(match[6]) - 1]
    # NFE: the first unit is the best of 2 draws per root at the 2 steps, the continuation one draw per live branch
    # at ceil(0.4 · 2) = 1 step; the first unit denoises 2 of the 4 frames, a continuation all 4
    nfe = 2 * 2 * roots + 1 * live[0]
    assert int(match[8]) == nfe and f"{nfe} network evaluations" in stats
    clip_nfe = 2 * 2 * roots * 2 / VIDEO_FRAMES + live[0]
    assert float(match[9]) == pytest.approx(clip_nfe / 2, abs=0.05)
    clip = read_frames(gif)
    assert clip.shape == (VIDEO_FRAMES, VIDEO_SIZE, VIDEO_SIZE, 3)
    assert np.array_equal(read_frames(gallery[chosen[0]]["image"])[:, ::VIDEO_SCALE, ::VIDEO_SCALE], clip)


def test_video_tree_of_frames_continues_given_frames(client, tmp_path):
    given = np.random.default_rng(0).integers(0, 256, (2, VIDEO_SIZE, VIDEO_SIZE, 3), dtype=np.uint8)
    path = write_gif(given, tmp_path / "first.gif", fps=4)
    _shown, files, stats = client.predict("a red circle moves to the right", VIDEO_FRAMES, 2, 4.0, 0,
                                          [handle_file(str(path))], "tree-of-frames", 2, "clip-video",
                                          api_name="/generate_video")
    gif = next(f for f in files if str(f).endswith(".gif"))
    clip = read_frames(gif)
    assert np.array_equal(clip[:2], read_frames(path)) and "continuing 2 given frames" in stats
    _gallery, line = client.predict(api_name="/video_search_candidates")
    assert "from 2 roots, 2 units of 1 frame," in line  # 2 frames to make


def test_video_tree_of_frames_reports_progress_unit_by_unit(search_settings):
    tab = VideoTab(search_settings, ModelRegistry(search_settings))
    descs = []
    tab.generate("a blue square moves down", VIDEO_FRAMES, 2, 4.0, 0, None, "tree-of-frames", 2, "clip-video",
                 progress=lambda value, desc=None, **kw: descs.append(desc))
    seen = list(dict.fromkeys(descs))
    assert seen[:4] == ["loading the model", "loading the verifier", "Tree-of-Frames: unit 1 of 2, branch 1",
                        "Tree-of-Frames: unit 1 of 2, branch 2"]
    assert "Tree-of-Frames: unit 2 of 2, branch 1" in seen and seen[-1].startswith("Tree-of-Frames: unit 2 of 2")


def test_a_tree_past_the_last_seed_is_refused_and_the_other_tabs_have_no_tree(client, search_settings):
    # 3 roots over 2 units may draw 3·2 + 3 = 9 seeds
    with pytest.raises(AppError, match=r"may use 9 seeds, 4294967290 to 4294967298; the seed must be at most "
                                       r"4294967287"):
        generate_video(client, "tree-of-frames", 3, "clip-video", seed=2**32 - 6)
    image = ImageTab(search_settings, ModelRegistry(search_settings))
    with pytest.raises(gr.Error, match="unknown search strategy 'tree-of-frames'"):
        image.generate(PROMPT, None, 2, 4.0, 0, False, None, "tree-of-frames", 2, "clip", progress=no_progress)


def test_video_search_reports_progress_candidate_by_candidate(search_settings):
    tab = VideoTab(search_settings, ModelRegistry(search_settings))
    descs = []
    tab.generate("a blue square moves down", VIDEO_FRAMES, 2, 4.0, 0, None, "best-of-n", 2, "clip-video",
                 progress=lambda value, desc=None, **kw: descs.append(desc))
    assert list(dict.fromkeys(descs)) == ["loading the model", "loading the verifier", "candidate 1 of 2",
                                          "candidate 2 of 2", "scoring 2 candidates (clip-video)"]


# ---------------------------------------------------------------------------------------------------------
# Bad settings: a clear message, nothing changed, the app still serving


# (strategy, N, verifier or None for the tab's default), then the handler's message and the one a request gets:
# Gradio's own bounds and choices checks answer first where they apply.
BAD_SEARCHES = {
    "N of 1": (("best-of-n", 1, None), r"N \(candidates of the search\) must be between 2 and 4, got 1",
               "less than minimum value 2"),
    "N over the limit": (("best-of-n", 5, None), "must be between 2 and 4, got 5", "greater than maximum value 4"),
    "fractional N": (("tournament", 2.5, None), "must be a whole number, got 2.5", "must be a whole number"),
    "the oracle": (("best-of-n", 2, "oracle"), "unknown verifier 'oracle'", "oracle'? is not in the list of choices"),
    "an unknown strategy": (("beam", 2, None), "unknown search strategy 'beam'",
                            "beam'? .*is not in the list of choices"),
    "N out of range without search": (("none", 99, None), "must be between 2 and 4, got 99",
                                      "greater than maximum value 4"),
}


@pytest.mark.parametrize("case", list(BAD_SEARCHES))
def test_bad_search_settings_get_a_clear_message_from_the_handlers(search_settings, examples, case):
    (strategy, n, verifier), message, _ = BAD_SEARCHES[case]
    image = ImageTab(search_settings, ModelRegistry(search_settings))
    with pytest.raises(gr.Error, match=message):
        image.generate(PROMPT, None, 2, 4.0, 0, False, None, strategy, n, verifier or "clip", progress=no_progress)
    roll = PianoRollTab(search_settings, ModelRegistry(search_settings))
    _editor, _info, piece = roll.load_example(BACH)
    with pytest.raises(gr.Error, match=message):
        roll.generate(None, piece, MASK_FROM_RANGES, "2-2", "", 1, 1, 100, 2, 0, strategy, n, verifier or "busyness",
                      progress=no_progress)
    video = VideoTab(search_settings, ModelRegistry(search_settings))
    with pytest.raises(gr.Error, match=message):
        video.generate("a red circle moves up", VIDEO_FRAMES, 2, 4.0, 0, None, strategy, n, verifier or "clip-video",
                       progress=no_progress)


@pytest.mark.parametrize("case", list(BAD_SEARCHES))
def test_bad_image_search_settings_are_refused_and_change_nothing(client, case):
    (strategy, n, verifier), _, message = BAD_SEARCHES[case]
    generate_image(client, "best-of-n", 2, "clip", seed=1)
    before = scored(candidates(client, "/image_search_candidates"))
    with pytest.raises(AppError, match=message):
        generate_image(client, strategy, n, verifier or "clip")
    assert scored(candidates(client, "/image_search_candidates")) == before
    assert Image.open(generate_image(client)[1]).size == (IMAGE_SIZE, IMAGE_SIZE)  # still serving


@pytest.mark.parametrize("case", ["N of 1", "the oracle", "an unknown strategy"])
def test_bad_pianoroll_search_settings_are_refused_and_change_nothing(roll_client, case):
    (strategy, n, verifier), _, message = BAD_SEARCHES[case]
    generate_roll(roll_client, "best-of-n", 2, "in-key", seed=1)
    before = scored(candidates(roll_client, "/search_candidates"))
    with pytest.raises(AppError, match=message):
        generate_roll(roll_client, strategy, n, verifier or "busyness")
    assert scored(candidates(roll_client, "/search_candidates")) == before
    assert generate_roll(roll_client)[1].endswith(".mid")


@pytest.mark.parametrize("case", ["N over the limit", "the oracle"])
def test_bad_video_search_settings_are_refused_and_change_nothing(client, case):
    (strategy, n, verifier), _, message = BAD_SEARCHES[case]
    generate_video(client, "best-of-n", 2, "clip-video", seed=1)
    before = scored(candidates(client, "/video_search_candidates"))
    with pytest.raises(AppError, match=message):
        generate_video(client, strategy, n, verifier or "clip-video")
    assert scored(candidates(client, "/video_search_candidates")) == before
    assert read_frames(generate_video(client)[1]).shape == (VIDEO_FRAMES, VIDEO_SIZE, VIDEO_SIZE, 3)


def test_a_search_past_the_last_seed_is_refused(client):
    with pytest.raises(AppError, match=r"uses seeds 4294967294 to 4294967296; the seed must be at most 4294967293"):
        generate_image(client, "best-of-n", 3, "clip", seed=2**32 - 2)


def test_the_search_settings_read_the_environment(tmp_path):
    s = Settings.from_env({"LINGEN_APP_MAX_SEARCH_N": "8", "LINGEN_CLIP_MODEL": str(tmp_path / "clip")},
                          output_dir=tmp_path / "out")
    assert s.max_search_n == 8 and s.model_dir("clip") == tmp_path / "clip"
    assert Settings(output_dir=tmp_path / "out").model_dir("clip").name == "clip-shapes"
    with pytest.raises(ValueError, match="max_search_n must be >= 2"):
        Settings(output_dir=tmp_path / "out", max_search_n=1)


# ---------------------------------------------------------------------------------------------------------
# Video searches on drafts

DRAFT_CAPTION = re.compile(r"(✓ )?draft · seed (\d+) · score (-?[\d.e+-]+)$")


def test_video_best_of_n_on_drafts_judges_drafts_and_draws_the_best_in_full(client):
    """5 steps: drafts at round(0.2 · 5) = 1 step; N = 4 draws ⌈4/4⌉ = 1 draft again at the full 5 steps."""
    _shown, files, stats = client.predict("a red circle moves to the right", VIDEO_FRAMES, 5, 4.0, 40, None,
                                          "best-of-n", 4, "clip-video", True, api_name="/generate_video")
    gallery, line = client.predict(api_name="/video_search_candidates")
    rows = [DRAFT_CAPTION.match(item["caption"]) for item in gallery]
    assert all(rows) and [int(r[2]) for r in rows] == [40, 41, 42, 43], [item["caption"] for item in gallery]
    scores = [float(r[3]) for r in rows]
    chosen = [i for i, r in enumerate(rows) if r[1]]
    assert chosen == [int(np.argmax(scores))]
    seed = 40 + chosen[0]
    assert "**best-of-n** over 4 drafts of 1 step scored by **clip-video**" in line
    assert f"the best draft (seed {seed}) drawn in full" in line
    assert "9 network evaluations (nfe) in all, 1 per draft and 5 per full draw" in line  # 4 · 1 + 1 · 5
    # the result is the chosen seed's full clip, the one a plain request with that seed gives; the draft is not
    clip = read_frames(next(f for f in files if str(f).endswith(".gif")))
    plain = read_frames(client.predict("a red circle moves to the right", VIDEO_FRAMES, 5, 4.0, seed, None,
                                       api_name="/generate_video")[1][1])
    assert np.array_equal(clip, plain) and f"seed {seed}" in stats and "9 network evaluations" in stats


def test_video_best_of_n_on_drafts_keeps_the_verifiers_best_of_several_full_draws(search_settings, monkeypatch):
    import app.tabs.video as video_tab

    monkeypatch.setattr(video_tab, "drafts_drawn_in_full", lambda n: 2)
    tab = VideoTab(search_settings, ModelRegistry(search_settings))
    descs = []
    _shown, _files, stats, found = tab.generate("a blue square moves down", VIDEO_FRAMES, 5, 4.0, 7, None,
                                                "best-of-n", 4, "clip-video", True,
                                                progress=lambda value, desc=None, **kw: descs.append(desc))
    match = re.search(r"the best 2 drafts \(seeds (\d+), (\d+)\) drawn in full, the verifier's best kept: seed "
                      r"(\d+) · 14 network evaluations", found.line)  # 4 · 1 + 2 · 5
    assert match, found.line
    drawn = {int(match[1]), int(match[2])}
    assert int(match[3]) in drawn and drawn <= {7, 8, 9, 10}
    scores = {int(r[2]): float(r[3]) for r in (DRAFT_CAPTION.match(c) for _, c in found.gallery)}
    assert drawn == set(sorted(scores, key=lambda s: (-scores[s], s))[:2])  # the two best drafts
    seen = list(dict.fromkeys(descs))
    assert seen[:3] == ["loading the model", "loading the verifier", "draft 1 of 4"]
    assert "scoring 4 drafts (clip-video)" in seen and seen[-1] == "drawing the best 2 drafts in full"


def test_video_tournament_on_drafts_draws_its_winner_in_full(client):
    _shown, _files, stats = client.predict("a blue square moves down", VIDEO_FRAMES, 5, 4.0, 3, None, "tournament", 3,
                                           "clip-video", True, api_name="/generate_video")
    _gallery, line = client.predict(api_name="/video_search_candidates")
    match = re.search(r"the winning draft \(seed (\d+)\) drawn in full · 8 network evaluations", line)  # 3·1 + 5
    assert match and "**tournament** over 3 drafts of 1 step" in line, line
    assert f"seed {match[1]}" in stats


def test_video_tree_on_drafts_screens_first_units_and_draws_continuations_twice(client):
    _shown, _files, stats = client.predict("a red circle moves to the right", VIDEO_FRAMES, 5, 4.0, 4, None,
                                           "tree-of-frames", 2, "clip-video", True, api_name="/generate_video")
    gallery, line = client.predict(api_name="/video_search_candidates")
    assert "from 2 roots, each root's first unit the best of 6 drafts of 1 step, each continuation the best of 2 " \
           "draws, 2 units of 2 frames" in line, line
    live = [int(k) for k in re.search(r"branches alive after each unit ([\d →]+);", line)[1].split(" → ")]
    # first units: 6 drafts at 1 step + the best drawn once at 5 steps per root; then 2 draws per live branch at
    # ceil(0.4 · 5) = 2 steps
    nfe = 2 * 6 * 1 + 2 * 5 + live[0] * 2 * 2
    assert f"{nfe} network evaluations (nfe)" in line and f"{nfe} network evaluations" in stats
    assert len(gallery) == live[-1]


def test_drafts_are_ignored_without_search_and_refused_for_a_one_step_clip(client):
    plain = client.predict("a red circle moves to the right", VIDEO_FRAMES, 2, 4.0, 9, None,
                           api_name="/generate_video")
    ignored = client.predict("a red circle moves to the right", VIDEO_FRAMES, 2, 4.0, 9, None, "none", 2,
                             "clip-video", True, api_name="/generate_video")
    assert np.array_equal(read_frames(plain[1][1]), read_frames(ignored[1][1]))
    with pytest.raises(AppError, match="drafts need at least 2 steps"):
        client.predict("a red circle moves to the right", VIDEO_FRAMES, 1, 4.0, 9, None, "best-of-n", 2,
                       "clip-video", True, api_name="/generate_video")
    after = client.predict("a red circle moves to the right", VIDEO_FRAMES, 2, 4.0, 9, None,
                           api_name="/generate_video")  # still serving
    assert np.array_equal(read_frames(plain[1][1]), read_frames(after[1][1]))
