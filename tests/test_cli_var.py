"""`lingen generate` with a VAR (next-scale prediction) model: a tiny random-weight VARPipeline folder (tiny
VARTransformer + tiny MultiScaleVQVAE + tiny CLIP text encoder, 32×32 pictures, scales 1, 2, 4)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import genmodels.cli as cli
from genmodels.var import defaults as var_defaults
from tests.search.helpers import save_tiny_open_clip, tiny_var_pipeline
from tests.test_cli_generate import manifest, run

SIZE = 32  # MultiScaleVQVAE.tiny_config()["sample_size"]
SCALES = 3  # VARTransformer.tiny_config()["patch_nums"] = (1, 2, 4): one transformer pass each


@pytest.fixture(scope="module")
def var_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("var") / "model"
    tiny_var_pipeline().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def sana_dir(tmp_path_factory) -> Path:
    from tests.search.helpers import tiny_text_to_image_pipeline

    folder = tmp_path_factory.mktemp("t2i") / "model"
    tiny_text_to_image_pipeline().save_pretrained(folder)
    return folder


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def test_var_writes_one_png_of_the_model_size_and_its_manifest(var_dir, tmp_path):
    out = tmp_path / "out"
    assert run("generate", "--model", var_dir, "--prompt", "a red circle", "--top-k", 5, "--top-p", 0.9,
               "--out", out) == 0
    assert sorted(p.name for p in out.iterdir()) == ["0000.png", "manifest.jsonl"]
    with Image.open(out / "0000.png") as img:
        assert img.size == (SIZE, SIZE) and img.mode == "RGB"
    (row,) = manifest(out)
    assert row["pipeline"] == "VARPipeline" and row["model"] == str(var_dir) and row["prompt"] == "a red circle"
    assert (row["index"], row["file"], row["seed"]) == (0, "0000.png", 0)
    assert (row["top_k"], row["top_p"], row["fastvar"]) == (5, 0.9, None)
    assert row["guidance"] == var_defaults.GUIDANCE == 4.0  # VAR's own default (chosen on validation captions)
    assert row["nfe"] == SCALES and "steps" not in row and row["seconds"] >= 0


def test_var_sampling_defaults_are_the_pipelines(var_dir, tmp_path):
    import inspect

    from genmodels.pipelines.var import VARPipeline

    assert run("generate", "--model", var_dir, "--prompt", "a red circle", "--out", tmp_path / "out") == 0
    (row,) = manifest(tmp_path / "out")
    params = inspect.signature(VARPipeline.__call__).parameters
    assert (row["guidance"], row["top_k"], row["top_p"]) == (params["guidance_scale"].default,
                                                             params["top_k"].default, params["top_p"].default)
    assert (row["top_k"], row["top_p"]) == (0, 0.95)


def test_var_same_seed_same_image_whatever_the_batch_size(var_dir, tmp_path):
    prompts = ["a red circle", "a blue square", "a red circle"]
    args = [x for p in prompts for x in ("--prompt", p)]
    for name, bs in (("a", 1), ("b", 3)):
        assert run("generate", "--model", var_dir, *args, "--seed", 3, "--top-k", 5, "--batch-size", bs,
                   "--out", tmp_path / name) == 0
    for i in range(3):
        assert (tmp_path / "a" / f"{i:04d}.png").read_bytes() == (tmp_path / "b" / f"{i:04d}.png").read_bytes()
    assert [r["seed"] for r in manifest(tmp_path / "a")] == [3, 4, 5]
    assert [r["nfe"] for r in manifest(tmp_path / "b")] == [SCALES] * 3
    # image 2 repeats image 0's prompt with seed S + 2, so it differs; image i alone with seed S + i is image i
    assert not np.array_equal(pixels(tmp_path / "a" / "0000.png"), pixels(tmp_path / "a" / "0002.png"))
    assert run("generate", "--model", var_dir, "--prompt", prompts[1], "--seed", 4, "--top-k", 5,
               "--out", tmp_path / "single") == 0
    assert (tmp_path / "single" / "0000.png").read_bytes() == (tmp_path / "a" / "0001.png").read_bytes()


@pytest.mark.parametrize("spec_args", [["--fastvar", "-1:0.5"], ["--fastvar=-1:0.5"]])
def test_var_fastvar_prunes_the_last_scale(var_dir, tmp_path, spec_args):
    out = tmp_path / "out"
    assert run("generate", "--model", var_dir, "--prompt", "a red circle", *spec_args, "--out", out) == 0
    (row,) = manifest(out)
    assert row["fastvar"] == "-1:0.5" and row["nfe"] == SCALES
    with Image.open(out / "0000.png") as img:
        assert img.size == (SIZE, SIZE)


def test_var_fastvar_skip_leaves_out_the_last_scale(var_dir, tmp_path):
    out = tmp_path / "out"
    assert run("generate", "--model", var_dir, "--prompt", "a red circle", "--fastvar", "1:0.5;skip=1",
               "--out", out) == 0
    (row,) = manifest(out)
    assert row["nfe"] == SCALES - 1 and pixels(out / "0000.png").shape == (SIZE, SIZE, 3)


def test_var_inpainting_keeps_pixels_outside_the_mask(var_dir, tmp_path):
    source = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    Image.fromarray(source).save(tmp_path / "image.png")
    mask = np.zeros((SIZE, SIZE), dtype=np.uint8)
    mask[8:20, 4:28] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    out = tmp_path / "out"
    assert run("generate", "--model", var_dir, "--prompt", "a cat", "--prompt", "a dog", "--top-k", 5,
               "--mask", tmp_path / "mask.png", "--image", tmp_path / "image.png", "--out", out) == 0
    keep = mask == 0
    for i in range(2):
        result = pixels(out / f"{i:04d}.png")
        assert result.shape == source.shape
        assert np.array_equal(result[keep], source[keep])
        assert not np.array_equal(result[~keep], source[~keep])  # the masked region was generated
    rows = manifest(out)
    assert rows[0]["mask"] == str(tmp_path / "mask.png") and rows[0]["image"] == str(tmp_path / "image.png")


def test_var_best_of_n_search_scores_candidates_that_are_plain_runs(var_dir, tmp_path):
    clip = save_tiny_open_clip(tmp_path / "clip")
    out = tmp_path / "out"
    assert run("generate", "--model", var_dir, "--prompt", "a red circle", "--seed", 10, "--top-k", 5,
               "--search", "best-of-n", "--n", 3, "--clip", clip, "--save-candidates", "--out", out) == 0
    (row,) = manifest(out)
    assert row["pipeline"] == "VARPipeline" and row["top_k"] == 5 and "steps" not in row
    assert row["candidate_seeds"] == [10, 11, 12] and row["chosen"] == int(np.argmax(row["scores"]))
    assert row["nfe_per_candidate"] == [SCALES] * 3 and row["nfe"] == 3 * SCALES
    assert (out / "score_vs_nfe.png").is_file()
    chosen = out / row["candidate_files"][row["chosen"]]
    assert (out / "0000.png").read_bytes() == chosen.read_bytes()
    # candidate j is the plain run with its seed
    assert run("generate", "--model", var_dir, "--prompt", "a red circle", "--seed", 11, "--top-k", 5,
               "--out", tmp_path / "plain") == 0
    assert np.array_equal(pixels(tmp_path / "plain" / "0000.png"), pixels(out / row["candidate_files"][1]))


def test_help_names_the_var_model_and_options(capsys):
    assert run("generate", "--help") == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "assets/shapes-var" in text and "--top-k" in text and "--top-p" in text and "--fastvar" in text


def test_the_missing_shipped_var_model_says_how_to_build_it(tmp_path, capsys, monkeypatch):
    assert cli.DEFAULT_VAR_MODEL.name == "shapes-var"
    shipped = tmp_path / "assets" / "shapes-var"  # the real one may be built by now: stand in for it
    assert cli.SHIPPED_MODELS[cli.DEFAULT_VAR_MODEL] == "make assets-var"
    monkeypatch.setattr(cli, "SHIPPED_MODELS", {shipped.resolve(): "make assets-var"})
    assert run("generate", "--model", shipped, "--prompt", "a circle", "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "not built yet" in err and "make assets-var" in err
    assert not (tmp_path / "out").exists()


# Errors: exit status 2, one line on stderr, nothing written.


@pytest.mark.parametrize("model, extra, message", [
    ("var", ["--fastvar", "garbage"], "--fastvar 'garbage' is not a FastVAR spec"),
    ("var", ["--fastvar", "-1:0.5;skip=x"], "--fastvar"),
    ("var", ["--fastvar", " "], "--fastvar is empty"),
    ("var", ["--fastvar", "-1:2"], "--fastvar '-1:2': FastVAR: prune ratio must be in [0, 1)"),
    ("var", ["--fastvar", "-9:0.5"], "out of range for 3 scales"),
    ("var", ["--fastvar", "0:0.5"], "the first scale cannot be pruned"),
    ("var", ["--top-p", 0], "--top-p must be in (0, 1]"),
    ("var", ["--top-p", 1.5], "--top-p must be in (0, 1]"),
    ("var", ["--top-p", "nan"], "--top-p must be in (0, 1]"),
    ("var", ["--top-k", -1], "--top-k must be at least 0"),
    ("var", ["--steps", 10], "takes no --steps"),
    ("var", ["--guidance", -1], "guidance_scale"),
    ("var", ["--height", 64, "--width", 64], "height must be 32"),
    ("sana", ["--top-k", 3], "--top-k take a VAR model"),
    ("sana", ["--top-p", 0.9, "--fastvar", "-1:0.5"], "--top-p, --fastvar take a VAR model"),
])
def test_var_errors_exit_2_and_write_nothing(var_dir, sana_dir, tmp_path, capsys, model, extra, message):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("previous run")
    folder = var_dir if model == "var" else sana_dir
    rc = run("generate", "--model", folder, "--prompt", "a red circle", *extra, "--out", out)
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("lingen: error:") and message in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_a_diffusion_model_still_defaults_to_20_steps_and_guidance_4(sana_dir, tmp_path):
    assert run("generate", "--model", sana_dir, "--prompt", "a red circle", "--out", tmp_path / "out") == 0
    (row,) = manifest(tmp_path / "out")
    assert (row["steps"], row["guidance"]) == (cli.DEFAULT_STEPS, cli.DEFAULT_GUIDANCE) == (20, 4.0)
    assert "top_k" not in row and row["nfe"] > 0
