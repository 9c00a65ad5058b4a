"""`lingen generate` with a text-to-video model: clips as MP4 + GIF with a manifest, continuation of given frames,
and bad input refused in one line before anything is written. The model is a tiny random-weight Diffusion Mamba
(4 frames of 16×16 by default), so these tests check files and behaviour, not what the clips show."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import genmodels.cli as cli
from genmodels.pipelines.video_io import read_frames, write_gif, write_mp4

SIZE = 16  # DiffusionMamba.tiny_config(): 16×16 frames, patch 4
FRAMES = 4  # its default clip length
MP4_SCALE = 8  # the CLI's default --mp4-scale


@pytest.fixture(scope="module")
def video_model(tmp_path_factory) -> Path:
    import torch

    from genmodels.diffusion.flow import make_flow_scheduler
    from genmodels.dim import DiffusionMamba
    from genmodels.pipelines.text_to_video import TextToVideoPipeline
    from genmodels.text import CLIPTextEncoder

    torch.manual_seed(0)
    pipe = TextToVideoPipeline(transformer=DiffusionMamba(**DiffusionMamba.tiny_config()),
                               scheduler=make_flow_scheduler("dpmsolver++"),
                               text_encoder=CLIPTextEncoder(**CLIPTextEncoder.tiny_config()))
    folder = tmp_path_factory.mktemp("t2v") / "model"
    pipe.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def image_model(tmp_path_factory) -> Path:
    import torch

    from genmodels.diffusion.flow import make_flow_scheduler
    from genmodels.pipelines.text_to_image import TextToImagePipeline
    from genmodels.sana import SanaDiT
    from genmodels.text import CLIPTextEncoder

    torch.manual_seed(0)
    pipe = TextToImagePipeline(transformer=SanaDiT(**SanaDiT.tiny_config()),
                               scheduler=make_flow_scheduler("dpmsolver++"),
                               text_encoder=CLIPTextEncoder(**CLIPTextEncoder.tiny_config()))
    folder = tmp_path_factory.mktemp("t2i") / "model"
    pipe.save_pretrained(folder)
    return folder


def run(*argv) -> int:
    """``cli.main`` in-process; argparse's own usage errors (SystemExit) are returned as their exit code."""
    try:
        return cli.main([str(a) for a in argv])
    except SystemExit as exc:
        return exc.code


def manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def prompt_args(*prompts: str) -> list[str]:
    return [x for p in prompts for x in ("--prompt", p)]


def given_frames(k: int, size: int = SIZE, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (k, size, size, 3), dtype=np.uint8)


def save_folder(frames: np.ndarray, folder: Path) -> Path:
    folder.mkdir()
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"frame{i:02d}.png")
    return folder


# ---------------------------------------------------------------------------------------------------------
# Good inputs


def test_writes_an_mp4_and_a_gif_per_prompt_in_order_with_a_manifest(video_model, tmp_path):
    out = tmp_path / "out"
    prompts = ["a red circle moves right", "a blue square moves up"]
    assert run("generate", "--model", video_model, *prompt_args(*prompts), "--frames", 5, "--seed", 7,
               "--steps", 2, "--guidance", 2.5, "--fps", 6, "--out", out) == 0
    assert sorted(p.name for p in out.iterdir()) == ["0000.gif", "0000.mp4", "0001.gif", "0001.mp4",
                                                     "manifest.jsonl"]
    for i in range(2):
        gif = read_frames(out / f"{i:04d}.gif")
        mp4 = read_frames(out / f"{i:04d}.mp4")
        assert gif.shape == (5, SIZE, SIZE, 3)
        assert mp4.shape == (5, SIZE * MP4_SCALE, SIZE * MP4_SCALE, 3)
        shown = np.repeat(np.repeat(gif, MP4_SCALE, 1), MP4_SCALE, 2)
        assert np.abs(mp4.astype(int) - shown).mean() < 8  # the same clip, magnified (H.264 is lossy)
    rows = manifest(out)
    assert [r["index"] for r in rows] == [0, 1]
    assert [r["files"] for r in rows] == [["0000.mp4", "0000.gif"], ["0001.mp4", "0001.gif"]]
    assert [r["prompt"] for r in rows] == prompts and [r["seed"] for r in rows] == [7, 8]
    for r in rows:
        assert (r["frames"], r["given"], r["steps"], r["guidance"], r["fps"]) == (5, 0, 2, 2.5, 6)
        assert (r["model"], r["pipeline"], r["height"], r["width"]) == (str(video_model), "TextToVideoPipeline",
                                                                        SIZE, SIZE)
        assert r["seconds"] >= 0 and "first_frames" not in r
    assert (out / "0000.gif").read_bytes() != (out / "0001.gif").read_bytes()


def test_a_layout_model_lays_out_each_prompt_and_the_manifest_records_it(tmp_path):
    import torch

    from genmodels.data.moving_shapes import plan_layout
    from genmodels.diffusion.flow import make_flow_scheduler
    from genmodels.dim import DiffusionMamba
    from genmodels.pipelines.text_to_video import TextToVideoPipeline
    from genmodels.text import CLIPTextEncoder

    torch.manual_seed(0)
    config = {**DiffusionMamba.tiny_config(), "sample_size": 32, "num_frames": 8, "layout_conditioning": True}
    pipe = TextToVideoPipeline(transformer=DiffusionMamba(**config), scheduler=make_flow_scheduler("dpmsolver++"),
                               text_encoder=CLIPTextEncoder(**CLIPTextEncoder.tiny_config()),
                               layout_planner="moving_shapes")
    pipe.save_pretrained(tmp_path / "model")
    prompts = ["a red circle moves right and a blue square moves up", "something else entirely"]
    out = tmp_path / "out"
    assert run("generate", "--model", tmp_path / "model", *prompt_args(*prompts), "--seed", 3, "--steps", 1,
               "--out", out) == 0
    rows = manifest(out)
    assert rows[0]["layout"]["phrases"] == ["a red circle", "a blue square"]
    expected = plan_layout(prompts[0], np.random.default_rng(3)).boxes.astype(int).tolist()
    assert rows[0]["layout"]["boxes"] == expected and rows[1]["layout"] is None  # outside the world's grammar
    assert run("generate", "--model", tmp_path / "model", "--prompt", prompts[0], "--seed", 3, "--steps", 1,
               "--layout", "off", "--out", tmp_path / "off") == 0
    assert manifest(tmp_path / "off")[0]["layout"] is None


def test_the_model_decides_the_default_clip_length_and_mp4_scale_1_keeps_the_size(video_model, tmp_path):
    out = tmp_path / "out"
    assert run("generate", "--model", video_model, "--prompt", "a circle", "--steps", 1, "--mp4-scale", 1,
               "--out", out) == 0
    assert read_frames(out / "0000.gif").shape == (FRAMES, SIZE, SIZE, 3)
    assert read_frames(out / "0000.mp4").shape == (FRAMES, SIZE, SIZE, 3)
    assert manifest(out)[0]["mp4_scale"] == 1


def test_a_clip_depends_only_on_its_prompt_and_seed_whatever_the_batch_size(video_model, tmp_path):
    prompts = prompt_args("a red circle", "a blue square", "a red circle")
    for bs in (1, 3):
        assert run("generate", "--model", video_model, *prompts, "--seed", 3, "--steps", 2, "--batch-size", bs,
                   "--out", tmp_path / f"bs{bs}") == 0
    for i in range(3):
        assert np.array_equal(read_frames(tmp_path / "bs1" / f"{i:04d}.gif"),
                              read_frames(tmp_path / "bs3" / f"{i:04d}.gif"))
    # clip 2 repeats clip 0's prompt with seed S + 2, so it differs; clip 1 alone with seed S + 1 is clip 1
    assert not np.array_equal(read_frames(tmp_path / "bs1" / "0000.gif"), read_frames(tmp_path / "bs1" / "0002.gif"))
    assert run("generate", "--model", video_model, "--prompt", "a blue square", "--seed", 4, "--steps", 2,
               "--out", tmp_path / "single") == 0
    assert np.array_equal(read_frames(tmp_path / "single" / "0000.gif"), read_frames(tmp_path / "bs1" / "0001.gif"))


@pytest.mark.parametrize("source", ["folder", "gif", "mp4"])
def test_continuation_keeps_the_given_frames_exactly(video_model, tmp_path, source):
    frames = given_frames(2)
    if source == "folder":
        path = save_folder(frames, tmp_path / "given")
    elif source == "gif":
        path = write_gif(frames, tmp_path / "given.gif")
    else:
        path = write_mp4(frames, tmp_path / "given.mp4")
    expected = read_frames(path)  # what the CLI was given (an MP4 decodes lossily, a folder or GIF exactly)
    if source != "mp4":
        assert np.array_equal(expected, frames)
    out = tmp_path / "out"
    assert run("generate", "--model", video_model, *prompt_args("a red circle", "a green triangle"),
               "--first-frames", path, "--frames", 5, "--steps", 2, "--out", out) == 0
    for i in range(2):
        clip = read_frames(out / f"{i:04d}.gif")
        assert clip.shape == (5, SIZE, SIZE, 3)
        assert np.array_equal(clip[:2], expected)
        assert not np.array_equal(clip[2], expected[1])  # the rest is generated
    rows = manifest(out)
    assert all(r["given"] == 2 and r["frames"] == 5 and r["first_frames"] == str(path) for r in rows)


# ---------------------------------------------------------------------------------------------------------
# Errors: exit status 2, one line on stderr, nothing written


def test_the_missing_shipped_model_says_how_to_build_it(tmp_path, capsys, monkeypatch):
    assert cli.DEFAULT_VIDEO_MODEL.name == "moving-shapes-dim"
    assert cli.SHIPPED_MODELS[cli.DEFAULT_VIDEO_MODEL] == "make assets-video"
    shipped = tmp_path / "assets" / "moving-shapes-dim"  # the real one may be built by now: stand in for it
    monkeypatch.setattr(cli, "SHIPPED_MODELS", {shipped.resolve(): "make assets-video"})
    assert run("generate", "--model", shipped, "--prompt", "a circle", "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "not built yet" in err and "make assets-video" in err
    assert not (tmp_path / "out").exists()


def _mixed_sizes(tmp_path: Path) -> Path:
    folder = save_folder(given_frames(1), tmp_path / "mixed")
    Image.fromarray(given_frames(1, size=SIZE + 4)[0]).save(folder / "frame01.png")
    return folder


def _corrupt_gif(tmp_path: Path) -> Path:
    (tmp_path / "corrupt.gif").write_bytes(b"GIF89a\x10\x00\x10\x00 truncated")
    return tmp_path / "corrupt.gif"


def _empty_folder(tmp_path: Path) -> Path:
    (tmp_path / "empty").mkdir()
    return tmp_path / "empty"


@pytest.mark.parametrize("case, message", [
    ("mask", "--mask, --image take an image model"),
    ("image_verifier", "--verifier clip take an image model"),
    ("frames_on_image_model", "--frames take a text-to-video model"),
    ("first_frames_on_image_model", "--first-frames, --fps take a text-to-video model"),
    ("layout_on_image_model", "--layout take a text-to-video model"),
    ("corrupt_first_frames", "--first-frames: cannot read clip"),
    ("empty_first_frames_folder", "--first-frames: folder"),
    ("mixed_sizes", "differ in size"),
    ("missing_first_frames", "does not exist"),
    ("nothing_left_to_generate", "nothing left to generate"),
    ("first_frames_not_patch_multiple", "patch_size"),
    ("too_many_frames", "num_frames must be at most 64"),
    ("zero_frames", "num_frames must be a positive integer"),
    ("fps_zero", "--fps"),
    ("mp4_scale_zero", "--mp4-scale"),
    ("mp4_too_large", "--mp4-scale 64 would make"),
    ("seed_negative", "--seed"),
    ("empty_prompt", "empty"),
])
def test_errors_exit_2_in_one_line_and_write_nothing(video_model, image_model, tmp_path, capsys, case, message):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("previous run")
    model, extra, prompts = video_model, [], prompt_args("a red circle")
    if case == "mask":
        Image.new("L", (SIZE, SIZE), 255).save(tmp_path / "mask.png")
        Image.new("RGB", (SIZE, SIZE)).save(tmp_path / "image.png")
        extra = ["--mask", tmp_path / "mask.png", "--image", tmp_path / "image.png"]
    elif case == "image_verifier":
        extra = ["--search", "best-of-n", "--n", 2, "--verifier", "clip"]
    elif case == "frames_on_image_model":
        model, extra = image_model, ["--frames", 4]
    elif case == "first_frames_on_image_model":
        model, extra = image_model, ["--first-frames", save_folder(given_frames(1), tmp_path / "g"), "--fps", 4]
    elif case == "layout_on_image_model":
        model, extra = image_model, ["--layout", "off"]
    elif case == "corrupt_first_frames":
        extra = ["--first-frames", _corrupt_gif(tmp_path)]
    elif case == "empty_first_frames_folder":
        extra = ["--first-frames", _empty_folder(tmp_path)]
    elif case == "mixed_sizes":
        extra = ["--first-frames", _mixed_sizes(tmp_path)]
    elif case == "missing_first_frames":
        extra = ["--first-frames", tmp_path / "nowhere.mp4"]
    elif case == "nothing_left_to_generate":
        extra = ["--first-frames", save_folder(given_frames(FRAMES), tmp_path / "g")]
    elif case == "first_frames_not_patch_multiple":
        extra = ["--first-frames", save_folder(given_frames(1, size=SIZE + 2), tmp_path / "g")]
    elif case == "too_many_frames":
        extra = ["--frames", 65]
    elif case == "zero_frames":
        extra = ["--frames", 0]
    elif case == "fps_zero":
        extra = ["--fps", 0]
    elif case == "mp4_scale_zero":
        extra = ["--mp4-scale", 0]
    elif case == "mp4_too_large":
        extra = ["--mp4-scale", 64, "--height", 128, "--width", 128]
    elif case == "seed_negative":
        extra = ["--seed", -1]
    elif case == "empty_prompt":
        prompts += ["--prompt", " "]
    rc = run("generate", "--model", model, *prompts, *extra, "--steps", 1, "--out", out)
    err = capsys.readouterr().err
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lingen: error:") and message in lines[0], err
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
