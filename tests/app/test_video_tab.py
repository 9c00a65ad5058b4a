"""The Video tab's endpoint driven through gradio_client, as a remote user would: a prompt gives a clip (an MP4 shown
×8 and a GIF at the model's size), given first frames are kept exactly, and every bad input gives a readable
error while the server keeps serving.

Endpoint: /generate_video (prompt, frames, steps, guidance, seed, first_frames) → (MP4 shown, [MP4, GIF], stats).
The model is a tiny untrained Diffusion Mamba (16×16 frames, 4 by default), so these tests check behaviour, not
what the clips show.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import torch
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from app.main import about_markdown, build_app, launch_kwargs
from app.registry import ModelRegistry
from app.settings import Settings
from app.tabs.video import VideoTab, fit_frames
from genmodels.pipelines.video_io import read_frames, write_gif, write_mp4
from tests.app.conftest import free_port, make_client

SIZE = 16  # DiffusionMamba.tiny_config()
FRAMES = 4  # its default clip length
SCALE = 8  # Settings.video_scale
FAST = {"frames": FRAMES, "steps": 2, "guidance": 4.0, "seed": 0}


def no_progress(*args, **kwargs) -> None:
    pass


# ---------------------------------------------------------------------------------------------------------
# Fixtures: a tiny text-to-video pipeline and an app serving it


@pytest.fixture(scope="session")
def tiny_video_pipeline_dir(tmp_path_factory) -> Path:
    """An untrained tiny Diffusion Mamba + tiny CLIP text-to-video pipeline (4 frames of 16×16), saved like the
    real one."""
    from genmodels.diffusion.flow import make_flow_scheduler
    from genmodels.dim import DiffusionMamba
    from genmodels.pipelines.text_to_video import TextToVideoPipeline
    from genmodels.text import CLIPTextEncoder

    folder = tmp_path_factory.mktemp("video-tiny")
    torch.manual_seed(0)
    pipe = TextToVideoPipeline(transformer=DiffusionMamba(**DiffusionMamba.tiny_config()),
                               scheduler=make_flow_scheduler("dpmsolver++"),
                               text_encoder=CLIPTextEncoder(**CLIPTextEncoder.tiny_config()))
    pipe.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def video_app_settings(tiny_pipeline_dir, tiny_video_pipeline_dir, tmp_path_factory) -> Settings:
    return Settings(assets_dir=tmp_path_factory.mktemp("video-assets"),
                    model_dirs={"pianoroll": tiny_pipeline_dir, "video": tiny_video_pipeline_dir},
                    output_dir=tmp_path_factory.mktemp("video-app-out"), device="cpu", max_samples=4, min_steps=2,
                    max_frames=8, concurrency=1, max_queue=32)


@pytest.fixture(scope="session")
def video_server(video_app_settings):
    """URL of an app whose Video tab has the tiny model, served from this process on a free local port."""
    demo = build_app(video_app_settings)
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                            **launch_kwargs(video_app_settings))
    try:
        yield url
    finally:
        demo.close()


@pytest.fixture
def video_client(video_server, downloads):
    return make_client(video_server, downloads)


def generate(client, prompt="a red circle moves to the right", *, first_frames=None, **params):
    """(MP4 shown, GIF path, stats) from /generate_video; ``first_frames``: paths to upload."""
    p = {**FAST, **params}
    files = None if first_frames is None else [handle_file(str(f)) for f in first_frames]
    shown, downloads, stats = client.predict(prompt, p["frames"], p["steps"], p["guidance"], p["seed"], files,
                                             api_name="/generate_video")
    shown = shown["video"] if isinstance(shown, dict) else shown
    gifs = [f for f in downloads if str(f).endswith(".gif")]
    mp4s = [f for f in downloads if str(f).endswith(".mp4")]
    assert len(gifs) == 1 and len(mp4s) == 1, downloads
    return shown, gifs[0], stats


def given_frames(k: int, size: int = SIZE, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (k, size, size, 3), dtype=np.uint8)


def assert_still_serving(client) -> None:
    _shown, gif, _stats = generate(client)
    assert read_frames(gif).shape == (FRAMES, SIZE, SIZE, 3)


# ---------------------------------------------------------------------------------------------------------
# Good inputs


def test_api_lists_the_video_endpoint_next_to_the_others(video_client):
    names = set(video_client.view_api(return_format="dict", print_info=False)["named_endpoints"])
    assert {"/generate_video", "/generate", "/use_as_input"} <= names


def test_generate_plays_the_clip_magnified_and_offers_a_gif_at_the_model_size(video_client):
    shown, gif, stats = generate(video_client, frames=5, steps=3)
    clip = read_frames(gif)
    assert clip.shape == (5, SIZE, SIZE, 3)
    video = read_frames(shown)
    assert video.shape == (5, SIZE * SCALE, SIZE * SCALE, 3)
    assert Path(shown).read_bytes()[4:8] == b"ftyp"  # an MP4 container
    magnified = np.repeat(np.repeat(clip, SCALE, 1), SCALE, 2)
    assert np.abs(video.astype(int) - magnified).mean() < 8  # the same clip (H.264 is lossy)
    assert "5-frame 16×16 clip" in stats and "3 steps" in stats and "nfe" in stats and "seed 0" in stats


def test_same_seed_same_clip_other_seed_other_clip(video_client):
    first = read_frames(generate(video_client, seed=11)[1])
    again = read_frames(generate(video_client, seed=11)[1])
    other = read_frames(generate(video_client, seed=12)[1])
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_a_prompt_outside_the_moving_shapes_grammar_still_works_with_a_hint(video_client):
    _shown, gif, stats = generate(video_client, "a cat chasing a dog")
    assert read_frames(gif).shape[0] == FRAMES and "not a moving-shapes caption" in stats
    assert "not a moving-shapes caption" not in generate(video_client, "a blue square moves down")[2]


def test_continuing_an_uploaded_gif_keeps_its_frames_exactly(video_client, tmp_path):
    frames = given_frames(2)
    _shown, gif, stats = generate(video_client, frames=5, first_frames=[write_gif(frames, tmp_path / "given.gif")])
    clip = read_frames(gif)
    assert clip.shape == (5, SIZE, SIZE, 3)
    assert np.array_equal(clip[:2], frames)
    assert not np.array_equal(clip[2], frames[1])
    assert "continuing 2 given frames" in stats and "given frames were" not in stats


def test_several_images_are_frames_in_the_order_listed(video_client, tmp_path):
    frames = given_frames(3, seed=1)
    paths = []
    for i, name in enumerate(["b.png", "a.png", "c.png"]):
        Image.fromarray(frames[i]).save(tmp_path / name)
        paths.append(tmp_path / name)
    _shown, gif, _stats = generate(video_client, frames=5, first_frames=paths)
    assert np.array_equal(read_frames(gif)[:3], frames)


def test_a_downloaded_result_continues_pixel_for_pixel(video_client):
    """The magnified MP4 comes back by whole blocks (close: H.264 is lossy), the GIF exactly."""
    shown, gif, _stats = generate(video_client, frames=3, seed=5)
    first = read_frames(gif)
    _shown, gif2, stats = generate(video_client, frames=5, seed=6, first_frames=[gif])
    assert np.array_equal(read_frames(gif2)[:3], first)
    _shown, gif3, stats = generate(video_client, frames=5, seed=6, first_frames=[shown])
    assert np.abs(read_frames(gif3)[:3].astype(int) - first).mean() < 6
    assert f"scaled down from {SIZE * SCALE}×{SIZE * SCALE} to {SIZE}×{SIZE} by whole blocks" in stats


def test_frames_of_another_size_are_cropped_and_resized_with_a_note(video_client, tmp_path):
    frames = np.zeros((2, 30, 45, 3), np.uint8)
    frames[..., 2] = 200
    _shown, gif, stats = generate(video_client, frames=4, first_frames=[write_gif(frames, tmp_path / "wide.gif")])
    clip = read_frames(gif)
    assert clip.shape == (4, SIZE, SIZE, 3) and np.all(clip[:2] == (0, 0, 200))
    assert "The 45×30 given frames were cropped to their centred 30×30 square and resized from 30×30 to 16×16" in stats


# ---------------------------------------------------------------------------------------------------------
# Bad inputs: a readable error, then the same session still works


@pytest.mark.parametrize("prompt", ["", "   "])
def test_empty_prompt_is_refused_then_the_next_request_succeeds(video_client, prompt):
    with pytest.raises(AppError, match="the prompt is empty: describe the clip"):
        generate(video_client, prompt)
    assert_still_serving(video_client)


@pytest.mark.parametrize("params, message", [({"frames": 1}, r"(?i)frames|minimum value 2"),
                                             ({"frames": 9}, r"(?i)frames|maximum value 8"),
                                             ({"frames": 3.5}, "whole number"), ({"steps": 0}, r"(?i)steps|minimum"),
                                             ({"guidance": 16}, r"(?i)guidance|maximum"),
                                             ({"seed": -1}, r"(?i)seed|minimum")])
def test_bad_numbers_are_refused(video_client, params, message):
    with pytest.raises(AppError, match=message):
        generate(video_client, **params)
    assert_still_serving(video_client)


def test_as_many_given_frames_as_the_clip_has_is_refused(video_client, tmp_path):
    path = write_gif(given_frames(4), tmp_path / "four.gif")
    with pytest.raises(AppError, match="4 frames given for a 4-frame clip: nothing is left to generate"):
        generate(video_client, frames=4, first_frames=[path])
    assert_still_serving(video_client)


def test_corrupt_or_mismatched_uploads_are_refused(video_client, tmp_path):
    (tmp_path / "broken.gif").write_bytes(b"GIF89a\x10\x00\x10\x00 truncated")
    with pytest.raises(AppError, match=r"cannot read clip .*broken\.gif"):
        generate(video_client, first_frames=[tmp_path / "broken.gif"])
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    with pytest.raises(AppError, match=r"cannot read clip .*broken\.mp4"):
        generate(video_client, first_frames=[tmp_path / "broken.mp4"])
    Image.new("RGB", (16, 16)).save(tmp_path / "a.png")
    Image.new("RGB", (24, 24)).save(tmp_path / "b.png")
    with pytest.raises(AppError, match="differ in size"):
        generate(video_client, first_frames=[tmp_path / "a.png", tmp_path / "b.png"])
    mp4 = write_mp4(given_frames(3), tmp_path / "clip.mp4")
    with pytest.raises(AppError, match="is an animation"):
        generate(video_client, first_frames=[tmp_path / "a.png", mp4])
    assert_still_serving(video_client)


# ---------------------------------------------------------------------------------------------------------
# Without the model, and the pieces behind the endpoint


def test_without_the_model_the_app_builds_explains_and_generate_says_how_to_get_it(tmp_path):
    settings = Settings(assets_dir=tmp_path / "assets", output_dir=tmp_path / "out", device="cpu")
    registry = ModelRegistry(settings)
    build_app(settings)  # the whole app still builds
    assert settings.model_dir("video") == tmp_path / "assets" / "moving-shapes-dim"
    tab = VideoTab(settings, registry)
    assert "not installed" in tab.model_status() and "make assets-video" in tab.model_status()
    assert "moving-shapes-dim" in about_markdown(settings, registry) and "make assets-video" in about_markdown(
        settings, registry)
    with pytest.raises(gr.Error, match=r"not installed.*make assets-video.*LINGEN_VIDEO_MODEL"):
        tab.generate("a red circle moves up", 4, 2, 4.0, 0, None, progress=no_progress)
    with pytest.raises(gr.Error, match="the prompt is empty"):  # input is checked before the model is needed
        tab.generate("", 4, 2, 4.0, 0, None, progress=no_progress)


def test_the_setting_names_the_model_folder(tmp_path, tiny_video_pipeline_dir):
    settings = Settings.from_env({"LINGEN_VIDEO_MODEL": str(tiny_video_pipeline_dir)}, output_dir=tmp_path / "out")
    assert settings.model_dir("video") == tiny_video_pipeline_dir
    tab = VideoTab(settings, ModelRegistry(settings))
    assert tab.model_status() == f"Model `{tiny_video_pipeline_dir.name}`: 4-frame 16×16 clips by default."


def test_generate_reports_progress_over_the_sampler_steps(video_app_settings):
    tab = VideoTab(video_app_settings, ModelRegistry(video_app_settings))
    calls = []
    tab.generate("a red circle moves up", 4, 5, 4.0, 0, None,
                 progress=lambda value, desc=None, **kw: calls.append((value, desc)))
    assert calls[0] == (0.0, "loading the model")
    assert [value for value, desc in calls if desc == "generating"] == [(i, 5) for i in range(1, 6)]


def test_fit_frames_scales_whole_multiples_exactly_and_resizes_the_rest():
    frames = given_frames(2)
    same, note = fit_frames(frames, SIZE)
    assert np.array_equal(same, frames) and note == ""
    big = np.repeat(np.repeat(frames, 3, 1), 3, 2)
    down, note = fit_frames(big, SIZE)
    assert np.array_equal(down, frames) and "scaled down from 48×48 to 16×16 by whole blocks" in note
    up, note = fit_frames(frames[:, ::2, ::2], SIZE)
    assert np.array_equal(up, np.repeat(np.repeat(frames[:, ::2, ::2], 2, 1), 2, 2)) and "scaled up" in note
    odd, note = fit_frames(np.zeros((1, 20, 20, 3), np.uint8), SIZE)
    assert odd.shape == (1, SIZE, SIZE, 3) and "resized from 20×20 to 16×16" in note


def test_a_layout_model_names_the_planned_layout_in_the_statistics(tmp_path):
    from genmodels.diffusion.flow import make_flow_scheduler
    from genmodels.dim import DiffusionMamba
    from genmodels.pipelines.text_to_video import TextToVideoPipeline
    from genmodels.text import CLIPTextEncoder

    torch.manual_seed(0)
    config = {**DiffusionMamba.tiny_config(), "sample_size": 32, "num_frames": 8, "layout_conditioning": True}
    TextToVideoPipeline(transformer=DiffusionMamba(**config), scheduler=make_flow_scheduler("dpmsolver++"),
                        text_encoder=CLIPTextEncoder(**CLIPTextEncoder.tiny_config()),
                        layout_planner="moving_shapes").save_pretrained(tmp_path / "model")
    settings = Settings(assets_dir=tmp_path / "assets", model_dirs={"video": tmp_path / "model"},
                        output_dir=tmp_path / "out", device="cpu", min_steps=1, max_frames=8)
    tab = VideoTab(settings, ModelRegistry(settings))
    _, _, stats, _ = tab.generate("a red circle moves left", 8, 1, 4.0, 5, None, progress=no_progress)
    assert "Drawn along a planned layout: a red circle from (" in stats
    _, _, stats, _ = tab.generate("a dog runs", 8, 1, 4.0, 5, None, progress=no_progress)
    assert "planned layout" not in stats
