"""The Image tab with a VAR (next-scale prediction) model picked in its Model dropdown: the handler makes a picture
(Steps does not apply; Top-k and Top-p do), inpaints keeping every unpainted pixel, searches, and a missing VAR
folder gives a clear message instead of an exception. One test goes through the served endpoint.

The VAR model is a tiny untrained VARPipeline (tiny VARTransformer + tiny MultiScaleVQVAE + tiny CLIP text encoder,
32×32 pictures, scales 1, 2, 4), so these tests check behaviour, not picture quality.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from app.main import build_app, launch_kwargs
from app.registry import ModelRegistry
from app.settings import Settings
from app.tabs.image import DEFAULT_GUIDANCE, DEFAULT_VAR_GUIDANCE, ImageTab, model_choices
from tests.app.conftest import free_port, make_client
from tests.app.test_browser import page, screenshot_if_failed  # noqa: F401  (page: a headless Chromium fixture)
from tests.app.test_image_tab import tiny_image_pipeline_dir  # noqa: F401  (fixture)
from tests.search.helpers import save_tiny_open_clip

SIZE = 32  # MultiScaleVQVAE.tiny_config()["sample_size"]
SCALES = 3  # VARTransformer.tiny_config()["patch_nums"] = (1, 2, 4)
PROMPT = "a red circle to the left of a blue square"


def no_progress(*args, **kwargs) -> None:
    pass


@pytest.fixture(scope="session")
def tiny_var_pipeline_dir(tmp_path_factory) -> Path:
    """An untrained tiny VARPipeline (32×32 pictures), saved like the real one."""
    from tests.search.helpers import tiny_var_pipeline

    folder = tmp_path_factory.mktemp("var-tiny") / "shapes-var"
    tiny_var_pipeline().save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def var_settings(tiny_pipeline_dir, tiny_image_pipeline_dir, tiny_var_pipeline_dir,  # noqa: F811
                 tmp_path_factory) -> Settings:
    """The tiny SANA model as the default, the tiny VAR model as the VAR one, a tiny CLIP for the search; the
    assets folder holds one more VAR folder, which the dropdown offers too."""
    assets = tmp_path_factory.mktemp("var-assets")
    shutil.copytree(tiny_var_pipeline_dir, assets / "other-var")
    clip = save_tiny_open_clip(tmp_path_factory.mktemp("var-clip") / "clip")
    models = {"pianoroll": tiny_pipeline_dir, "image": tiny_image_pipeline_dir, "var": tiny_var_pipeline_dir,
              "clip": clip}
    return Settings(assets_dir=assets, model_dirs=models, output_dir=tmp_path_factory.mktemp("var-app-out"),
                    device="cpu", max_samples=4, min_steps=2, max_search_n=4, search_batch=2, concurrency=1,
                    max_queue=32)


@pytest.fixture
def tab(var_settings) -> ImageTab:
    return ImageTab(var_settings, ModelRegistry(var_settings))


def var_generate(tab: ImageTab, folder: Path, *, steps=20, guidance=3.0, seed=0, inpaint=False, editor=None,
                 strategy="none", n=2, top_k=5, top_p=0.9, progress=no_progress):
    return tab.generate(PROMPT, str(folder), steps, guidance, seed, inpaint, editor, strategy, n, "clip", top_k,
                        top_p, progress=progress)


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


# ---------------------------------------------------------------------------------------------------------
# The model choice


def test_the_dropdown_offers_the_var_models_after_the_sana_ones(var_settings, tiny_image_pipeline_dir,  # noqa: F811
                                                                 tiny_var_pipeline_dir):
    assert model_choices(var_settings) == [
        (f"{tiny_image_pipeline_dir.name} (default)", str(tiny_image_pipeline_dir)),
        ("shapes-var (VAR)", str(tiny_var_pipeline_dir)),
        ("other-var (VAR)", str(Path(var_settings.assets_dir) / "other-var"))]
    status = ImageTab(var_settings, ModelRegistry(var_settings)).model_status()
    assert f"VAR model `shapes-var`: {SIZE}×{SIZE} pictures" in status


def test_choosing_var_hides_steps_and_shows_top_k_and_top_p(tab, tiny_var_pipeline_dir,
                                                            tiny_image_pipeline_dir):  # noqa: F811
    steps, top_k, top_p, note, guidance = tab.model_changed(str(tiny_var_pipeline_dir))
    assert steps["visible"] is False and top_k["visible"] is True and top_p["visible"] is True
    assert note["visible"] is True and guidance["value"] == DEFAULT_VAR_GUIDANCE
    steps, top_k, top_p, note, guidance = tab.model_changed(str(tiny_image_pipeline_dir))
    assert steps["visible"] is True and top_k["visible"] is False and top_p["visible"] is False
    assert note["visible"] is False and guidance["value"] == DEFAULT_GUIDANCE
    assert all("visible" not in update for update in tab.model_changed("/elsewhere"))  # Generate explains it


# ---------------------------------------------------------------------------------------------------------
# Generating with VAR


def test_var_generates_a_picture_over_its_scales_and_ignores_steps(tab, tiny_var_pipeline_dir):
    calls = []
    shown, file, stats, result, searched = var_generate(
        tab, tiny_var_pipeline_dir, steps=0, seed=7,  # Steps does not apply to VAR: even 0 is ignored
        progress=lambda value, desc=None, **kw: calls.append((value, desc, kw.get("unit"))))
    assert Image.open(file).size == (SIZE, SIZE) and searched is None
    assert shown.size == (SIZE * 4, SIZE * 4) and result.shape == (SIZE, SIZE, 3)
    assert np.array_equal(pixels(file), result)
    assert f"VAR, {SCALES} scales · top-k 5 · top-p 0.9 · {SCALES} network evaluations (nfe)" in stats
    assert "steps" not in stats and "guidance 3 · seed 7" in stats
    assert calls[0][:2] == (0.0, "loading the model")
    assert [value for value, desc, unit in calls if desc == "generating"] == [(i, SCALES) for i in (1, 2, 3)]
    assert {unit for _value, desc, unit in calls if desc == "generating"} == {"scales"}


def test_var_same_seed_same_picture_other_seed_other_picture(tab, tiny_var_pipeline_dir):
    first = var_generate(tab, tiny_var_pipeline_dir, seed=11)[3]
    assert np.array_equal(first, var_generate(tab, tiny_var_pipeline_dir, seed=11)[3])
    assert not np.array_equal(first, var_generate(tab, tiny_var_pipeline_dir, seed=12)[3])
    off = var_generate(tab, tiny_var_pipeline_dir, seed=11, top_k=0, top_p=1.0)[2]
    assert "top-k off · top-p off" in off


def test_var_inpainting_keeps_every_unpainted_pixel(tab, tiny_var_pipeline_dir):
    picture = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    layer = np.zeros((SIZE, SIZE, 4), np.uint8)
    layer[4:16, 8:20] = (255, 255, 255, 153)  # the brush is half-transparent white
    editor = {"background": Image.fromarray(picture), "layers": [Image.fromarray(layer)]}
    _shown, file, stats, _result, _ = var_generate(tab, tiny_var_pipeline_dir, inpaint=True, editor=editor)
    out = pixels(file)
    mask = np.zeros((SIZE, SIZE), bool)
    mask[4:16, 8:20] = True
    assert np.array_equal(out[~mask], picture[~mask])
    assert not np.array_equal(out[mask], picture[mask])
    assert f"inpainted {mask.sum()} of {SIZE * SIZE} pixels" in stats.lower()


def test_var_search_scores_candidates_that_are_plain_pictures(tab, tiny_var_pipeline_dir):
    _shown, file, stats, result, searched = var_generate(tab, tiny_var_pipeline_dir, strategy="best-of-n", n=3,
                                                         seed=20)
    assert len(searched.gallery) == 3 and Image.open(file).size == (SIZE, SIZE)
    assert f"{3 * SCALES} network evaluations (nfe) in all, {SCALES} per candidate" in searched.line
    assert f"VAR, {SCALES} scales" in stats
    chosen = [i for i, (_pic, caption) in enumerate(searched.gallery) if caption.startswith("✓")]
    assert len(chosen) == 1
    plain = var_generate(tab, tiny_var_pipeline_dir, seed=20 + chosen[0])[3]
    assert np.array_equal(plain, result)


@pytest.mark.parametrize("params, message", [({"top_p": 0}, "top-p must be above 0"),
                                             ({"top_p": 1.5}, "top-p must be between 0 and 1"),
                                             ({"top_k": -1}, "top-k must be between 0"),
                                             ({"top_k": 2.5}, "top-k must be a whole number"),
                                             ({"guidance": 16}, "guidance must be between 0 and 15")])
def test_bad_var_settings_are_refused_clearly(tab, tiny_var_pipeline_dir, params, message):
    with pytest.raises(gr.Error, match=message):
        var_generate(tab, tiny_var_pipeline_dir, **params)


def test_a_sana_model_ignores_top_k_and_top_p_and_still_takes_steps(tab):
    _shown, _file, stats, _result, _ = tab.generate(PROMPT, None, 2, 4.0, 0, False, None, "none", 2, "clip", -3,
                                                    0, progress=no_progress)
    assert "2 steps" in stats and "VAR" not in stats


# ---------------------------------------------------------------------------------------------------------
# A missing VAR model


def test_a_missing_var_model_is_explained_and_the_sana_model_still_works(var_settings, tmp_path):
    settings = replace(var_settings, assets_dir=tmp_path / "assets",
                       model_dirs={**var_settings.model_dirs, "var": tmp_path / "no-var"})
    build_app(settings)  # the whole app still builds
    tab = ImageTab(settings, ModelRegistry(settings))
    assert ("no-var (VAR, not installed)", str(tmp_path / "no-var")) in tab.choices
    status = tab.model_status()
    assert "The VAR model is not installed" in status and "make assets-var" in status and "LINGEN_VAR_MODEL" in status
    with pytest.raises(gr.Error, match=r"VAR text-to-image model is not installed: no model folder at .*no-var.*"
                                       r"make assets-var.*LINGEN_VAR_MODEL"):
        var_generate(tab, tmp_path / "no-var")
    assert tab.generate(PROMPT, None, 2, 4.0, 0, False, None, progress=no_progress)[3].shape == (SIZE, SIZE, 3)


def test_the_var_setting_reads_the_environment(tmp_path, tiny_var_pipeline_dir):
    settings = Settings.from_env({"LINGEN_VAR_MODEL": str(tiny_var_pipeline_dir)}, output_dir=tmp_path / "out")
    assert settings.model_dir("var") == tiny_var_pipeline_dir
    assert Settings(output_dir=tmp_path / "o").model_dir("var").name == "shapes-var"


def test_the_registry_loads_a_var_pipeline_and_refuses_it_as_a_sana_one(var_settings, tiny_var_pipeline_dir):
    registry = ModelRegistry(var_settings)
    assert type(registry.get("var")).__name__ == "VARPipeline"
    with pytest.raises(ValueError, match="holds a VARPipeline pipeline, not a TextToImagePipeline"):
        registry.get("image", tiny_var_pipeline_dir)


# ---------------------------------------------------------------------------------------------------------
# Through the served endpoint and in the browser


@pytest.fixture(scope="module")
def var_server(var_settings):
    """URL of an app whose Image tab offers the tiny SANA and VAR models, served from this process."""
    demo = build_app(var_settings)
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                            **launch_kwargs(var_settings))
    try:
        yield url
    finally:
        demo.close()


def test_the_generate_image_endpoint_takes_the_var_model_with_top_k_and_top_p(var_server, tiny_var_pipeline_dir,
                                                                             downloads):
    client = make_client(var_server, downloads)
    _shown, file, stats = client.predict(PROMPT, str(tiny_var_pipeline_dir), 20, 3.0, 0, False, None, "none", 2,
                                         "clip", 4, 0.8, api_name="/generate_image")
    assert Image.open(file).size == (SIZE, SIZE)
    assert f"VAR, {SCALES} scales · top-k 4 · top-p 0.8" in stats


def test_choosing_var_in_the_browser_swaps_steps_for_top_k_and_top_p(var_server, page, request):  # noqa: F811
    try:
        page.goto(var_server)
        page.get_by_role("tab", name="Image").click()
        steps = page.get_by_label("number input for Steps (fewer = faster, rougher)")
        steps.wait_for()
        assert not page.locator("#image-top-k").is_visible()
        page.locator("#image-model input").click()
        page.get_by_role("option", name="shapes-var (VAR)").click()
        page.locator("#image-top-k").wait_for()
        page.locator("#image-var-note").wait_for()
        steps.wait_for(state="hidden")
        top_k = page.locator("#image-top-k input")
        top_k.fill("5")
        top_k.press("Enter")
        page.locator("#image-prompt textarea").fill(PROMPT)
        page.locator("#image-generate").click()
        # the slider starts at VAR's default top-p (0.95), the guidance at VAR's default
        page.locator("#image-stats", has_text=f"VAR, {SCALES} scales · top-k 5 · top-p 0.95").wait_for()
        page.locator("#image-stats", has_text=f"guidance {DEFAULT_VAR_GUIDANCE:g} ").wait_for()
    finally:
        screenshot_if_failed(page, request, "app-image-var")
