"""The "Image" tab: text-to-image and text-guided inpainting with the shapes-world models: the SANA-style linear
DiT (diffusion, the default) or VAR (next-scale prediction), picked in the "Model" dropdown.

A SANA model samples in **Steps**; a VAR model draws the picture coarse to fine, one transformer pass per scale, so
Steps does not apply to it (the control is hidden) and **Top-k** / **Top-p** filter each token's distribution
instead (shown only for VAR). Inpainting and the test-time search work the same with both.

Workflow: type a prompt → Generate → the picture appears magnified (the download is the model's own size) →
"Use result as inpainting input" puts it into the editor → paint white over what should change, tick
*Inpaint* (painting ticks it) → Generate again: only the painted part is regenerated. "Test-time search" makes N
candidates instead of one and keeps the one a CLIP verifier scores best (``app.search``); they are all shown.

Inpainting input, the rules a user can rely on (also shown in the tab):

* the model works on ``N × N`` pictures (64 × 64 for the shipped model); the editor may hold any picture;
* a square picture whose side is a whole multiple (or a whole fraction) of ``N``, such as a result the app
  shows ×4, is scaled by whole blocks, so a magnified result comes back pixel for pixel;
* any other picture is cropped to its centred square and resized (Lanczos) to ``N × N``, and the result's
  statistics say so: that resized picture is what is kept outside the mask and what the download holds;
* a model pixel is regenerated when at least half of its area is painted (strokes thinner than that still
  count where they touch); paint counts where it is bright and not fully transparent (white = regenerate);
* outside the mask the output equals the (resized) input exactly.

The handlers are methods of ``ImageTab`` and are plain functions of plain values, so they can be tested without
a browser; ``build_tab`` wires them to components. Every failure reaches the user as a ``gr.Error``
(``app.errors``); a missing model folder makes the tab explain how to get one instead of breaking the app.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import torch
from PIL import Image

from app import search
from app.errors import user_errors
from app.outputs import OutputStore
from app.registry import ModelRegistry, pipeline_class
from app.settings import MODELS, Settings
from app.tabs.pianoroll import MAX_SEED, check_number
from genmodels.search import run_search, text_to_image_generate_fn
from genmodels.var import defaults as var_defaults

MODEL = "image"
PIPELINE_CLASS = "TextToImagePipeline"
VAR_MODEL = "var"  # the registry's name for VAR pipelines (settings: LINGEN_VAR_MODEL, assets/shapes-var)
VAR_PIPELINE_CLASS = "VARPipeline"
MAX_GUIDANCE = 15.0
DEFAULT_STEPS = 20
DEFAULT_GUIDANCE = 4.0
DEFAULT_VAR_GUIDANCE = var_defaults.GUIDANCE  # VARPipeline's own (ramped from 0 at the first scale to this at the last)
MAX_TOP_K = 1_000_000  # VARPipeline's bound; 0 = off
VAR_NOTE = ("**VAR** draws the picture coarse to fine, one transformer pass per scale: there are no sampler steps. "
            "**Top-k** keeps the k most likely tokens (0 = off), **Top-p** the most likely ones holding that much "
            "probability (1 = off).")
# Half-transparent white, so the picture under the paint stays visible; any paint counts (see painted_pixels).
BRUSH_COLOUR = ("#FFFFFF", 0.6)
EXAMPLE_PROMPTS = ("a red circle to the left of a blue square", "three yellow triangles", "a large green square",
                   "a purple triangle above an orange circle", "a small blue circle and a red triangle")
# After a picture arrives, size the editor's canvas to its box and zoom the picture to fit, centred (as the
# piano-roll tab does: Gradio 6.31's editor can keep a canvas of a stale size). ``window.editor`` is the editor
# mounted last, used only when it is this one; its zoom tool's ``set_zoom("fit")`` centres on the current canvas
# (the toolbar's "Fit to screen" can run before the resize lands). ``data-fits`` counts finished fits.
FIT_IMAGE_EDITOR_JS = """
async () => {
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const root = document.getElementById("image-editor");
  if (!root) return;
  const busy = () => {
    const tracker = root.querySelector('[data-testid="status-tracker"]');
    return tracker && !tracker.classList.contains("hide");
  };
  for (let i = 0; i < 200 && busy(); i++) await sleep(100);
  await sleep(100);
  const editor = window.editor;
  const canvas = root.querySelector("canvas");
  if (editor && editor.target_element && root.contains(editor.target_element) && canvas) {
    const box = editor.target_element.getBoundingClientRect();
    if (Math.abs(canvas.getBoundingClientRect().width - box.width) > 1) editor.resize_canvas(box.width, box.height);
    await sleep(100);
    const zoom = editor.tools && editor.tools.get && editor.tools.get("zoom");
    if (zoom && zoom.set_zoom) zoom.set_zoom("fit");
  }
  root.dataset.fits = String(Number(root.dataset.fits || 0) + 1);
}
"""
GRAMMAR_HINT = ("shapes (circle, square, triangle), colours (red, green, blue, yellow, purple, orange), sizes "
                "(small, large), counts (two to four) and relations (left of, right of, above, below)")


# ---------------------------------------------------------------------------------------------------------
# Pure helpers


def check_prompt(prompt: Any, max_chars: int, *, what: str = "picture", example: str = EXAMPLE_PROMPTS[0]) -> str:
    """``prompt`` stripped; ValueError when it is not text, empty or too long (the message asks to describe
    ``what``, e.g. ``example``)."""
    if not isinstance(prompt, str):
        raise ValueError(f"the prompt must be text, got {type(prompt).__name__}")
    prompt = prompt.strip()
    if not prompt:
        raise ValueError(f"the prompt is empty: describe the {what}, e.g. '{example}'")
    if len(prompt) > max_chars:
        raise ValueError(f"the prompt is {len(prompt)} characters long; up to {max_chars} are accepted")
    return prompt


def prompt_note(prompt: str) -> str:
    """A hint when ``prompt`` is outside the captions of the shapes world (the model still runs)."""
    from genmodels.data.shapes import CaptionError, parse_caption

    try:
        parse_caption(prompt)
    except CaptionError:
        return (f"  \nThe prompt is not a shapes-world caption (those use {GRAMMAR_HINT}, e.g. "
                f"'{EXAMPLE_PROMPTS[0]}'); the model may follow it loosely.")
    return ""


def model_sample_size(folder: Path) -> int | None:
    """The picture side a pipeline folder makes (from its transformer's config, or for VAR its tokenizer's),
    without loading it."""
    for component in ("transformer", "vqvae"):
        try:
            size = json.loads((Path(folder) / component / "config.json").read_text()).get("sample_size")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            continue
        if isinstance(size, int) and not isinstance(size, bool):
            return size
    return None


def _family_choices(settings: Settings, name: str, cls: str, tag: str | None, taken: set[Path]
                    ) -> list[tuple[str, str]]:
    """(label, folder) pairs of one family: its configured folder first (even when missing, so choosing it explains
    what to do), then every other ``cls`` pipeline folder directly under the assets folder. Labels carry ``tag``
    (e.g. "VAR"); the configured folder's says "default" when the family has no tag."""
    default = settings.model_dir(name)
    installed = (default / "model_index.json").is_file()
    notes = [tag] if tag else ["default"]
    if not installed:
        notes.append("not installed")
    choices = [(f"{default.name} ({', '.join(notes)})", str(default))]
    taken.add(default)
    assets = Path(settings.assets_dir)
    if assets.is_dir():
        for sub in sorted(assets.iterdir()):
            if sub.is_dir() and sub not in taken and pipeline_class(sub) == cls:
                choices.append((f"{sub.name} ({tag})" if tag else sub.name, str(sub)))
                taken.add(sub)
    return choices


def model_families(settings: Settings) -> dict[str, list[tuple[str, str]]]:
    """The Model dropdown's (label, folder) pairs per registry name: ``"image"`` (SANA diffusion: the configured
    model, then the other TextToImagePipeline folders of the assets folder) and ``"var"`` (VAR next-scale
    prediction: the configured one, labelled "VAR", then the other VARPipeline folders)."""
    taken: set[Path] = set()
    return {MODEL: _family_choices(settings, MODEL, PIPELINE_CLASS, None, taken),
            VAR_MODEL: _family_choices(settings, VAR_MODEL, VAR_PIPELINE_CLASS, "VAR", taken)}


def model_choices(settings: Settings) -> list[tuple[str, str]]:
    """Dropdown (label, folder) pairs: the SANA family's (the default model first), then the VAR family's."""
    return [choice for family in model_families(settings).values() for choice in family]


def _size(image: Image.Image | np.ndarray) -> tuple[int, int]:
    if isinstance(image, np.ndarray):
        return image.shape[1], image.shape[0]
    return image.size


def _as_pil(image: Image.Image | np.ndarray) -> Image.Image:
    return Image.fromarray(image) if isinstance(image, np.ndarray) else image


def painted_pixels(layer: Image.Image | np.ndarray) -> np.ndarray:
    """``[H, W]`` bool: where a layer carries paint (bright and not fully transparent; white = regenerate).

    The editor's brush is half-transparent white; an opaque black-and-white mask works too (black = keep)."""
    rgba = np.asarray(_as_pil(layer).convert("RGBA"), dtype=np.float32)
    return (rgba[..., 3] > 0) & (rgba[..., :3].mean(-1) > 127)


def resize_exact(array: np.ndarray, size: int) -> np.ndarray | None:
    """``array`` (``[S, S, ...]``) scaled to ``size`` by whole blocks (block means down, repeats up); None
    when neither side divides the other. Block means are float (coverage) for bool input."""
    side = array.shape[0]
    if side >= size and side % size == 0:
        k = side // size
        return array.reshape(size, k, size, k, *array.shape[2:]).mean(axis=(1, 3))
    if side < size and size % side == 0:
        k = size // side
        return np.repeat(np.repeat(array, k, axis=0), k, axis=1).astype(np.float64)
    return None


@dataclass(frozen=True)
class InpaintInput:
    """What the pipeline inpaints: ``image`` ``[N, N, 3]`` uint8, ``mask`` ``[N, N]`` bool (True = generate),
    and ``note``: what was done to the user's picture to fit the model ("" when it fitted exactly)."""

    image: np.ndarray
    mask: np.ndarray
    note: str


def inpaint_input(value: dict[str, Any] | None, size: int, *, max_pixels: int) -> InpaintInput:
    """The image and mask for an ``N × N`` model (``N = size``) from an ImageEditor value (module docstring)."""
    background = (value or {}).get("background")
    if background is None:
        raise ValueError("inpainting needs a picture: upload one into the editor, or press 'Use result as "
                         "inpainting input' (or untick Inpaint to generate from the prompt alone)")
    layers = [layer for layer in (value.get("layers") or []) if layer is not None]
    for image in (background, *layers):
        w, h = _size(image)
        if w * h > max_pixels:
            raise ValueError(f"the editor image is too large ({w}×{h} pixels)")
    width, height = _size(background)
    painted = np.zeros((height, width), dtype=bool)
    for layer in layers:
        if _size(layer) != (width, height):
            w, h = _size(layer)
            raise ValueError(f"the mask layer is {w}×{h} pixels but the picture is {width}×{height}: paint in the "
                             "editor over the picture")
        painted |= painted_pixels(layer)
    if not painted.any():
        raise ValueError("the mask covers nothing: paint white over the part of the picture to regenerate (or "
                         "untick Inpaint to generate a new picture from the prompt alone)")

    side = min(width, height)
    x0, y0 = (width - side) // 2, (height - side) // 2
    picture = np.asarray(_as_pil(background).convert("RGB"), dtype=np.uint8)[y0:y0 + side, x0:x0 + side]
    painted = painted[y0:y0 + side, x0:x0 + side]
    if not painted.any():
        raise ValueError(f"the paint lies outside the centred {side}×{side} square of the {width}×{height} "
                         "picture, which is all the model uses: paint inside it, or upload a square picture")
    notes = [f"cropped to its centred {side}×{side} square"] if (width, height) != (side, side) else []

    exact = resize_exact(picture.astype(np.float64), size)
    if exact is not None:
        image = np.rint(exact).astype(np.uint8)
        lossless = side == size or (side > size and np.array_equal(resize_exact(image, side).astype(np.uint8),
                                                                     picture))
    else:
        image = np.asarray(Image.fromarray(picture).resize((size, size), Image.LANCZOS), dtype=np.uint8)
        lossless = False
    if not lossless:
        notes.append(f"resized from {side}×{side} to {size}×{size}, the model's size")

    coverage = resize_exact(painted, size)
    if coverage is None:
        coverage = np.asarray(Image.fromarray(painted.astype(np.float32), "F").resize((size, size), Image.BOX))
    mask = coverage >= 0.5
    if not mask.any():  # only thin strokes: keep every model pixel they touch
        mask = coverage > 0
    note = f"The {width}×{height} picture was {' and '.join(notes)}; that is what is kept outside the mask." \
        if notes else ""
    return InpaintInput(image=image, mask=mask, note=note)


def magnified(image: Image.Image, scale: int) -> Image.Image:
    """``image`` enlarged ``scale`` times with nearest neighbour (every model pixel a sharp square)."""
    return image.resize((image.width * scale, image.height * scale), Image.NEAREST)


def with_own_scheduler(pipe: Any) -> Any:
    """A view of ``pipe`` sharing its weights but with a fresh scheduler: diffusers schedulers keep per-run
    state (timesteps, solver history), so concurrent requests must not share one. The pipeline's planners
    (``prompt_planner``, ``layout_planner``) come along."""
    scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
    planners = {k: pipe.config[k] for k in ("prompt_planner", "layout_planner") if pipe.config.get(k) is not None}
    view = type(pipe)(transformer=pipe.transformer, scheduler=scheduler, text_encoder=pipe.text_encoder, **planners)
    view.set_progress_bar_config(disable=True)
    return view


def var_sampling(scales: int, top_k: int, top_p: float) -> str:
    """How a VAR picture was sampled, for the statistics line."""
    return (f"VAR, {scales} scales · top-k {top_k or 'off'} · top-p "
            f"{'off' if top_p >= 1 else f'{top_p:g}'}")


def planned_note(prompt: str, out: Any) -> str:
    """A line naming the layout caption the model drew when a prompt planner rewrote ``prompt``, else ""."""
    planned = getattr(out, "prompts", None)
    if planned and planned[0] != prompt:
        return f"  \nDrawn from the planned layout: *{planned[0]}*"
    return ""


def result_stats(size: int, *, steps: int | None, nfe: int, guidance: float, seed: int, seconds: float,
                 job: InpaintInput | None, sampling: str | None = None) -> str:
    """The statistics line; ``sampling`` (e.g. ``var_sampling(...)``) stands for "N steps" when given."""
    what = f"{size}×{size} picture"
    if job is not None:
        n = int(job.mask.sum())
        what = f"inpainted {n} of {size * size} pixels ({100 * n / (size * size):.0f}%) of the {size}×{size} picture"
    how = sampling if sampling is not None else f"{steps} steps"
    text = (f"{what[0].upper()}{what[1:]} in **{seconds:.2f} s** · {how} · {nfe} network evaluations (nfe) · "
            f"guidance {guidance:g} · seed {seed}")
    return f"{text}  \n{job.note}" if job is not None and job.note else text


@dataclass(frozen=True)
class Sampler:
    """A request's sampler settings: ``var`` (VAR next-scale prediction, else SANA diffusion), ``steps`` (SANA;
    None for VAR), ``guidance``, ``top_k`` and ``top_p`` (VAR)."""

    var: bool
    steps: int | None
    guidance: float
    top_k: int = 0
    top_p: float = 1.0

    def call_kwargs(self) -> dict[str, Any]:
        """The pipeline's keyword arguments for these settings."""
        if self.var:
            return {"guidance_scale": self.guidance, "top_k": self.top_k, "top_p": self.top_p}
        return {"num_inference_steps": self.steps, "guidance_scale": self.guidance}

    def describe(self, pipe: Any) -> str | None:
        """``result_stats``'s ``sampling`` (None: "N steps")."""
        return var_sampling(pipe.transformer.num_scales, self.top_k, self.top_p) if self.var else None


# ---------------------------------------------------------------------------------------------------------
# Event handlers


class ImageTab:
    """The tab's event handlers, bound to the app's settings, model registry and output folder."""

    def __init__(self, settings: Settings, registry: ModelRegistry):
        self.settings = settings
        self.registry = registry
        families = model_families(settings)
        self.choices = [choice for family in families.values() for choice in family]
        # dropdown value (folder) -> registry name ("image": SANA diffusion, "var": VAR next-scale prediction)
        self.families = {value: name for name, family in families.items() for _label, value in family}
        self.store = OutputStore(Path(settings.output_dir) / "image", settings.output_ttl_s)

    @property
    def default_folder(self) -> Path:
        return self.settings.model_dir(MODEL)

    def model_status(self) -> str:
        """Markdown for the top of the tab: what the default model is, or what to do when it is missing; the same
        for the VAR model."""
        folder = self.default_folder
        if self.registry.is_available(MODEL, folder):
            size = model_sample_size(folder)
            status = f"Model `{folder.name}`: {f'{size}×{size}' if size else 'square'} pictures."
        else:
            spec = MODELS[MODEL]
            others = [label for label, value in self.choices[1:] if self._available(value)]
            alternative = f" Meanwhile pick another model: {', '.join(others)}." if others else ""
            status = (f"**The {spec.title} model is not installed**: no pipeline folder at `{folder}`. Build it with "
                      f"`{spec.build_command}` (or point `LINGEN_IMAGE_MODEL` at a TextToImagePipeline folder) and "
                      f"restart the app; until then Generate explains this.{alternative}")
        var_folder = self.settings.model_dir(VAR_MODEL)
        if self.registry.is_available(VAR_MODEL, var_folder):
            size = model_sample_size(var_folder)
            var_status = f"VAR model `{var_folder.name}`: {f'{size}×{size}' if size else 'square'} pictures."
        else:
            var_status = (f"The VAR model is not installed: no pipeline folder at `{var_folder}`. Build it with "
                          f"`{MODELS[VAR_MODEL].build_command}` (or point `LINGEN_VAR_MODEL` at a VARPipeline "
                          "folder) and restart the app.")
        return f"{status}  \n{var_status}"

    def _available(self, value: str) -> bool:
        return self.registry.is_available(self.families.get(value, MODEL), value)

    def folder_of(self, model: Any) -> Path:
        """The pipeline folder the dropdown value names (only folders this server offers)."""
        for _label, value in self.choices:
            if model == value:
                return Path(value)
        if model is None or model == "":
            return self.default_folder
        labels = ", ".join(label for label, _ in self.choices)
        raise ValueError(f"unknown model {model!r}; choose one of: {labels}")

    def family_of(self, folder: Path) -> str:
        """The registry name of the folder's family: ``"var"`` for a VAR choice, else ``"image"``."""
        return self.families.get(str(folder), MODEL)

    def model_changed(self, model: Any) -> tuple[Any, Any, Any, Any, Any]:
        """The Model dropdown changed: Steps for a SANA model; Top-k, Top-p and the VAR note for a VAR one; the
        family's default guidance. (Steps, Top-k, Top-p, note, Guidance) updates; an unknown value changes
        nothing (Generate explains it)."""
        try:
            var = self.family_of(self.folder_of(model)) == VAR_MODEL
        except ValueError:
            return gr.update(), gr.update(), gr.update(), gr.update(), gr.update()
        return (gr.update(visible=not var), gr.update(visible=var), gr.update(visible=var), gr.update(visible=var),
                gr.update(value=DEFAULT_VAR_GUIDANCE if var else DEFAULT_GUIDANCE))

    def check_sampler(self, var: bool, steps: Any, guidance: Any, top_k: Any, top_p: Any) -> Sampler:
        """The request's sampler settings, checked: Steps for SANA (ignored for VAR: it has none), Top-k and Top-p
        for VAR (ignored for SANA)."""
        guidance = check_number("guidance", guidance, 0, MAX_GUIDANCE)
        if not var:
            return Sampler(False, check_number("steps", steps, 1, self.settings.max_steps, integer=True), guidance)
        top_k = check_number("top-k", top_k, 0, MAX_TOP_K, integer=True)
        top_p = check_number("top-p", top_p, 0, 1)
        if top_p <= 0:
            raise ValueError("top-p must be above 0 (1 = off), got 0")
        return Sampler(True, None, guidance, top_k, top_p)

    @user_errors
    def generate(self, prompt: str, model: str, steps: float, guidance: float, seed: float, inpaint: bool,
                 editor: dict[str, Any] | None, strategy: str = search.NONE, n: float = search.DEFAULT_N,
                 verifier: str = "clip", top_k: float = var_defaults.TOP_K,
                 top_p: float = var_defaults.TOP_P,
                 progress: gr.Progress = gr.Progress()  # noqa: B008
                 ) -> tuple[Image.Image, str, str, np.ndarray, search.Shown | None]:
        """Generate (or inpaint) one picture, or search ``n`` candidates (seeds ``seed``, ``seed + 1``, …) for the
        one ``verifier`` scores best; returns it magnified, the original-size PNG's path, the statistics, the
        result (``[N, N, 3]`` uint8, for "Use result as inpainting input") and the search's candidates (None
        without search). With a VAR model ``steps`` is ignored and ``top_k`` / ``top_p`` apply; with a SANA model
        the other way round."""
        s = self.settings
        prompt = check_prompt(prompt, s.max_prompt_chars)
        folder = self.folder_of(model)
        name = self.family_of(folder)
        sampler = self.check_sampler(name == VAR_MODEL, steps, guidance, top_k, top_p)
        seed = check_number("seed", seed, 0, MAX_SEED, integer=True)
        if not isinstance(inpaint, bool):
            raise ValueError(f"inpaint must be true or false, got {inpaint!r}")
        options = search.check_search(strategy, n, verifier, verifiers=search.IMAGE_VERIFIERS, max_n=s.max_search_n,
                                      seed=seed, max_seed=MAX_SEED)

        progress(0.0, desc="loading the model")
        pipe = self.registry.get(name, folder)
        size = pipe.default_size
        job = inpaint_input(editor, size, max_pixels=s.max_image_pixels) if inpaint else None
        inputs = {} if job is None else {"mask": job.mask, "image": job.image}
        # VAR keeps no per-run state in the pipeline (nothing like a scheduler), so requests share it
        runner = pipe if sampler.var else with_own_scheduler(pipe)
        if options.active:
            return self._search(runner, prompt, options, sampler=sampler, seed=seed, job=job, inputs=inputs,
                                progress=progress)
        desc = "inpainting" if job is not None else "generating"
        unit = "scales" if sampler.var else "steps"

        def on_step(done: int, total: int) -> None:
            progress((done, total), desc=desc, unit=unit)

        t0 = time.perf_counter()
        out = runner(prompt, generator=torch.Generator().manual_seed(seed), output_type="pil", callback=on_step,
                     **sampler.call_kwargs(), **inputs)
        seconds = time.perf_counter() - t0

        image = out.images[0]
        stats = result_stats(size, steps=sampler.steps, nfe=out.nfe, guidance=sampler.guidance, seed=seed,
                             seconds=seconds, job=job, sampling=sampler.describe(pipe))
        return (*self._result(image, seed, stats + planned_note(prompt, out) + prompt_note(prompt)), None)

    def _search(self, pipe: Any, prompt: str, options: search.SearchOptions, *, sampler: Sampler, seed: int,
                job: InpaintInput | None, inputs: dict[str, np.ndarray], progress: Any
                ) -> tuple[Image.Image, str, str, np.ndarray, search.Shown]:
        """``generate`` with a search: ``options.n`` candidates, the verifier's choice shown, all of them listed."""
        progress(0.0, desc="loading the verifier")
        verifier = search.image_verifier(self.registry, options.verifier)
        tracker = search.CandidateProgress(progress, options.n, options.verifier)
        generate_fn = text_to_image_generate_fn(pipe, prompt, callback=tracker.on_step, **sampler.call_kwargs(),
                                                **inputs)
        # VAR one candidate a call: its list-of-generators call loops over the prompts anyway, and one candidate a
        # call keeps the per-scale progress counting one candidate at a time
        batch = 1 if sampler.var else self.settings.search_batch
        result = run_search(options.strategy, verifier=verifier, context={"prompt": prompt},
                            generate_fn=tracker.wrap(generate_fn), n=options.n,
                            seeds=range(seed, seed + options.n), batch_size=batch)
        image = Image.fromarray(result.output)
        stats = result_stats(image.width, steps=sampler.steps, nfe=result.nfe, guidance=sampler.guidance,
                             seed=result.seed, seconds=result.seconds, job=job, sampling=sampler.describe(pipe))
        pictures = [magnified(Image.fromarray(c), self.settings.image_scale) for c in result.candidates.outputs]
        return (*self._result(image, result.seed, stats + prompt_note(prompt)),
                search.shown(result, options, pictures))

    def _result(self, image: Image.Image, seed: int, stats: str) -> tuple[Image.Image, str, str, np.ndarray]:
        """The outputs for ``image``: magnified, saved at the model's size, the statistics, the array."""
        path = self.store.new_dir() / f"lingen-image-seed{seed}.png"
        image.save(path)
        return magnified(image, self.settings.image_scale), str(path), stats, np.asarray(image)

    @user_errors
    def use_result(self, result: np.ndarray | None) -> tuple[dict[str, Any], bool]:
        """Put the last result (magnified, nothing painted) into the editor and tick Inpaint."""
        if result is None:
            raise ValueError("there is no result yet: press Generate first")
        image = magnified(Image.fromarray(np.asarray(result, dtype=np.uint8)), self.settings.image_scale)
        return {"background": image, "layers": [], "composite": image}, True


# ---------------------------------------------------------------------------------------------------------
# Layout


def instructions(size: int | None, scale: int) -> str:
    n = f"{size}×{size}" if size else "N×N"
    return f"""\
**1.** Describe a picture, e.g. *{EXAMPLE_PROMPTS[0]}*; the model knows {GRAMMAR_HINT}.

**2.** Press **Generate**. The result is shown ×{scale}; the download is the model's own {n} PNG.

**3.** To change part of it, press **Use result as inpainting input** (or upload a picture into the editor below),
paint **white** over what should change and press Generate again: every unpainted pixel is kept exactly.

*Inpainting details:* the model works on {n} pictures; a model pixel is regenerated when at least half of it is
painted. A picture of another size is cropped to its centred square and resized to {n} (the result says so);
results shown ×{scale} come back pixel for pixel.
"""


def build_tab(demo: gr.Blocks, settings: Settings, registry: ModelRegistry) -> ImageTab:
    """The "Image" tab, inside ``demo``'s context. Endpoints: ``/generate_image`` (prompt, model, steps, guidance,
    seed, inpaint, editor, strategy, N, verifier, top-k, top-p), ``/image_search_candidates`` (the last search's
    candidates with their scores, and its line: NFE and wall time), ``/use_image_result``."""
    tab = ImageTab(settings, registry)
    size = model_sample_size(tab.default_folder)
    shown = f"{size * settings.image_scale}×{size * settings.image_scale}" if size else f"×{settings.image_scale}"
    with gr.Tab("Image", id="image"):
        result = gr.State(None)  # the last result, [N, N, 3] uint8
        searched = gr.State(None)  # the last result's search (search.Shown), None without one
        gr.Markdown(instructions(size, settings.image_scale), elem_classes=["instructions"])
        gr.Markdown(tab.model_status(), elem_id="image-model-status")
        with gr.Row():
            with gr.Column(scale=1):
                prompt = gr.Textbox(label="Prompt", placeholder=f"e.g. {EXAMPLE_PROMPTS[0]}", lines=2,
                                    max_length=settings.max_prompt_chars, elem_id="image-prompt")
                gr.Examples([[p] for p in EXAMPLE_PROMPTS], inputs=[prompt], label="Try a prompt",
                            api_visibility="private")
                model = gr.Dropdown(tab.choices, value=tab.choices[0][1], label="Model",
                                    info="SANA (diffusion, sampler steps) or VAR (next-scale prediction)",
                                    elem_id="image-model")
                var_first = tab.family_of(Path(tab.choices[0][1])) == VAR_MODEL
                var_note = gr.Markdown(VAR_NOTE, visible=var_first, elem_id="image-var-note")
                with gr.Row():
                    steps = gr.Slider(1, settings.max_steps, value=min(DEFAULT_STEPS, settings.max_steps), step=1,
                                      label="Steps (fewer = faster, rougher)", visible=not var_first,
                                      elem_id="image-steps")
                    guidance = gr.Slider(0, MAX_GUIDANCE, value=DEFAULT_VAR_GUIDANCE if var_first else DEFAULT_GUIDANCE,
                                         step=0.5, label="Guidance (higher = follows the prompt more closely)",
                                         elem_id="image-guidance")
                with gr.Row():
                    top_k = gr.Number(value=var_defaults.TOP_K, precision=0, minimum=0, maximum=MAX_TOP_K,
                                      label="Top-k (0 = off)", visible=var_first, elem_id="image-top-k")
                    top_p = gr.Slider(0.05, 1.0, value=var_defaults.TOP_P, step=0.05, label="Top-p (1 = off)",
                                      visible=var_first, elem_id="image-top-p")
                with gr.Row():
                    seed = gr.Number(value=0, precision=0, minimum=0, maximum=MAX_SEED, label="Seed")
                    inpaint = gr.Checkbox(False, label="Inpaint: regenerate only the part painted below",
                                          elem_id="image-inpaint")
                strategy, n, verifier = search.search_controls(settings, search.IMAGE_VERIFIERS, "image")
                generate_button = gr.Button("Generate", variant="primary", size="lg", elem_id="image-generate")
            with gr.Column(scale=1):
                result_image = gr.Image(label=f"Result (shown {shown})", type="pil", format="png",
                                        interactive=False, height=360, buttons=["fullscreen"],
                                        elem_id="image-result")
                stats = gr.Markdown(label="Result statistics", elem_id="image-stats")
                with gr.Row():
                    download = gr.File(label=f"PNG at the model's size{f' ({size}×{size})' if size else ''}",
                                       interactive=False, height=80, elem_id="image-file", scale=2)
                    use_button = gr.Button("Use result as inpainting input", elem_id="image-use-result", scale=1)
                candidates_box, candidates, search_line = search.candidates_display("image")
        editor = gr.ImageEditor(
            label="Inpainting: upload a picture (or use a result) and paint white over what should change",
            type="pil", image_mode="RGBA", format="png", sources=("upload", "clipboard"), transforms=(),
            brush=gr.Brush(colors=[BRUSH_COLOUR], default_color=BRUSH_COLOUR, color_mode="fixed", default_size=16),
            eraser=gr.Eraser(default_size=16), layers=False, canvas_size=(512, 512), fixed_canvas=False,
            height=440, buttons=["fullscreen"], elem_id="image-editor")

    inputs = [prompt, model, steps, guidance, seed, inpaint, editor, strategy, n, verifier, top_k, top_p]
    outputs = [result_image, download, stats, result, searched]
    display = (searched, candidates_box, candidates, search_line)
    search.wire_display(generate_button.click(tab.generate, inputs, outputs, api_name="generate_image"), *display,
                        api_name="image_search_candidates")
    search.wire_display(prompt.submit(tab.generate, inputs, outputs, api_visibility="private"), *display,
                        api_name=None)
    model.change(tab.model_changed, model, [steps, top_k, top_p, var_note, guidance], api_visibility="private",
                 queue=False)
    fit = {"fn": None, "js": FIT_IMAGE_EDITOR_JS, "api_visibility": "private", "queue": False}
    use_button.click(tab.use_result, result, [editor, inpaint], api_name="use_image_result").success(**fit)
    editor.upload(**fit)
    # Painting says the user means to inpaint; clearing the editor says not (in the browser, no round trip).
    editor.input(None, None, inpaint, js="() => true", api_visibility="private")
    editor.clear(None, None, inpaint, js="() => false", api_visibility="private")
    return tab
