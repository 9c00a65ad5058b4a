"""`lingen generate`: text-to-image and inpainting from the command line, with a tiny random-weight pipeline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import genmodels.cli as cli
from genmodels.cli import main as cli_main

SIZE = 32  # the tiny SanaDiT's default image size


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
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
        return cli_main([str(a) for a in argv])
    except SystemExit as exc:
        return exc.code


def manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def test_writes_images_in_prompt_order_with_manifest(model_dir, tmp_path):
    out = tmp_path / "out"
    prompts = ["a red circle", "a blue square", "a green triangle"]
    rc = run("generate", "--model", model_dir, *[x for p in prompts for x in ("--prompt", p)], "--seed", 7,
             "--steps", 2, "--guidance", 2.5, "--out", out)
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["0000.png", "0001.png", "0002.png", "manifest.jsonl"]
    for i in range(3):
        with Image.open(out / f"{i:04d}.png") as img:
            assert img.size == (SIZE, SIZE) and img.mode == "RGB"
    rows = manifest(out)
    assert [r["index"] for r in rows] == [0, 1, 2]
    assert [r["file"] for r in rows] == ["0000.png", "0001.png", "0002.png"]
    assert [r["prompt"] for r in rows] == prompts
    assert [r["seed"] for r in rows] == [7, 8, 9]
    assert all(r["steps"] == 2 and r["guidance"] == 2.5 and r["model"] == str(model_dir) for r in rows)
    assert all("mask" not in r and r["seconds"] >= 0 for r in rows)
    # different seeds (and prompts) give different images
    assert (out / "0000.png").read_bytes() != (out / "0001.png").read_bytes()


def test_same_seed_same_bytes_whatever_the_batch_size(model_dir, tmp_path):
    prompts = ["a red circle", "a blue square", "a red circle"]
    args = [x for p in prompts for x in ("--prompt", p)]
    for bs in (1, 3):
        assert run("generate", "--model", model_dir, *args, "--seed", 3, "--steps", 2, "--batch-size", bs,
                   "--out", tmp_path / f"bs{bs}") == 0
    for i in range(3):
        assert (tmp_path / "bs1" / f"{i:04d}.png").read_bytes() == (tmp_path / "bs3" / f"{i:04d}.png").read_bytes()
    # image 2 repeats image 0's prompt but has seed S + 2, so it differs
    assert (tmp_path / "bs1" / "0000.png").read_bytes() != (tmp_path / "bs1" / "0002.png").read_bytes()
    # image i alone with seed S + i reproduces image i of the run
    assert run("generate", "--model", model_dir, "--prompt", prompts[1], "--seed", 4, "--steps", 2,
               "--out", tmp_path / "single") == 0
    assert (tmp_path / "single" / "0000.png").read_bytes() == (tmp_path / "bs1" / "0001.png").read_bytes()


def test_batched_pipeline_gets_one_generator_per_image(model_dir, tmp_path, monkeypatch):
    """A pipeline that accepts a list of generators is called with whole batches, one seeded generator each."""
    from genmodels.pipelines.text_to_image import TextToImageOutput, TextToImagePipeline

    calls = []

    class Batched(TextToImagePipeline):
        accepts_generator_list = True

        def __call__(self, prompt, generator=None, **kw):
            calls.append(len(prompt))
            images = [super(Batched, self).__call__(p, generator=g, **kw).images[0]
                      for p, g in zip(prompt, generator, strict=True)]
            return TextToImageOutput(images=images, nfe=0)

    monkeypatch.setattr(cli, "_pipeline_class", lambda folder: Batched)
    prompts = ["one", "two", "three"]
    args = [x for p in prompts for x in ("--prompt", p)]
    assert run("generate", "--model", model_dir, *args, "--steps", 2, "--batch-size", 2, "--out",
               tmp_path / "batched") == 0
    assert calls == [2, 1]
    monkeypatch.undo()
    assert run("generate", "--model", model_dir, *args, "--steps", 2, "--out", tmp_path / "plain") == 0
    for i in range(3):
        assert (tmp_path / "batched" / f"{i:04d}.png").read_bytes() == \
            (tmp_path / "plain" / f"{i:04d}.png").read_bytes()


def test_prompts_file_skips_blank_lines(model_dir, tmp_path):
    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text("a red circle\n\n   \na blue square  \n\n")
    out = tmp_path / "out"
    assert run("generate", "--model", model_dir, "--prompts", prompts_file, "--steps", 1, "--out", out) == 0
    assert [r["prompt"] for r in manifest(out)] == ["a red circle", "a blue square"]
    assert sorted(p.name for p in out.glob("*.png")) == ["0000.png", "0001.png"]


def test_inpainting_keeps_pixels_outside_the_mask(model_dir, tmp_path):
    rng = np.random.default_rng(0)
    source = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    Image.fromarray(source).save(tmp_path / "image.png")
    mask = np.zeros((SIZE, SIZE), dtype=np.uint8)
    mask[8:20, 4:28] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    out = tmp_path / "out"
    assert run("generate", "--model", model_dir, "--prompt", "a cat", "--prompt", "a dog", "--steps", 2,
               "--mask", tmp_path / "mask.png", "--image", tmp_path / "image.png", "--out", out) == 0
    keep = mask == 0
    for i in range(2):
        result = np.asarray(Image.open(out / f"{i:04d}.png").convert("RGB"))
        assert result.shape == source.shape
        assert np.array_equal(result[keep], source[keep])
        assert not np.array_equal(result[~keep], source[~keep])  # the masked region was generated
    rows = manifest(out)
    assert rows[0]["mask"] == str(tmp_path / "mask.png") and rows[0]["image"] == str(tmp_path / "image.png")


def test_console_script_entry_point(model_dir, tmp_path):
    exe = Path(sys.executable).with_name("lingen")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "genmodels.cli"]
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    done = subprocess.run([*cmd, "generate", "--model", str(model_dir), "--prompt", "a red circle", "--steps", "1",
                           "--out", str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert [r["file"] for r in manifest(out)] == ["0000.png"]
    bad = subprocess.run([*cmd, "generate", "--model", str(tmp_path / "nowhere"), "--prompt", "x", "--out",
                          str(tmp_path / "bad")], capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 2 and "error:" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "bad").exists()


# Errors: exit status 2, one line on stderr, nothing written.


def _pickled_model(model_dir: Path, tmp_path: Path) -> Path:
    import shutil

    folder = tmp_path / "evil"
    shutil.copytree(model_dir, folder)
    (folder / "transformer" / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04N.")
    return folder


def _mismatched_mask(tmp_path: Path) -> list:
    Image.new("RGB", (SIZE, SIZE)).save(tmp_path / "image.png")
    Image.new("L", (SIZE, SIZE // 2), 255).save(tmp_path / "mask.png")
    return ["--mask", tmp_path / "mask.png", "--image", tmp_path / "image.png"]


def _empty_prompts(tmp_path: Path) -> list:
    (tmp_path / "empty.txt").write_text("\n  \n")
    return ["--prompts", tmp_path / "empty.txt"]


def _unknown_class(model_dir: Path, tmp_path: Path) -> Path:
    import shutil

    folder = tmp_path / "other"
    shutil.copytree(model_dir, folder)
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "_class_name": "VideoPipeline"}))
    return folder


@pytest.mark.parametrize("case, message", [
    ("missing_folder", "not a pipeline folder"),
    ("pickle", "pickle"),
    ("unknown_class", "TextToImagePipeline"),
    ("empty_prompts_file", "no prompt"),
    ("missing_prompts_file", "cannot read prompts file"),
    ("blank_prompt", "empty"),
    ("mask_without_image", "both"),
    ("image_without_mask", "both"),
    ("mismatched_mask", "must match"),
    ("corrupt_image", "cannot read"),
    ("steps_zero", "--steps"),
    ("too_many_steps", "num_inference_steps"),
    ("guidance_negative", "guidance_scale"),
    ("batch_zero", "--batch-size"),
    ("height_only", "--height"),
    ("size_not_multiple", "patch_size"),
])
def test_errors_exit_2_and_write_nothing(model_dir, tmp_path, capsys, case, message):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("previous run")
    model, extra = model_dir, []
    prompt = ["--prompt", "a red circle"]
    if case == "missing_folder":
        model = tmp_path / "nowhere"
    elif case == "pickle":
        model = _pickled_model(model_dir, tmp_path)
    elif case == "unknown_class":
        model = _unknown_class(model_dir, tmp_path)
    elif case == "empty_prompts_file":
        prompt = _empty_prompts(tmp_path)
    elif case == "missing_prompts_file":
        prompt = ["--prompts", tmp_path / "missing.txt"]
    elif case == "blank_prompt":
        prompt += ["--prompt", "  "]
    elif case == "mask_without_image":
        Image.new("L", (SIZE, SIZE), 255).save(tmp_path / "mask.png")
        extra = ["--mask", tmp_path / "mask.png"]
    elif case == "image_without_mask":
        Image.new("RGB", (SIZE, SIZE)).save(tmp_path / "image.png")
        extra = ["--image", tmp_path / "image.png"]
    elif case == "mismatched_mask":
        extra = _mismatched_mask(tmp_path)
    elif case == "corrupt_image":
        Image.new("L", (SIZE, SIZE), 255).save(tmp_path / "mask.png")
        (tmp_path / "image.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
        extra = ["--mask", tmp_path / "mask.png", "--image", tmp_path / "image.png"]
    elif case == "steps_zero":
        extra = ["--steps", 0]
    elif case == "too_many_steps":
        extra = ["--steps", 100000]
    elif case == "guidance_negative":
        extra = ["--guidance", -1]
    elif case == "batch_zero":
        extra = ["--batch-size", 0]
    elif case == "height_only":
        extra = ["--height", 64]
    elif case == "size_not_multiple":
        extra = ["--height", 33, "--width", 32]
    rc = run("generate", "--model", model, *prompt, *extra, "--steps" if "--steps" not in extra else "--seed", 1,
             "--out", out)
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("lingen: error:") and message in err and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_missing_out_dir_is_not_created_on_error(tmp_path, capsys):
    out = tmp_path / "out"
    assert run("generate", "--model", tmp_path / "nowhere", "--prompt", "x", "--out", out) == 2
    assert not out.exists()


def test_bad_numbers_and_missing_prompt_are_usage_errors(model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert run("generate", "--model", model_dir, "--prompt", "x", "--steps", "two", "--out", out) == 2
    assert run("generate", "--model", model_dir, "--out", out) == 2
    assert run("generate", "--model", model_dir, "--prompt", "x", "--prompts", "f.txt", "--out", out) == 2
    assert not out.exists()


def test_manifest_records_the_planned_caption_of_a_planning_model(model_dir, tmp_path):
    import shutil

    planning = tmp_path / "planning"
    shutil.copytree(model_dir, planning)
    index = json.loads((planning / "model_index.json").read_text())
    (planning / "model_index.json").write_text(json.dumps({**index, "prompt_planner": "shapes_layout"}))
    out = tmp_path / "out"
    assert run("generate", "--model", planning, "--prompt", "a red circle", "--prompt", "a red dragon", "--seed", 4,
               "--steps", 1, "--out", out) == 0
    rows = manifest(out)
    assert rows[0]["prompt"] == "a red circle" and "red circle" in rows[0]["planned_prompt"]
    assert rows[0]["planned_prompt"] != "a red circle" and "planned_prompt" not in rows[1]  # outside the grammar
