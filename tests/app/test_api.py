"""The app's endpoints driven through gradio_client, as a remote user would: good inputs give a roll picture,
a MIDI file and audio; every bad input gives a readable error and the server keeps serving.

Endpoints: /load_example, /load_midi, /generate, /use_as_input. The model is a tiny untrained HDiT, so these
tests check behaviour (what changes where, what files come back), not musical quality.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from pathlib import Path

import gradio as gr
import httpx
import numpy as np
import pretty_midi
import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from PIL import Image
from scipy.io import wavfile

from app.errors import user_errors
from app.registry import ModelRegistry
from app.settings import Settings
from app.tabs.pianoroll import MASK_FROM_PAINTING, MASK_FROM_RANGES, PianoRollTab, check_number
from genmodels.music import STEPS_PER_BAR, render_roll
from genmodels.pipelines.pianoroll_io import load_roll, rect_mask
from tests.app.conftest import FAST

BACH = "Bach chorale BWV 263 (8 bars)"
SCALE = 4  # Settings.roll_scale
WIDTH = 8 * STEPS_PER_BAR


def generate(client, editor=None, mask_from=MASK_FROM_RANGES, bars="3-4", pitches="55-79", **params):
    p = {**FAST, **params}
    return client.predict(editor, mask_from, bars, pitches, p["repaint"], p["samples"], p["busyness"], p["steps"],
                          p["seed"], api_name="/generate")


def editor_payload(background: str | Path, layers: list[str | Path]) -> dict:
    return {"background": handle_file(str(background)), "layers": [handle_file(str(p)) for p in layers],
            "composite": handle_file(str(background)), "id": None}


def painted_layer(path: Path, size: tuple[int, int], boxes: list[tuple[int, int, int, int]]) -> Path:
    """A transparent RGBA layer of ``size`` with opaque white rectangles (x0, y0, x1, y1), saved as PNG."""
    rgba = np.zeros((size[1], size[0], 4), np.uint8)
    for x0, y0, x1, y1 in boxes:
        rgba[y0:y1, x0:x1] = 255
    Image.fromarray(rgba).save(path)
    return path


def cell_pixels(mask: np.ndarray) -> np.ndarray:
    """A roll mask ``[64, W]`` → the pixel mask of the picture drawn at SCALE."""
    return np.repeat(np.repeat(mask, SCALE, axis=0), SCALE, axis=1)


@pytest.fixture
def loaded(client, examples):
    """A client session with the Bach example loaded; returns (client, its editor value, its roll)."""
    editor, _info = client.predict(BACH, api_name="/load_example")
    roll, _ = load_roll(examples[BACH])
    return client, editor, roll


def assert_still_serving(client) -> None:
    editor, info = client.predict(BACH, api_name="/load_example")
    assert "8 bars" in info and Image.open(editor["background"]).size == (WIDTH * SCALE, 64 * SCALE)


# ---------------------------------------------------------------------------------------------------------
# Good inputs


def test_api_lists_the_four_named_endpoints(client):
    names = set(client.view_api(return_format="dict", print_info=False)["named_endpoints"])
    assert {"/load_example", "/load_midi", "/generate", "/use_as_input"} <= names


def test_load_example_shows_the_roll_drawn_at_scale_4(client, examples):
    editor, info = client.predict(BACH, api_name="/load_example")
    roll, bpm = load_roll(examples[BACH])
    assert "8 bars" in info and f"{bpm:g} bpm" in info
    assert editor["layers"] == []
    background = np.asarray(Image.open(editor["background"]).convert("RGB"))
    assert np.array_equal(background, np.asarray(render_roll(roll, scale=SCALE)))


def test_load_uploaded_midi_shows_its_roll(client, examples):
    path = examples["Reel: Miss Kelly's (12 bars)"]
    editor, info = client.predict(handle_file(str(path)), api_name="/load_midi")
    assert "12 bars" in info and path.name in info
    assert Image.open(editor["background"]).size == (12 * STEPS_PER_BAR * SCALE, 64 * SCALE)


def test_a_long_piece_is_cut_to_its_first_64_bars(client, tmp_path):
    pm = pretty_midi.PrettyMIDI(initial_tempo=120.0)  # 2 s per 4/4 bar
    piano = pretty_midi.Instrument(0)
    piano.notes = [pretty_midi.Note(90, 60 + bar % 12, 2.0 * bar, 2.0 * bar + 1.0) for bar in range(70)]
    pm.instruments.append(piano)
    pm.write(str(tmp_path / "long.mid"))
    editor, info = client.predict(handle_file(str(tmp_path / "long.mid")), api_name="/load_midi")
    assert "64 bars" in info and "the first 64 of 70 bars" in info
    assert Image.open(editor["background"]).size == (64 * STEPS_PER_BAR * SCALE, 64 * SCALE)


def test_generate_from_bars_and_pitches_changes_only_the_mask(loaded):
    client, _editor, roll = loaded
    image, midi, audio, stats = generate(client, bars="3-4", pitches="55-79", samples=2)
    mask = rect_mask(WIDTH, (3, 4), (55, 79))

    picture = np.asarray(Image.open(image).convert("RGB"))
    original = np.asarray(render_roll(roll, scale=SCALE))
    assert picture.shape == original.shape
    assert np.array_equal(picture[~cell_pixels(mask)], original[~cell_pixels(mask)])

    pm = pretty_midi.PrettyMIDI(midi)
    assert sum(len(i.notes) for i in pm.instruments) > 0
    result, _ = load_roll(midi)
    assert np.array_equal(result[:, ~mask], roll[:, ~mask])

    sr, pcm = wavfile.read(audio)
    assert sr == 22050 and pcm.dtype == np.int16 and len(pcm) >= 16 * sr  # 8 bars at 120 bpm
    assert "Candidate" in stats and "denoiser calls" in stats


def test_generate_from_a_painted_layer_changes_only_the_painted_cells(loaded, tmp_path):
    client, editor, roll = loaded
    size = (WIDTH * SCALE, 64 * SCALE)
    # Paint bars 3-4 (columns 32..63) on rows 20..35: pixels x 128..255, y 80..143.
    layer = painted_layer(tmp_path / "layer.png", size, [(128, 80, 256, 144)])
    image, midi, _audio, _stats = generate(client, editor_payload(editor["background"], [layer]),
                                           mask_from=MASK_FROM_PAINTING, bars="", pitches="")
    mask = np.zeros((64, WIDTH), bool)
    mask[20:36, 32:64] = True
    picture = np.asarray(Image.open(image).convert("RGB"))
    assert np.array_equal(picture[~cell_pixels(mask)], np.asarray(render_roll(roll, scale=SCALE))[~cell_pixels(mask)])
    assert not np.array_equal(picture[cell_pixels(mask)], np.asarray(render_roll(roll, scale=SCALE))[cell_pixels(mask)])
    result, _ = load_roll(midi)
    assert np.array_equal(result[:, ~mask], roll[:, ~mask])


def test_half_transparent_paint_counts_as_painted(loaded, tmp_path):
    client, editor, roll = loaded
    rgba = np.zeros((64 * SCALE, WIDTH * SCALE, 4), np.uint8)
    rgba[0:SCALE, 0:SCALE] = (255, 255, 255, 140)  # the brush's 55% white, one cell: row 0, column 0
    Image.fromarray(rgba).save(tmp_path / "layer.png")
    image, *_ = generate(client, editor_payload(editor["background"], [tmp_path / "layer.png"]),
                         mask_from=MASK_FROM_PAINTING)
    picture = np.asarray(Image.open(image).convert("RGB"))
    mask = np.zeros((64, WIDTH), bool)
    mask[0, 0] = True
    original = np.asarray(render_roll(roll, scale=SCALE))
    assert np.array_equal(picture[~cell_pixels(mask)], original[~cell_pixels(mask)])
    assert not np.array_equal(picture[:SCALE, 1:SCALE], original[:SCALE, 1:SCALE])  # tinted: it was masked


def test_use_as_input_puts_the_result_roll_without_its_mask_into_the_editor(loaded):
    client, _editor, _roll = loaded
    _image, midi, _audio, _stats = generate(client, bars="2-2", pitches="60-72")
    editor, info = client.predict(api_name="/use_as_input")
    result, _ = load_roll(midi)
    background = np.asarray(Image.open(editor["background"]).convert("RGB"))
    assert np.array_equal(background, np.asarray(render_roll(result, scale=SCALE)))  # no orange highlight
    assert "generated" in info
    # The next generation starts from the result: outside the new mask the result's notes stay.
    _image, midi2, _audio, _stats = generate(client, bars="6-6", pitches="40-50")
    second, _ = load_roll(midi2)
    mask = rect_mask(WIDTH, (6, 6), (40, 50))
    assert np.array_equal(second[:, ~mask], result[:, ~mask])


def test_same_seed_same_result(loaded):
    client, _editor, _roll = loaded
    first = generate(client, seed=7)
    second = generate(client, seed=7)
    assert Path(first[1]).read_bytes() == Path(second[1]).read_bytes()


# ---------------------------------------------------------------------------------------------------------
# Bad inputs: a readable error, then the server still serves the same session


def _midi_bytes_without_notes() -> bytes:
    buf = io.BytesIO()
    pm = pretty_midi.PrettyMIDI()
    pm.instruments.append(pretty_midi.Instrument(0))
    pm.write(buf)
    return buf.getvalue()


BAD_UPLOADS = {
    "corrupt MIDI": ("broken.mid", b"MThd\x00\x00\x00\x06\x00\x01\x00\x02\x01\xe0MTrk\xff\xff", "corrupt MIDI"),
    "MIDI without notes": ("silent.mid", _midi_bytes_without_notes(), "no notes"),
    "a PNG named .mid": ("picture.mid", b"\x89PNG\r\n\x1a\n" + bytes(64), "not a Standard MIDI File"),
    "a text file": ("notes.txt", b"C D E F G", r"(?i)invalid file type|not a Standard MIDI"),
    "over the 2 MB limit": ("big.mid", b"MThd" + bytes(2_200_000), r"MIDI files up to 2 MB"),
}


@pytest.mark.parametrize("case", list(BAD_UPLOADS))
def test_bad_upload_is_refused_with_a_clear_message(loaded, tmp_path, case):
    client = loaded[0]
    name, data, message = BAD_UPLOADS[case]
    (tmp_path / name).write_bytes(data)
    with pytest.raises(AppError, match=message):
        client.predict(handle_file(str(tmp_path / name)), api_name="/load_midi")
    assert_still_serving(client)


BAD_PARAMETERS = {
    "fractional samples": ({"samples": 1.5}, "number of samples must be a whole number"),
    "too many samples": ({"samples": 5}, r"(?i)samples|maximum"),
    "zero RePaint": ({"repaint": 0}, r"(?i)repaint|minimum"),
    "negative seed": ({"seed": -1}, r"(?i)seed|minimum"),
    "busyness over 100": ({"busyness": 101}, r"(?i)busyness|maximum"),
    "bars outside the piece": ({"bars": "9-12"}, r"bars must lie in 1\.\.8"),
    "bars that are not a range": ({"bars": "five"}, "bars must look like"),
    "pitches outside the roll": ({"pitches": "10-20"}, r"pitches must lie in 28\.\.91"),
    "no bars given": ({"bars": " "}, "type the bars to generate"),
}


@pytest.mark.parametrize("case", list(BAD_PARAMETERS))
def test_bad_parameter_is_refused_with_a_clear_message(loaded, case):
    client = loaded[0]
    params, message = BAD_PARAMETERS[case]
    with pytest.raises(AppError, match=message):
        generate(client, **params)
    assert generate(client)[1].endswith(".mid")


def raw_generate(url: str, values: list) -> str:
    """POST /generate over plain HTTP with a JSON body gradio_client would refuse to encode (NaN, infinity);
    returns the event stream's text."""
    body = json.dumps({"data": [None, *values]}, allow_nan=True)
    post = httpx.post(f"{url}gradio_api/call/generate", content=body, headers={"content-type": "application/json"})
    post.raise_for_status()
    return httpx.get(f"{url}gradio_api/call/generate/{post.json()['event_id']}", timeout=60).text


@pytest.mark.parametrize("index, name", [(4, "RePaint"), (5, "number of samples"), (6, "busyness percentile"),
                                         (7, "steps")])
@pytest.mark.parametrize("bad", ["nan", "inf"])
def test_non_finite_numbers_are_refused_server_side(server, client, index, name, bad):
    values = [MASK_FROM_RANGES, "1-2", "", 1, 1, 100, 8, 0]
    values[index - 1] = float(bad)
    stream = raw_generate(server, values)
    # NaN passes Gradio's slider bounds check and is caught by the handler; infinity is caught by Gradio.
    expected = f"{name} must be a finite number" if bad == "nan" else "Value inf is greater than maximum value"
    assert "event: error" in stream and expected in stream
    assert_still_serving(client)


def test_painting_nothing_is_refused(loaded, tmp_path):
    client, editor, _roll = loaded
    empty = painted_layer(tmp_path / "empty.png", (WIDTH * SCALE, 64 * SCALE), [])
    with pytest.raises(AppError, match="the mask covers nothing"):
        generate(client, editor_payload(editor["background"], [empty]), mask_from=MASK_FROM_PAINTING)
    with pytest.raises(AppError, match="the mask covers nothing"):
        generate(client, None, mask_from=MASK_FROM_PAINTING)
    assert_still_serving(client)


def test_a_different_picture_in_the_editor_is_refused(loaded, tmp_path):
    client = loaded[0]
    Image.new("RGB", (300, 200), "white").save(tmp_path / "photo.png")
    layer = painted_layer(tmp_path / "layer.png", (300, 200), [(0, 0, 100, 100)])
    with pytest.raises(AppError, match=r"the editor holds a 300×200 picture.*512×256"):
        generate(client, editor_payload(tmp_path / "photo.png", [layer]), mask_from=MASK_FROM_PAINTING)
    assert_still_serving(client)


def test_a_layer_of_the_wrong_size_is_refused(loaded, tmp_path):
    client, editor, _roll = loaded
    layer = painted_layer(tmp_path / "layer.png", (100, 100), [(0, 0, 50, 50)])
    with pytest.raises(AppError, match="mask image must be 128×64 pixels or an integer multiple"):
        generate(client, editor_payload(editor["background"], [layer]), mask_from=MASK_FROM_PAINTING)
    assert_still_serving(client)


def test_a_non_image_in_the_editor_is_refused(loaded, tmp_path):
    client, editor, _roll = loaded
    (tmp_path / "fake.png").write_bytes(b"not an image")
    with pytest.raises(AppError):
        generate(client, editor_payload(editor["background"], [tmp_path / "fake.png"]), mask_from=MASK_FROM_PAINTING)
    assert_still_serving(client)


def test_generate_before_loading_anything_is_refused(client):
    with pytest.raises(AppError, match="load an example or upload a MIDI file first"):
        generate(client)
    assert_still_serving(client)


def test_use_as_input_before_generating_is_refused(client):
    with pytest.raises(AppError, match="there is no result yet"):
        client.predict(api_name="/use_as_input")
    assert_still_serving(client)


def test_unknown_example_is_refused(client):
    with pytest.raises(AppError, match=r"(?i)not in the list of choices|unknown example"):
        client.predict("Für Elise", api_name="/load_example")
    assert_still_serving(client)


# ---------------------------------------------------------------------------------------------------------
# The pieces behind the endpoints, without a server


def test_unexpected_exceptions_become_internal_errors_and_are_logged(caplog):
    @user_errors
    def broken():
        raise KeyError("boom")

    with caplog.at_level(logging.ERROR, logger="app"), pytest.raises(gr.Error, match="internal error: KeyError"):
        broken()
    assert "boom" in caplog.text and "Traceback" in caplog.text


def test_user_errors_keep_their_message():
    @user_errors
    def bad():
        raise ValueError("bars must lie in 1..8")

    with pytest.raises(gr.Error) as caught:
        bad()
    assert caught.value.message == "bars must lie in 1..8"


def test_missing_model_says_how_to_build_it(tmp_path, examples):
    settings = Settings(assets_dir=tmp_path, output_dir=tmp_path / "out", device="cpu")
    tab = PianoRollTab(settings, ModelRegistry(settings))
    _editor, _info, piece = tab.load_example(BACH)
    with pytest.raises(gr.Error, match=r"not installed.*make assets-pianoroll"):
        tab.generate(None, piece, MASK_FROM_RANGES, "1-2", "", 1, 1, 100, 8, 0, progress=lambda *a, **k: None)


def test_generate_reports_progress_over_the_sampler_steps(app_settings, examples):
    tab = PianoRollTab(app_settings, ModelRegistry(app_settings))
    _editor, _info, piece = tab.load_example(BACH)
    calls = []
    tab.generate(None, piece, MASK_FROM_RANGES, "2-2", "60-64", 2, 3, 100, 4, 0,
                 progress=lambda value, desc=None, **kw: calls.append((value, desc)))
    steps = [value for value, desc in calls if desc == "denoising 3 candidates"]
    assert steps == [(i, 8) for i in range(1, 9)]  # 4 steps × RePaint 2, the 3 candidates batched
    assert calls[-1] == (1.0, "rendering audio")


def test_command_line_binds_localhost_by_default_and_offers_no_share():
    from app.__main__ import parse_args

    args = parse_args([])
    assert (args.host, args.port) == ("127.0.0.1", 7860)
    assert parse_args(["--host", "0.0.0.0", "--port", "8000"]).host == "0.0.0.0"
    with pytest.raises(SystemExit):
        parse_args(["--share"])


def test_registry_loads_a_model_once_for_concurrent_first_requests(tmp_path):
    (tmp_path / "model_index.json").write_text("{}")
    calls = []

    def slow_loader(folder, device):
        calls.append(folder)
        time.sleep(0.2)
        return object()

    registry = ModelRegistry(Settings(model_dirs={"pianoroll": tmp_path}, output_dir=tmp_path / "out"),
                             loaders={"pianoroll": slow_loader})
    got = []
    threads = [threading.Thread(target=lambda: got.append(registry.get("pianoroll"))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len({id(m) for m in got}) == 1 and registry.loaded() == ["pianoroll"]


def test_settings_read_the_environment(tmp_path):
    env = {"LINGEN_ASSETS_DIR": str(tmp_path / "assets"), "LINGEN_PIANOROLL_MODEL": str(tmp_path / "model"),
           "LINGEN_APP_OUTPUT_DIR": str(tmp_path / "out"), "LINGEN_APP_MAX_SAMPLES": "3",
           "LINGEN_APP_CONCURRENCY": "2", "LINGEN_APP_MAX_QUEUE": "5"}
    s = Settings.from_env(env)
    assert s.model_dir("pianoroll") == tmp_path / "model"
    assert (s.max_samples, s.concurrency, s.max_queue) == (3, 2, 5)
    assert s.output_dir.is_dir()
    assert Settings.from_env({"LINGEN_ASSETS_DIR": str(tmp_path)}, output_dir=tmp_path / "o").model_dir(
        "pianoroll") == tmp_path / "pianoroll-hdit"
    with pytest.raises(ValueError, match="LINGEN_APP_MAX_SAMPLES must be an integer"):
        Settings.from_env({"LINGEN_APP_MAX_SAMPLES": "many"})


@pytest.mark.parametrize("value, message", [(float("nan"), "finite"), ("x", "must be a number"), (None, "number"),
                                            (True, "number"), (2.5, "whole"), (11, "between 1 and 10")])
def test_check_number_refuses(value, message):
    with pytest.raises(ValueError, match=message):
        check_number("RePaint", value, 1, 10, integer=True)
