"""The Image tab's endpoints driven through gradio_client, as a remote user would: a prompt gives a picture (shown
×4, downloadable at the model's size), inpainting keeps every unpainted pixel, and every bad input gives a
readable error while the server keeps serving.

Endpoints: /generate_image (prompt, model, steps, guidance, seed, inpaint, editor) and /use_image_result. The
model is a tiny untrained SanaDiT (32×32 pictures), so these tests check behaviour, not picture quality.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import torch
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from app.main import build_app, launch_kwargs
from app.registry import ModelRegistry
from app.settings import Settings
from app.tabs.image import ImageTab, inpaint_input, model_choices, planned_note
from tests.app.conftest import free_port, make_client

SIZE = 32  # SanaDiT.tiny_config()
SCALE = 4  # Settings.image_scale
FAST = {"steps": 3, "guidance": 4.0, "seed": 0}


def no_progress(*args, **kwargs) -> None:
    pass


# ---------------------------------------------------------------------------------------------------------
# Fixtures: a tiny text-to-image pipeline and an app serving it (the piano-roll tab keeps its tiny model)


@pytest.fixture(scope="session")
def tiny_image_pipeline_dir(tmp_path_factory) -> Path:
    """An untrained tiny SanaDiT + tiny CLIP text-to-image pipeline (32×32 pictures), saved like the real one."""
    from genmodels.diffusion.flow import make_flow_scheduler
    from genmodels.pipelines.text_to_image import TextToImagePipeline
    from genmodels.sana import SanaDiT
    from genmodels.text import CLIPTextEncoder

    folder = tmp_path_factory.mktemp("image-tiny")
    torch.manual_seed(0)
    pipe = TextToImagePipeline(transformer=SanaDiT(**SanaDiT.tiny_config()),
                               scheduler=make_flow_scheduler("dpmsolver++"),
                               text_encoder=CLIPTextEncoder(**CLIPTextEncoder.tiny_config()))
    pipe.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def image_app_settings(tiny_pipeline_dir, tiny_image_pipeline_dir, tmp_path_factory) -> Settings:
    """The tiny image model as the default; the assets folder holds one more text-to-image folder, broken (its
    transformer has a config but no weights), which the Model dropdown offers too."""
    assets = tmp_path_factory.mktemp("image-assets")
    broken = assets / "broken-sana"
    shutil.copytree(tiny_image_pipeline_dir, broken)
    for weights in broken.rglob("*.safetensors"):
        weights.unlink()
    return Settings(assets_dir=assets, model_dirs={"pianoroll": tiny_pipeline_dir, "image": tiny_image_pipeline_dir},
                    output_dir=tmp_path_factory.mktemp("image-app-out"), device="cpu", max_samples=4, min_steps=2,
                    concurrency=1, max_queue=32)


@pytest.fixture(scope="session")
def image_server(image_app_settings):
    """URL of an app whose Image tab has the tiny model, served from this process on a free local port."""
    demo = build_app(image_app_settings)
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                            **launch_kwargs(image_app_settings))
    try:
        yield url
    finally:
        demo.close()


@pytest.fixture
def image_client(image_server, downloads):
    return make_client(image_server, downloads)


def generate(client, prompt="a red circle to the left of a blue square", *, model=None, inpaint=False, editor=None,
             **params):
    p = {**FAST, **params}
    model = str(model) if model is not None else None
    return client.predict(prompt, model, p["steps"], p["guidance"], p["seed"], inpaint, editor,
                          api_name="/generate_image")


def pixels(path: str | Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def editor_payload(background: str | Path, layers: list[str | Path]) -> dict:
    return {"background": handle_file(str(background)), "layers": [handle_file(str(p)) for p in layers],
            "composite": handle_file(str(background)), "id": None}


def layer_png(path: Path, size: int, box: tuple[int, int, int, int], alpha: int = 255) -> Path:
    """A transparent RGBA layer ``size`` × ``size`` with white paint over the box (x0, y0, x1, y1)."""
    rgba = np.zeros((size, size, 4), np.uint8)
    x0, y0, x1, y1 = box
    rgba[y0:y1, x0:x1] = (255, 255, 255, alpha)
    Image.fromarray(rgba).save(path)
    return path


def assert_still_serving(client) -> None:
    _shown, file, _stats = generate(client)
    assert Image.open(file).size == (SIZE, SIZE)


# ---------------------------------------------------------------------------------------------------------
# Good inputs


def test_api_lists_the_image_endpoints_next_to_the_piano_roll_ones(image_client):
    names = set(image_client.view_api(return_format="dict", print_info=False)["named_endpoints"])
    assert {"/generate_image", "/use_image_result", "/generate", "/use_as_input"} <= names


def test_generate_returns_the_picture_magnified_and_at_the_model_size(image_client):
    shown, file, stats = generate(image_client, steps=3)
    assert Image.open(file).format == "PNG" and Image.open(file).size == (SIZE, SIZE)
    small, big = pixels(file), pixels(shown)
    assert big.shape == (SIZE * SCALE, SIZE * SCALE, 3)
    assert np.array_equal(big, np.repeat(np.repeat(small, SCALE, 0), SCALE, 1))  # nearest, every pixel a square
    assert "3 steps" in stats and "nfe" in stats and "seed 0" in stats


def test_same_seed_same_picture_other_seed_other_picture(image_client):
    first = pixels(generate(image_client, seed=11)[1])
    again = pixels(generate(image_client, seed=11)[1])
    other = pixels(generate(image_client, seed=12)[1])
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_a_prompt_outside_the_shapes_grammar_still_works_with_a_hint(image_client):
    _shown, file, stats = generate(image_client, "a cat wearing a hat")
    assert Image.open(file).size == (SIZE, SIZE) and "not a shapes-world caption" in stats
    assert "not a shapes-world caption" not in generate(image_client, "three yellow triangles")[2]


def test_inpainting_an_uploaded_picture_keeps_every_unpainted_pixel(image_client, tmp_path):
    rng = np.random.default_rng(0)
    picture = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    Image.fromarray(picture).save(tmp_path / "picture.png")
    layer = layer_png(tmp_path / "layer.png", SIZE, (8, 4, 20, 16), alpha=153)  # the brush is half-transparent
    _shown, file, stats = generate(image_client, inpaint=True,
                                   editor=editor_payload(tmp_path / "picture.png", [layer]))
    out = pixels(file)
    mask = np.zeros((SIZE, SIZE), bool)
    mask[4:16, 8:20] = True
    assert np.array_equal(out[~mask], picture[~mask])
    assert not np.array_equal(out[mask], picture[mask])
    assert f"inpainted {mask.sum()} of {SIZE * SIZE} pixels" in stats.lower()


def test_use_result_then_paint_the_magnified_picture_regenerates_only_the_painted_blocks(image_client, tmp_path):
    _shown, file, _stats = generate(image_client, seed=3)
    first = pixels(file)
    editor, inpaint = image_client.predict(api_name="/use_image_result")
    assert inpaint is True and editor["layers"] == []
    background = pixels(editor["background"])
    assert background.shape == (SIZE * SCALE, SIZE * SCALE, 3)  # shown ×4 in the editor

    # Paint model pixels x 4..11, y 20..27 on the ×4 picture.
    layer = layer_png(tmp_path / "layer.png", SIZE * SCALE, (16, 80, 48, 112))
    _shown, file2, stats = generate(image_client, "a green square", inpaint=True, seed=4,
                                    editor=editor_payload(editor["background"], [layer]))
    second = pixels(file2)
    mask = np.zeros((SIZE, SIZE), bool)
    mask[20:28, 4:12] = True
    assert np.array_equal(second[~mask], first[~mask])  # the magnified result came back pixel for pixel
    assert not np.array_equal(second[mask], first[mask])
    assert "cropped" not in stats and "resized" not in stats


def test_a_picture_of_another_size_is_cropped_and_resized_with_a_note(image_client, tmp_path):
    Image.new("RGB", (90, 60), (40, 90, 240)).save(tmp_path / "wide.png")
    rgba = np.zeros((60, 90, 4), np.uint8)
    rgba[10:40, 30:60] = 255
    Image.fromarray(rgba).save(tmp_path / "layer.png")
    _shown, file, stats = generate(image_client, inpaint=True,
                                   editor=editor_payload(tmp_path / "wide.png", [tmp_path / "layer.png"]))
    assert Image.open(file).size == (SIZE, SIZE)
    assert "The 90×60 picture was cropped to its centred 60×60 square and resized from 60×60 to 32×32" in stats
    out = pixels(file)
    kept = np.all(out == (40, 90, 240), axis=-1)
    assert kept.sum() > SIZE * SIZE // 2  # everything outside the (resized) painted square stays blue


# ---------------------------------------------------------------------------------------------------------
# Bad inputs: a readable error, then the same session still works


@pytest.mark.parametrize("prompt", ["", "   "])
def test_empty_prompt_is_refused_then_the_next_request_succeeds(image_client, prompt):
    with pytest.raises(AppError, match="the prompt is empty"):
        generate(image_client, prompt)
    assert_still_serving(image_client)


def test_inpainting_without_paint_or_picture_is_refused(image_client, tmp_path):
    Image.new("RGB", (SIZE, SIZE), "black").save(tmp_path / "picture.png")
    empty = layer_png(tmp_path / "empty.png", SIZE, (0, 0, 0, 0))
    with pytest.raises(AppError, match="the mask covers nothing"):
        generate(image_client, inpaint=True, editor=editor_payload(tmp_path / "picture.png", [empty]))
    with pytest.raises(AppError, match="the mask covers nothing"):
        generate(image_client, inpaint=True, editor=editor_payload(tmp_path / "picture.png", []))
    with pytest.raises(AppError, match="inpainting needs a picture"):
        generate(image_client, inpaint=True, editor=None)
    assert_still_serving(image_client)


def test_a_layer_of_another_size_or_a_non_image_is_refused(image_client, tmp_path):
    Image.new("RGB", (SIZE, SIZE), "black").save(tmp_path / "picture.png")
    small = layer_png(tmp_path / "small.png", 16, (0, 0, 8, 8))
    with pytest.raises(AppError, match="the mask layer is 16×16 pixels but the picture is 32×32"):
        generate(image_client, inpaint=True, editor=editor_payload(tmp_path / "picture.png", [small]))
    (tmp_path / "fake.png").write_bytes(b"not an image")
    with pytest.raises(AppError):
        generate(image_client, inpaint=True, editor=editor_payload(tmp_path / "fake.png", [small]))
    assert_still_serving(image_client)


def test_a_model_folder_the_server_does_not_offer_is_refused(image_client, tmp_path):
    with pytest.raises(AppError, match=r"(?i)not in the list of choices|unknown model"):
        generate(image_client, model=tmp_path / "elsewhere")
    assert_still_serving(image_client)


def test_a_broken_model_folder_is_refused_with_the_reason(image_client, image_app_settings):
    broken = Path(image_app_settings.assets_dir) / "broken-sana"
    with pytest.raises(AppError, match="has a model config but no .safetensors weights"):
        generate(image_client, model=broken)
    assert_still_serving(image_client)


@pytest.mark.parametrize("params, message", [({"steps": 0}, r"(?i)steps|minimum"), ({"steps": 2.5}, "whole number"),
                                             ({"guidance": 16}, r"(?i)guidance|maximum"),
                                             ({"seed": -1}, r"(?i)seed|minimum")])
def test_bad_numbers_are_refused(image_client, params, message):
    with pytest.raises(AppError, match=message):
        generate(image_client, **params)
    assert_still_serving(image_client)


def test_use_result_before_generating_is_refused(image_client):
    with pytest.raises(AppError, match="there is no result yet"):
        image_client.predict(api_name="/use_image_result")
    assert_still_serving(image_client)


# ---------------------------------------------------------------------------------------------------------
# Without the model, and the pieces behind the endpoints


def test_without_the_model_the_app_builds_explains_and_generate_says_how_to_get_it(tmp_path):
    settings = Settings(assets_dir=tmp_path / "assets", output_dir=tmp_path / "out", device="cpu")
    build_app(settings)  # the whole app, piano roll included, still builds
    tab = ImageTab(settings, ModelRegistry(settings))
    assert tab.choices == [("shapes-sana (default, not installed)", str(tmp_path / "assets" / "shapes-sana")),
                           ("shapes-var (VAR, not installed)", str(tmp_path / "assets" / "shapes-var"))]
    assert "not installed" in tab.model_status() and "make assets-shapes" in tab.model_status()
    with pytest.raises(gr.Error, match=r"not installed.*make assets-shapes.*LINGEN_IMAGE_MODEL"):
        tab.generate("a red circle", None, 2, 4.0, 0, False, None, progress=no_progress)
    with pytest.raises(gr.Error, match="the prompt is empty"):  # input is checked before the model is needed
        tab.generate("", None, 2, 4.0, 0, False, None, progress=no_progress)


def test_the_setting_names_the_default_model_and_the_dropdown_lists_other_folders(tmp_path, tiny_image_pipeline_dir):
    settings = Settings.from_env({"LINGEN_IMAGE_MODEL": str(tiny_image_pipeline_dir),
                                  "LINGEN_ASSETS_DIR": str(tmp_path)}, output_dir=tmp_path / "out")
    assert settings.model_dir("image") == tiny_image_pipeline_dir
    assert Settings(output_dir=tmp_path / "o").model_dir("image").name == "shapes-sana"
    shutil.copytree(tiny_image_pipeline_dir, tmp_path / "other-sana")
    (tmp_path / "not-a-model").mkdir()
    (tmp_path / "pianoroll-like").mkdir()
    index = {"_class_name": "PianoRollInpaintPipeline"}
    (tmp_path / "pianoroll-like" / "model_index.json").write_text(json.dumps(index))
    assert model_choices(settings) == [(f"{tiny_image_pipeline_dir.name} (default)", str(tiny_image_pipeline_dir)),
                                       ("other-sana", str(tmp_path / "other-sana")),
                                       ("shapes-var (VAR, not installed)", str(tmp_path / "shapes-var"))]


def test_generate_reports_progress_over_the_sampler_steps(image_app_settings):
    tab = ImageTab(image_app_settings, ModelRegistry(image_app_settings))
    calls = []
    tab.generate("a red circle", None, 5, 4.0, 0, False, None,
                 progress=lambda value, desc=None, **kw: calls.append((value, desc)))
    assert calls[0] == (0.0, "loading the model")
    assert [value for value, desc in calls if desc == "generating"] == [(i, 5) for i in range(1, 6)]


def test_the_registry_caches_each_model_folder_once(image_app_settings, tiny_image_pipeline_dir, tmp_path):
    registry = ModelRegistry(image_app_settings)
    assert registry.get("image") is registry.get("image", tiny_image_pipeline_dir)
    shutil.copytree(tiny_image_pipeline_dir, tmp_path / "copy")
    other = registry.get("image", tmp_path / "copy")
    assert other is not registry.get("image") and other is registry.get("image", tmp_path / "copy")
    assert registry.loaded() == ["image", f"image:{tmp_path / 'copy'}"]


def _value(background: np.ndarray, layer: np.ndarray) -> dict:
    return {"background": Image.fromarray(background), "layers": [Image.fromarray(layer)]}


def test_inpaint_input_mask_rules():
    picture = np.random.default_rng(1).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    shown = np.repeat(np.repeat(picture, SCALE, 0), SCALE, 1)
    layer = np.zeros((SIZE * SCALE, SIZE * SCALE, 4), np.uint8)
    layer[0:2, 0:1] = (255, 255, 255, 40)  # a faint stroke thinner than one model pixel still counts
    job = inpaint_input(_value(shown, layer), SIZE, max_pixels=10**7)
    assert np.array_equal(job.image, picture) and job.note == ""
    assert np.argwhere(job.mask).tolist() == [[0, 0]]

    layer[:] = 0
    layer[0:2, 0:4] = 255  # half of model pixel (0, 0) …
    layer[4:5, 4:8] = 255  # … and a quarter of model pixel (1, 1): only the first counts
    assert np.argwhere(inpaint_input(_value(shown, layer), SIZE, max_pixels=10**7).mask).tolist() == [[0, 0]]

    layer[:] = 0
    layer[..., :3] = 0
    layer[..., 3] = 255  # an opaque black layer is "keep everywhere"
    with pytest.raises(ValueError, match="the mask covers nothing"):
        inpaint_input(_value(shown, layer), SIZE, max_pixels=10**7)

    wide = np.zeros((40, 120, 3), np.uint8)
    paint = np.zeros((40, 120, 4), np.uint8)
    paint[:, :30] = 255  # only outside the centred 40×40 square
    with pytest.raises(ValueError, match="outside the centred 40×40 square"):
        inpaint_input(_value(wide, paint), SIZE, max_pixels=10**7)
    with pytest.raises(ValueError, match="too large"):
        inpaint_input(_value(wide, paint), SIZE, max_pixels=1000)


def test_planned_note_names_the_layout_a_planning_model_drew(tiny_image_pipeline_dir):
    from genmodels.loading import load_pipeline
    from genmodels.pipelines.text_to_image import TextToImagePipeline

    pipe = load_pipeline(TextToImagePipeline, tiny_image_pipeline_dir)
    pipe.set_progress_bar_config(disable=True)
    prompt = "three blue squares"
    assert planned_note(prompt, pipe(prompt, num_inference_steps=1)) == ""  # no planner
    pipe.register_to_config(prompt_planner="shapes_layout")
    out = pipe(prompt, num_inference_steps=1, generator=torch.Generator().manual_seed(0))
    note = planned_note(prompt, out)
    assert "planned layout" in note and out.prompts[0] in note and out.prompts[0].count("blue square") == 3
    assert planned_note("a red dragon", pipe("a red dragon", num_inference_steps=1)) == ""  # outside the grammar


def test_each_requests_own_scheduler_view_keeps_the_pipelines_prompt_planner():
    from app.tabs.image import with_own_scheduler
    from genmodels.diffusion.flow import make_flow_scheduler
    from genmodels.pipelines.text_to_image import TextToImagePipeline
    from genmodels.sana import SanaDiT
    from tests.pipelines.test_text_to_image import HashTextEncoder

    pipe = TextToImagePipeline(transformer=SanaDiT(**SanaDiT.tiny_config()), scheduler=make_flow_scheduler("euler"),
                               text_encoder=HashTextEncoder(), prompt_planner="shapes_layout")
    view = with_own_scheduler(pipe)
    assert view.config.prompt_planner == "shapes_layout" and view.scheduler is not pipe.scheduler
    assert view.transformer is pipe.transformer
