"""The "Piano roll" tab: Pictures of MIDI in the browser.

Workflow: load a MIDI file (upload or bundled example) → its roll appears in an image editor → paint white
where new notes should go (or type bars and pitches) → Generate → listen, download the MIDI, and "Use as
input" to mask the result again and iterate. "Test-time search" makes N candidates and keeps the one a musical
verifier scores best (``app.search``); they are all shown.

The handlers are methods of ``PianoRollTab`` and are plain functions of plain values, so they can be tested
without a browser; ``build_tab`` wires them to components. Everything the user sends is validated here
(sliders only help the browser), and every failure reaches the user as a ``gr.Error`` (``app.errors``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import torch
from PIL import Image

from app import search
from app.errors import check_number, user_errors
from app.examples import EXAMPLES_DIR, list_examples
from app.outputs import OutputStore
from app.registry import ModelRegistry
from app.settings import Settings
from genmodels.io import write_bytes_atomic
from genmodels.music import (
    PITCH_HIGH,
    PITCH_LOW,
    ROLL_PITCHES,
    STEPS_PER_BAR,
    render_audio,
    render_roll,
    roll_to_midi,
    write_wav,
)
from genmodels.pipelines.pianoroll_io import load_roll, mask_from_image, midi_bytes, parse_range, rect_mask
from genmodels.search import SearchResult, pianoroll_generate_fn, run_search

MODEL = "pianoroll"
MASK_FROM_PAINTING = "painting"
MASK_FROM_RANGES = "bars & pitches"
SAMPLE_RATE = 22050
MAX_SEED = 2**32 - 1
SEARCH_NOTE = ("With a search, N replaces *Number of samples*, and the busyness verifier keeps the candidate at the "
               "*Busyness percentile*, as without search.")
# Paint is shown half-transparent so the notes under it stay visible; any paint counts (see painted_mask).
BRUSH_COLOUR = ("#FFFFFF", 0.55)

# After a new roll arrives, size the editor's canvas to its box and pick its "Fit to screen" zoom, so the roll
# is shown large and centred. Gradio 6.31's editor sizes its WebGL canvas from a ResizeObserver that can fire
# before the canvas exists (slow software WebGL); the canvas then keeps a stale size and every later fit is
# computed from it. ``window.editor`` is the editor Gradio exposes (used only when it is this one). The script
# waits while the editor shows "processing"; ``data-fits`` counts finished fits (the browser test waits on it).
FIT_EDITOR_JS = """
async () => {
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const root = document.getElementById("roll-editor");
  if (!root) return;
  const busy = () => {
    const tracker = root.querySelector('[data-testid="status-tracker"]');
    return tracker && !tracker.classList.contains("hide");
  };
  const leaf = (text) =>
    [...root.querySelectorAll("*")].find((e) => e.children.length === 0 && e.textContent.trim() === text);
  for (let i = 0; i < 200 && busy(); i++) await sleep(100);
  await sleep(100);
  const editor = window.editor;
  const canvas = root.querySelector("canvas");
  if (editor && editor.target_element && root.contains(editor.target_element) && canvas) {
    const box = editor.target_element.getBoundingClientRect();
    if (Math.abs(canvas.getBoundingClientRect().width - box.width) > 1) editor.resize_canvas(box.width, box.height);
  }
  const zoom = root.querySelector(".zoom-number");
  if (zoom) {
    zoom.click();
    let fit;
    for (let i = 0; i < 30 && !(fit = leaf("Fit to screen")); i++) await sleep(100);
    if (fit) fit.click();
  }
  root.dataset.fits = String(Number(root.dataset.fits || 0) + 1);
}
"""

INSTRUCTIONS = f"""\
**1.** Load an example or upload a MIDI file: its piano roll appears below.
**2.** Paint **white** where new notes should go, or type the bars and pitches to regenerate.
**3.** Press **Generate**: new notes appear in **orange**. Listen, download the MIDI, or press
**Use as input** to paint over the result and go again. Pitches run {PITCH_LOW}–{PITCH_HIGH} (60 = middle C),
high notes at the top; one bar is 16 columns.
"""


@dataclass(frozen=True)
class Piece:
    """A roll being edited: ``roll`` ``[2, 64, W]`` in [0, 1] (W a multiple of 16), its tempo and a title."""

    roll: np.ndarray
    bpm: float
    title: str

    @property
    def bars(self) -> int:
        return self.roll.shape[2] // STEPS_PER_BAR

    @property
    def n_notes(self) -> int:
        return int(np.count_nonzero(self.roll[0] > 0))


# ---------------------------------------------------------------------------------------------------------
# Pure helpers


def editor_value(roll: np.ndarray, scale: int) -> dict[str, Any]:
    """ImageEditor value showing ``roll`` drawn at ``scale`` pixels per cell, with nothing painted."""
    image = render_roll(roll, scale=scale)
    return {"background": image, "layers": [], "composite": image}


def _size(image: Image.Image | np.ndarray) -> tuple[int, int]:
    if isinstance(image, np.ndarray):
        return image.shape[1], image.shape[0]
    return image.size


def painted_mask(value: dict[str, Any] | None, width: int, *, scale: int, max_pixels: int) -> np.ndarray:
    """Mask ``[64, width]`` painted in an ImageEditor value (True = generate); all False when nothing is painted.

    The background must be the roll as the app drew it (``width * scale`` × ``64 * scale``): another picture
    there means the user uploaded an image, whose paint would not line up with the roll. Layer pixels count
    as painted wherever they are bright and not fully transparent (the brush is half-transparent white).
    """
    mask = np.zeros((ROLL_PITCHES, width), dtype=bool)
    if not value:
        return mask
    expected = (width * scale, ROLL_PITCHES * scale)
    images = [value.get("background"), *(value.get("layers") or [])]
    for image in images:
        if image is not None and _size(image)[0] * _size(image)[1] > max_pixels:
            w, h = _size(image)
            raise ValueError(f"the editor image is too large ({w}×{h} pixels)")
    background = value.get("background")
    if background is not None and _size(background) != expected:
        w, h = _size(background)
        raise ValueError(f"the editor holds a {w}×{h} picture, but the loaded roll is drawn at "
                         f"{expected[0]}×{expected[1]}: paint on the roll the app shows (load the piece again)")
    for layer in value.get("layers") or []:
        if layer is None:
            continue
        image = Image.fromarray(layer) if isinstance(layer, np.ndarray) else layer
        rgba = np.array(image.convert("RGBA"))
        rgba[..., 3] = np.where(rgba[..., 3] > 0, 255, 0)  # translucent paint counts fully
        mask |= mask_from_image(Image.fromarray(rgba), width)
    return mask


def choose_mask(piece: Piece, editor: dict[str, Any] | None, mask_from: str, bars: str | None,
                pitches: str | None, *, scale: int, max_pixels: int) -> np.ndarray:
    """The region to generate, from the painting or from the bar and pitch ranges."""
    width = piece.roll.shape[2]
    if mask_from == MASK_FROM_PAINTING:
        mask = painted_mask(editor, width, scale=scale, max_pixels=max_pixels)
        if not mask.any():
            raise ValueError("the mask covers nothing: paint white over the region where new notes should go, "
                             f"or choose '{MASK_FROM_RANGES}' and type the bars")
        return mask
    if mask_from == MASK_FROM_RANGES:
        if not (bars or "").strip():
            raise ValueError(f"type the bars to generate, e.g. 5-8 (this piece has {piece.bars} bars)")
        pitch_range = parse_range(pitches, "pitches") if (pitches or "").strip() else (PITCH_LOW, PITCH_HIGH)
        return rect_mask(width, parse_range(bars, "bars"), pitch_range)
    raise ValueError(f"'mask from' must be '{MASK_FROM_PAINTING}' or '{MASK_FROM_RANGES}', got {mask_from!r}")


def piece_info(piece: Piece, note: str = "") -> str:
    return (f"**{piece.title}**: {piece.bars} bars, {piece.bpm:g} bpm, {piece.n_notes} notes{note}. "
            f"Bars are numbered from 1.")


def result_stats(notes_in_mask: list[int], chosen: int, *, busyness: float, steps: int, repaint: int, nfe: int,
                 seconds: float, seed: int) -> str:
    counts = ", ".join(f"**{c}**" if i == chosen else str(c) for i, c in enumerate(notes_in_mask))
    return (f"Candidate **{chosen + 1} of {len(notes_in_mask)}** (busyness percentile {busyness:g}). "
            f"Notes in the mask per candidate: {counts}.  \n"
            f"{steps} steps × RePaint {repaint} · {nfe} denoiser calls · sampled in {seconds:.2f} s · seed {seed}")


def search_stats(found: SearchResult, options: search.SearchOptions, *, steps: int, repaint: int) -> str:
    return (f"Candidate **{found.index + 1} of {options.n}** ({options.strategy}, verifier {options.verifier}; "
            f"seeds {found.candidates.seeds[0]}–{found.candidates.seeds[-1]}).  \n"
            f"{steps} steps × RePaint {repaint} · {found.nfe} denoiser calls · sampled and scored in "
            f"{found.seconds:.2f} s · seed {found.seed}")


# ---------------------------------------------------------------------------------------------------------
# Event handlers


class PianoRollTab:
    """The tab's event handlers, bound to the app's settings, model registry and output folder."""

    def __init__(self, settings: Settings, registry: ModelRegistry, examples_dir: str | Path = EXAMPLES_DIR):
        self.settings = settings
        self.registry = registry
        self.examples = list_examples(examples_dir)
        self.store = OutputStore(Path(settings.output_dir) / "pianoroll", settings.output_ttl_s)

    def _loaded(self, data: bytes, title: str) -> tuple[dict[str, Any], str, Piece]:
        roll, bpm = load_roll(data)
        bars, note = roll.shape[2] // STEPS_PER_BAR, ""
        if bars > self.settings.max_bars:  # the editor and the sampler stay responsive on long pieces
            roll = np.ascontiguousarray(roll[:, :, : self.settings.max_bars * STEPS_PER_BAR])
            note = f" (the first {self.settings.max_bars} of {bars} bars)"
        piece = Piece(roll, bpm, title)
        return editor_value(roll, self.settings.roll_scale), piece_info(piece, note), piece

    @user_errors
    def load_example(self, label: str) -> tuple[dict[str, Any], str, Piece]:
        """Load bundled example ``label``."""
        if label not in self.examples:
            raise ValueError(f"unknown example {label!r}; choose one of: {', '.join(self.examples) or 'none'}")
        return self._loaded(self.examples[label].read_bytes(), label)

    @user_errors
    def load_midi(self, file: str | None) -> tuple[dict[str, Any], str, Piece]:
        """Load an uploaded MIDI file (a path from ``gr.File``)."""
        if not file:
            raise ValueError("no file received: upload a .mid or .midi file")
        path = Path(file)
        size = path.stat().st_size
        limit = self.settings.max_upload_bytes
        if size > limit:
            raise ValueError(f"{path.name} is {size / 1e6:.1f} MB; MIDI files up to {limit / 1e6:.0f} MB are accepted")
        return self._loaded(path.read_bytes(), path.name)

    @user_errors
    def use_as_input(self, result: Piece | None) -> tuple[dict[str, Any], str, Piece]:
        """Put the last result's roll (without its mask) into the editor, to paint on it again."""
        if result is None:
            raise ValueError("there is no result yet: press Generate first")
        return editor_value(result.roll, self.settings.roll_scale), piece_info(result), result

    @user_errors
    def generate(self, editor: dict[str, Any] | None, piece: Piece | None, mask_from: str, bars: str,
                 pitches: str, repaint: float, samples: float, busyness: float, steps: float, seed: float,
                 strategy: str = search.NONE, n: float = search.DEFAULT_N, verifier: str = "busyness",
                 progress: gr.Progress = gr.Progress()  # noqa: B008
                 ) -> tuple[Image.Image, str, str, str, Piece, search.Shown | None]:
        """Inpaint the current piece; returns the picture, MIDI path, WAV path, stats, the result piece and the
        search's candidates (None without search: then ``samples`` candidates, the one at the ``busyness``
        percentile kept, as in Pictures of MIDI; a search makes ``n`` instead and keeps the ``verifier``'s pick)."""
        s = self.settings
        repaint = check_number("RePaint", repaint, 1, 10, integer=True)
        samples = check_number("number of samples", samples, 1, s.max_samples, integer=True)
        busyness = check_number("busyness percentile", busyness, 1, 100)
        steps = check_number("steps", steps, s.min_steps, s.max_steps, integer=True)
        seed = check_number("seed", seed, 0, MAX_SEED, integer=True)
        options = search.check_search(strategy, n, verifier, verifiers=search.PIANOROLL_VERIFIERS,
                                      max_n=s.max_search_n, seed=seed, max_seed=MAX_SEED)
        if piece is None:
            raise ValueError("nothing to work on yet: load an example or upload a MIDI file first")
        mask = choose_mask(piece, editor, mask_from, bars, pitches, scale=s.roll_scale, max_pixels=s.max_image_pixels)

        progress(0.0, desc="loading the model")
        pipe = self.registry.get(MODEL)
        if options.active:
            tracker = search.CandidateProgress(progress, options.n, options.verifier)
            generate_fn = pianoroll_generate_fn(pipe, piece.roll, mask, num_inference_steps=steps, repaint=repaint,
                                                callback=tracker.on_step)
            found = run_search(options.strategy, verifier=search.pianoroll_verifier(options.verifier, busyness),
                               context={"mask": mask}, generate_fn=tracker.wrap(generate_fn), n=options.n,
                               seeds=range(seed, seed + options.n), batch_size=s.search_batch)
            roll, seconds = found.output, found.seconds
            stats = search_stats(found, options, steps=steps, repaint=repaint)
            pictures = [render_roll(c, highlight_mask=mask, scale=s.roll_scale) for c in found.candidates.outputs]
            searched = search.shown(found, options, pictures)
        else:
            desc = f"denoising {samples} candidate{'s' if samples > 1 else ''}"

            def on_step(done: int, total: int) -> None:
                progress((done, total), desc=desc, unit="steps")

            t0 = time.perf_counter()
            out = pipe(piece.roll, mask, num_inference_steps=steps, repaint=repaint, num_samples=samples,
                       busyness=busyness, generator=torch.Generator().manual_seed(seed), callback=on_step)
            roll, seconds = out.roll, time.perf_counter() - t0
            stats = result_stats(out.notes_in_mask, out.chosen, busyness=busyness, steps=steps, repaint=repaint,
                                 nfe=out.nfe, seconds=seconds, seed=seed)
            searched = None

        progress(1.0, desc="rendering audio")
        folder = self.store.new_dir()
        midi_path = write_bytes_atomic(folder / "lingen-pianoroll.mid", midi_bytes(roll, piece.bpm))
        wav_path = write_wav(folder / "lingen-pianoroll.wav",
                             render_audio(roll_to_midi(roll, bpm=piece.bpm), sr=SAMPLE_RATE), SAMPLE_RATE)
        image = render_roll(roll, highlight_mask=mask, scale=s.roll_scale)
        result = Piece(roll, piece.bpm, f"{piece.title}, generated")
        return image, str(midi_path), str(wav_path), stats, result, searched


# ---------------------------------------------------------------------------------------------------------
# Layout


def build_tab(demo: gr.Blocks, settings: Settings, registry: ModelRegistry) -> PianoRollTab:
    """The "Piano roll" tab, inside ``demo``'s context. Endpoints: ``/load_example``, ``/load_midi``,
    ``/generate``, ``/search_candidates`` (the last search's candidates with their scores, and its line: NFE and
    wall time), ``/use_as_input``."""
    tab = PianoRollTab(settings, registry)
    with gr.Tab("Piano roll", id="pianoroll"):
        piece = gr.State(None)  # Piece being edited
        result = gr.State(None)  # Piece last generated
        searched = gr.State(None)  # the last result's search (search.Shown), None without one
        gr.Markdown(INSTRUCTIONS, elem_classes=["instructions"])
        with gr.Row():
            example = gr.Dropdown(list(tab.examples), value=next(iter(tab.examples), None), label="Example",
                                  scale=3)
            load_button = gr.Button("Load example", scale=1, min_width=120)
            midi_file = gr.File(label="…or upload a MIDI file (.mid, up to "
                                      f"{settings.max_upload_bytes / 1e6:.0f} MB)",
                                file_types=[".mid", ".midi"], type="filepath", height=120, scale=4)
        info = gr.Markdown("Nothing loaded yet.", label="Loaded piece", elem_id="piece-info")
        editor = gr.ImageEditor(
            label="Piano roll: paint white where new notes should go",
            type="pil", image_mode="RGBA", format="png", sources=(), transforms=(),
            brush=gr.Brush(colors=[BRUSH_COLOUR], default_color=BRUSH_COLOUR, color_mode="fixed", default_size=24),
            eraser=gr.Eraser(default_size=24), layers=False, canvas_size=(512, 256), fixed_canvas=False,
            height=440, buttons=["fullscreen"], elem_id="roll-editor")
        with gr.Row():
            with gr.Column(scale=2):
                mask_from = gr.Radio([MASK_FROM_PAINTING, MASK_FROM_RANGES], value=MASK_FROM_PAINTING,
                                     label="Mask from")
                with gr.Row():
                    bars = gr.Textbox(label="Bars", placeholder="e.g. 5-8", min_width=100)
                    pitches = gr.Textbox(label="Pitches (MIDI)", placeholder=f"e.g. 60-84 (all: {PITCH_LOW}-"
                                                                             f"{PITCH_HIGH})", min_width=100)
                seed = gr.Number(value=0, precision=0, minimum=0, maximum=MAX_SEED, label="Seed")
            with gr.Column(scale=3):
                with gr.Row():
                    repaint = gr.Slider(1, 10, value=2, step=1,
                                        label="RePaint (resamples per step; slower)")
                    samples = gr.Slider(1, settings.max_samples, value=min(4, settings.max_samples), step=1,
                                        label="Number of samples (candidates to choose from)")
                with gr.Row():
                    busyness = gr.Slider(1, 100, value=100, step=1,
                                         label="Busyness percentile (100 = the candidate with most notes)")
                    steps = gr.Slider(settings.min_steps, settings.max_steps, value=24, step=1,
                                      label="Steps (more = cleaner, slower)")
                strategy, n, verifier = search.search_controls(settings, search.PIANOROLL_VERIFIERS, "pianoroll",
                                                               note=SEARCH_NOTE)
                generate_button = gr.Button("Generate", variant="primary", size="lg", elem_id="generate")
        gr.Markdown("### Result")
        result_image = gr.Image(label="Result: generated notes in orange", type="pil", format="png",
                                interactive=False, height=440, buttons=["download", "fullscreen"],
                                elem_id="result-image")
        with gr.Row():
            audio = gr.Audio(label="Listen", type="filepath", interactive=False, scale=3)
            with gr.Column(scale=2):
                midi_out = gr.File(label="MIDI", interactive=False, height=80, elem_id="result-midi")
                use_button = gr.Button("Use as input (paint over the result)", elem_id="use-as-input")
        stats = gr.Markdown(label="Result statistics", elem_id="result-stats")
        candidates_box, candidates, search_line = search.candidates_display("pianoroll")

    loaded = [editor, info, piece]
    fit = {"fn": None, "js": FIT_EDITOR_JS, "api_visibility": "private", "queue": False}
    load_button.click(tab.load_example, example, loaded, api_name="load_example").success(**fit)
    midi_file.upload(tab.load_midi, midi_file, loaded, api_name="load_midi").success(**fit)
    generated = generate_button.click(
        tab.generate, [editor, piece, mask_from, bars, pitches, repaint, samples, busyness, steps, seed, strategy, n,
                       verifier], [result_image, midi_out, audio, stats, result, searched], api_name="generate")
    search.wire_display(generated, searched, candidates_box, candidates, search_line, api_name="search_candidates")
    use_button.click(tab.use_as_input, result, loaded, api_name="use_as_input").success(**fit)
    # Typing a range or painting says which mask the user means: switch the source (in the browser, no round trip).
    for box in (bars, pitches):
        box.input(None, box, mask_from, js=f"(_) => '{MASK_FROM_RANGES}'", api_visibility="private")
    editor.input(None, None, mask_from, js=f"() => '{MASK_FROM_PAINTING}'", api_visibility="private")
    if tab.examples:  # a first visit starts with something to paint on
        demo.load(tab.load_example, example, loaded, api_visibility="private").success(**fit)
    return tab
