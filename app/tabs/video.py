"""The "Video" tab: text-to-video and clip continuation with the moving-shapes model (Diffusion Mamba).

Workflow: type a prompt → Generate → the clip plays in the page, magnified ×8 (nearest neighbour, so each model
pixel is a sharp square), with the MP4 and a GIF at the model's own size to download. To continue a clip, give
its first frames (a video, a GIF / WebP, or several images in the order listed): they are kept exactly as the
clip's first frames and the model makes the rest. "Test-time search" makes N candidate clips and keeps the one a
CLIP-based video verifier scores best (``app.search``); they are all shown. Its Tree-of-Frames strategy grows N
clips unit by unit instead (a quarter of the frames to make per unit, each unit the continuation of its branch),
pruning the branches at the median after Video-T1's units; the final leaves are shown. "Search on drafts" (off by
default) runs either search on cheap drafts as measured in BENCHMARKS.md: best-of-N / tournament judge N clips
drawn at a fifth of the steps and draw the best ⌈N/4⌉ (the tournament's winner) again in full; a tree chooses
each root's first unit among 6 drafts and continues every surviving branch twice, keeping the better.

Given frames, the rules a user can rely on (also shown in the tab):

* the model works on ``N × N`` frames (32 × 32 for the shipped model);
* square frames whose side is a whole multiple (or a whole fraction) of ``N``, such as a clip the app shows ×8,
  are scaled by whole blocks, so a downloaded result comes back pixel for pixel (an MP4 close to it: H.264 is
  lossy; the GIF exactly);
* any other frames are cropped to their centred square and resized (Lanczos) to ``N × N``, and the result's
  statistics say so;
* the clip's first frames equal the (resized) given frames exactly.

The handlers are methods of ``VideoTab`` and are plain functions of plain values, so they can be tested without
a browser; ``build_tab`` wires them to components. Every failure reaches the user as a ``gr.Error``
(``app.errors``); a missing model folder makes the tab explain how to get one instead of breaking the app.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import torch
from PIL import Image

from app import search
from app.errors import user_errors
from app.outputs import OutputStore
from app.registry import ModelRegistry
from app.settings import MODELS, Settings
from app.tabs.image import MAX_GUIDANCE, check_prompt, resize_exact, with_own_scheduler
from app.tabs.pianoroll import MAX_SEED, check_number
from genmodels.pipelines.video_io import DEFAULT_FPS, MAX_FRAME_PIXELS, read_frames, write_gif, write_mp4
from genmodels.search import run_search
from genmodels.search.video import (
    TREE_DRAFT_EXTEND,
    TREE_EXTEND_FRACTION,
    TREE_FIRST_STAGE,
    TREE_FIRST_STAGES,
    TREE_GROW_UNITS,
    TREE_SCREEN,
    TREE_UNITS,
    VideoChunkGenerator,
    draft_steps,
    drafts_drawn_in_full,
    text_to_video_generate_fn,
    tree_extend_steps,
    tree_frames_per_unit,
    tree_seed_budget,
    video_tree_config,
)

MODEL = "video"
DEFAULT_STEPS = 20
DEFAULT_GUIDANCE = 4.0
MIN_FRAMES = 2
EXAMPLE_PROMPTS = ("a red circle moves to the right", "a blue square moves down",
                   "a video of a green triangle moving up", "a yellow circle stays still",
                   "a red circle moves left and a blue square moves down")
GRAMMAR_HINT = ("one or two shapes (circle, square, triangle) in a colour (red, green, blue, yellow, purple, "
                "orange), each moving left, right, up or down, or staying still")


# ---------------------------------------------------------------------------------------------------------
# Pure helpers


def prompt_note(prompt: str) -> str:
    """A hint when ``prompt`` is outside the moving-shapes captions (the model still runs)."""
    from genmodels.data.moving_shapes import MovingShapesError, parse_video_caption

    try:
        parse_video_caption(prompt)
    except MovingShapesError:
        return (f"  \nThe prompt is not a moving-shapes caption (those have {GRAMMAR_HINT}, e.g. "
                f"'{EXAMPLE_PROMPTS[0]}'); the model may follow it loosely.")
    return ""


def model_clip_shape(folder: Path) -> tuple[int, int] | None:
    """(frames, side) of the clips a pipeline folder's transformer makes by default (from its config, without
    loading it); None when unreadable."""
    try:
        config = json.loads((Path(folder) / "transformer" / "config.json").read_text())
        frames, side = config.get("num_frames"), config.get("sample_size")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return None
    ok = all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (frames, side))
    return (frames, side) if ok else None


def uploaded_frames(files: Any, *, max_frames: int, max_pixels: int) -> np.ndarray | None:
    """The frames to continue from the upload box: None for no upload; one file is a video, a GIF / WebP or an
    image, several files are images taken in the order listed. ``[K, H, W, 3]`` uint8."""
    if files is None or files == []:
        return None
    if isinstance(files, (str, Path)):
        files = [files]
    if not isinstance(files, Sequence) or not all(isinstance(f, (str, Path)) for f in files):
        raise ValueError("the first frames must be uploaded files")
    source = files[0] if len(files) == 1 else list(files)
    return read_frames(source, max_frames=max_frames, max_pixels=max_pixels)


def fit_frames(frames: np.ndarray, size: int) -> tuple[np.ndarray, str]:
    """``frames`` ``[K, H, W, 3]`` at the model's ``size × size`` (module docstring) and a note on what was done
    ("" when they fitted exactly)."""
    k, height, width = frames.shape[:3]
    side = min(height, width)
    y0, x0 = (height - side) // 2, (width - side) // 2
    square = frames[:, y0:y0 + side, x0:x0 + side]
    notes = [f"cropped to their centred {side}×{side} square"] if (height, width) != (side, side) else []
    if side == size:
        return square, _note(notes, width, height)
    exact = resize_exact(square.transpose(1, 2, 0, 3).astype(np.float64), size)  # [S, S, K, 3] by whole blocks
    if exact is not None:
        fitted = np.rint(exact).astype(np.uint8).transpose(2, 0, 1, 3)
        notes.append(f"scaled {'down' if side > size else 'up'} from {side}×{side} to {size}×{size} by whole blocks")
    else:
        fitted = np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.LANCZOS)) for f in square])
        notes.append(f"resized from {side}×{side} to {size}×{size}, the model's size")
    return fitted, _note(notes, width, height)


def _note(notes: list[str], width: int, height: int) -> str:
    return f"The {width}×{height} given frames were {' and '.join(notes)}." if notes else ""


def layout_note(layout: Any) -> str:
    """Markdown naming a planned layout's objects and where each starts and ends (top-left corners of the
    boxes, pixels), or "" without one."""
    if layout is None:
        return ""
    paths = [f"{phrase} from ({int(b[0, 0])}, {int(b[0, 1])}) to ({int(b[-1, 0])}, {int(b[-1, 1])})"
             for phrase, b in zip(layout.phrases, layout.boxes, strict=True)]
    return "Drawn along a planned layout: " + "; ".join(paths) + "."


def result_stats(clip: np.ndarray, *, given: int, steps: int, nfe: int, guidance: float, seed: int, seconds: float,
                 fps: float, note: str) -> str:
    frames, height, width = clip.shape[:3]
    what = f"{frames}-frame {width}×{height} clip ({frames / fps:.1f} s at {fps:g} fps)"
    if given:
        what += f", continuing {given} given frame{'s' if given > 1 else ''}"
    text = (f"{what[0].upper()}{what[1:]} in **{seconds:.2f} s** · {steps} steps · {nfe} network evaluations (nfe) · "
            f"guidance {guidance:g} · seed {seed}")
    return f"{text}  \n{note}" if note else text


# ---------------------------------------------------------------------------------------------------------
# Event handlers


class VideoTab:
    """The tab's event handlers, bound to the app's settings, model registry and output folder."""

    def __init__(self, settings: Settings, registry: ModelRegistry):
        self.settings = settings
        self.registry = registry
        self.store = OutputStore(Path(settings.output_dir) / "video", settings.output_ttl_s)

    @property
    def folder(self) -> Path:
        return self.settings.model_dir(MODEL)

    def model_status(self) -> str:
        """Markdown for the top of the tab: what the model makes, or what to do when it is missing."""
        if self.registry.is_available(MODEL):
            shape = model_clip_shape(self.folder)
            what = f"{shape[0]}-frame {shape[1]}×{shape[1]} clips by default" if shape else "clips"
            return f"Model `{self.folder.name}`: {what}."
        spec = MODELS[MODEL]
        return (f"**The {spec.title} model is not installed**: no pipeline folder at `{self.folder}`. Build it with "
                f"`{spec.build_command}` (or point `LINGEN_VIDEO_MODEL` at a TextToVideoPipeline folder) and restart "
                "the app; until then Generate explains this.")

    @user_errors
    def generate(self, prompt: str, frames: float, steps: float, guidance: float, seed: float, first_frames: Any,
                 strategy: str = search.NONE, n: float = search.DEFAULT_N, verifier: str = "clip-video-direction",
                 drafts: bool = False, progress: gr.Progress = gr.Progress()  # noqa: B008
                 ) -> tuple[str, list[str], str, search.Shown | None]:
        """Generate (or continue) one clip, or search ``n`` candidates (seeds ``seed``, ``seed + 1``, …) for the one
        ``verifier`` scores best (on drafts when ``drafts``: the module docstring); returns the MP4 shown
        (magnified), the files to download (that MP4 and a GIF at the model's size), the statistics and the
        search's candidates (None without search)."""
        s = self.settings
        prompt = check_prompt(prompt, s.max_prompt_chars, what="clip", example=EXAMPLE_PROMPTS[0])
        frames = check_number("frames", frames, MIN_FRAMES, s.max_frames, integer=True)
        steps = check_number("steps", steps, 1, s.max_steps, integer=True)
        guidance = check_number("guidance", guidance, 0, MAX_GUIDANCE)
        seed = check_number("seed", seed, 0, MAX_SEED, integer=True)
        options = search.check_search(strategy, n, verifier, verifiers=search.VIDEO_VERIFIERS, max_n=s.max_search_n,
                                      seed=seed, max_seed=MAX_SEED, strategies=search.VIDEO_STRATEGIES)
        if not isinstance(drafts, bool):
            raise ValueError(f"drafts must be true or false, got {drafts!r}")
        preview = draft_steps(steps) if drafts and options.active else None  # clear error for a 1-step clip
        given = uploaded_frames(first_frames, max_frames=s.max_frames, max_pixels=min(s.max_image_pixels,
                                                                                      MAX_FRAME_PIXELS))

        progress(0.0, desc="loading the model")
        pipe = self.registry.get(MODEL)
        note = ""
        if given is not None:
            given, note = fit_frames(given, pipe.default_size)
            if len(given) >= frames:
                raise ValueError(f"{len(given)} frames given for a {frames}-frame clip: nothing is left to generate; "
                                 f"raise Frames above {len(given)} or give fewer frames")
        call_kwargs = {"num_frames": frames, "num_inference_steps": steps, "guidance_scale": guidance,
                       "first_frames": given}
        if options.strategy == search.TREE:
            return self._tree(prompt, pipe, options, seed, call_kwargs, note, progress, preview)
        if options.active:
            progress(0.0, desc="loading the verifier")
            judge = search.video_verifier(self.registry, options.verifier)
            tracker = search.CandidateProgress(progress, options.n, options.verifier,
                                               noun="draft" if preview else "candidate")
            drawn = with_own_scheduler(pipe)
            steps_of_candidates = {**call_kwargs, "num_inference_steps": preview} if preview else call_kwargs
            generate_fn = text_to_video_generate_fn(drawn, prompt, callback=tracker.on_step, **steps_of_candidates)
            final_fn, final_k = None, 1
            if preview:
                final_k = drafts_drawn_in_full(options.n) if options.strategy == "best-of-n" else 1

                def in_full(done: int, total: int) -> None:
                    progress((done, total), desc=f"drawing the best {'draft' if final_k == 1 else f'{final_k} drafts'}"
                             " in full", unit="steps")

                final_fn = text_to_video_generate_fn(drawn, prompt, callback=in_full, **call_kwargs)
            found = run_search(options.strategy, verifier=judge, context={"prompt": prompt},
                               generate_fn=tracker.wrap(generate_fn), n=options.n,
                               seeds=range(seed, seed + options.n), batch_size=s.search_batch, final_fn=final_fn,
                               final_k=final_k)
            clip, seed, nfe, seconds = found.output, found.seed, found.nfe, found.seconds
        else:
            desc = "continuing" if given is not None else "generating"

            def on_step(done: int, total: int) -> None:
                progress((done, total), desc=desc, unit="steps")

            t0 = time.perf_counter()
            out = with_own_scheduler(pipe)(prompt, generator=torch.Generator().manual_seed(seed), output_type="np",
                                           callback=on_step, **call_kwargs)
            clip, nfe, seconds = out.frames[0], out.nfe, time.perf_counter() - t0
            note = f"{note} {layout_note(out.layouts[0] if out.layouts else None)}".strip()

        folder, mp4, gif = self._write(clip, f"seed{seed}")
        stats = result_stats(clip, given=0 if given is None else len(given), steps=steps, nfe=nfe, guidance=guidance,
                             seed=seed, seconds=seconds, fps=DEFAULT_FPS, note=note) + prompt_note(prompt)
        if not options.active:
            return str(mp4), [str(mp4), str(gif)], stats, None
        gifs = [str(write_gif(c, folder / f"candidate-seed{cs}.gif", fps=DEFAULT_FPS, scale=s.video_scale))
                for c, cs in zip(found.candidates.outputs, found.candidates.seeds, strict=True)]
        return str(mp4), [str(mp4), str(gif)], stats, search.shown(found, options, gifs, draft_steps=preview)

    def _write(self, clip: np.ndarray, name: str) -> tuple[Path, Path, Path]:
        """A new output folder with the clip as the magnified MP4 shown and a GIF at the model's size."""
        folder = self.store.new_dir()
        mp4 = write_mp4(clip, folder / f"lingen-video-{name}.mp4", fps=DEFAULT_FPS, scale=self.settings.video_scale)
        return folder, mp4, write_gif(clip, folder / f"lingen-video-{name}.gif", fps=DEFAULT_FPS)

    def _tree(self, prompt: str, pipe: Any, options: search.SearchOptions, seed: int, call_kwargs: dict, note: str,
              progress: Any, preview: int | None = None) -> tuple[str, list[str], str, search.Shown]:
        """A Tree-of-Frames search (``options.n`` roots; the module docstring), its seeds from ``seed`` on;
        ``preview``: screen each root's first unit by drafts of that many steps."""
        frames, given = call_kwargs.pop("num_frames"), call_kwargs["first_frames"]
        to_make = frames - (0 if given is None else len(given))
        per_unit = tree_frames_per_unit(to_make)
        gen = VideoChunkGenerator(with_own_scheduler(pipe), prompt, frames, per_unit, grow=TREE_GROW_UNITS,
                                  extend_steps=tree_extend_steps(call_kwargs["num_inference_steps"]),
                                  preview_steps=preview, **call_kwargs)
        if preview:  # the configuration measured in BENCHMARKS.md: 6 drafts, the best drawn once, 2 draws later
            config = video_tree_config(options.n, gen.num_units, 1, TREE_SCREEN, TREE_DRAFT_EXTEND)
        else:
            config = video_tree_config(options.n, gen.num_units)
        budget = tree_seed_budget(config)
        if seed + budget - 1 > MAX_SEED:
            raise ValueError(f"a Tree-of-Frames search from {options.n} roots may use {budget} seeds, {seed} to "
                             f"{seed + budget - 1}; the seed must be at most {MAX_SEED - budget + 1}")
        progress(0.0, desc="loading the verifier")
        judge = search.video_verifier(self.registry, options.verifier)
        tracker = search.TreeProgress(progress, gen)
        gen.call_kwargs["callback"] = tracker.on_step
        found = run_search(search.TREE, verifier=judge, context={"prompt": prompt}, unit_generator=tracker,
                           tree_config=config, seed=seed, stage_fn=TREE_FIRST_STAGES[TREE_FIRST_STAGE])
        clip, steps = found.output, call_kwargs["num_inference_steps"]
        folder, mp4, gif = self._write(clip, f"tree-seed{seed}")
        stats = result_stats(clip, given=0 if given is None else len(given), steps=steps, nfe=found.nfe,
                             guidance=call_kwargs["guidance_scale"], seed=seed, seconds=found.seconds, fps=DEFAULT_FPS,
                             note=note) + prompt_note(prompt)
        gifs = [str(write_gif(gen.output(leaf), folder / f"leaf-{i + 1}.gif", fps=DEFAULT_FPS,
                              scale=self.settings.video_scale)) for i, leaf in enumerate(found.tree.leaves)]
        shown = search.tree_shown(found, options, gifs, units=gen.num_units, frames_per_unit=per_unit,
                                  clip_nfe=gen.clip_nfe, clip_steps=steps, grown=gen.grow,
                                  drafts=(TREE_SCREEN, preview, TREE_DRAFT_EXTEND) if preview else None)
        return str(mp4), [str(mp4), str(gif)], stats, shown


# ---------------------------------------------------------------------------------------------------------
# Layout


def instructions(size: int | None, scale: int) -> str:
    n = f"{size}×{size}" if size else "N×N"
    return f"""\
**1.** Describe a clip, e.g. *{EXAMPLE_PROMPTS[0]}*; the model knows {GRAMMAR_HINT}.

**2.** Press **Generate**. The clip plays ×{scale}; download it as that MP4 or as a GIF of the model's own {n}
frames.

**3.** To continue a clip, give its first frames below (a video, a GIF / WebP, or several images in the order
listed), set **Frames** above their number and press Generate: they are kept exactly, the model makes the rest.

*Given frames:* the model works on {n} frames. Square frames a whole multiple of that (a downloaded result) are
scaled back by whole blocks; others are cropped to their centred square and resized (the result says so).
"""


def build_tab(demo: gr.Blocks, settings: Settings, registry: ModelRegistry) -> VideoTab:
    """The "Video" tab, inside ``demo``'s context. Endpoints: ``/generate_video``, ``/video_search_candidates`` (the
    last search's candidates, as GIFs, with their scores, and its line: NFE and wall time)."""
    tab = VideoTab(settings, registry)
    shape = model_clip_shape(tab.folder)
    default_frames, size = shape if shape else (8, None)
    default_frames = min(max(default_frames, MIN_FRAMES), settings.max_frames)
    with gr.Tab("Video", id="video"):
        searched = gr.State(None)  # the last result's search (search.Shown), None without one
        gr.Markdown(instructions(size, settings.video_scale), elem_classes=["instructions"])
        gr.Markdown(tab.model_status(), elem_id="video-model-status")
        with gr.Row():
            with gr.Column(scale=1):
                prompt = gr.Textbox(label="Prompt", placeholder=f"e.g. {EXAMPLE_PROMPTS[0]}", lines=2,
                                    max_length=settings.max_prompt_chars, elem_id="video-prompt")
                gr.Examples([[p] for p in EXAMPLE_PROMPTS], inputs=[prompt], label="Try a prompt",
                            api_visibility="private")
                with gr.Row():
                    frames = gr.Slider(MIN_FRAMES, settings.max_frames, value=default_frames, step=1,
                                       label="Frames (given ones included)")
                    steps = gr.Slider(1, settings.max_steps, value=min(DEFAULT_STEPS, settings.max_steps), step=1,
                                      label="Steps (fewer = faster, rougher)")
                with gr.Row():
                    guidance = gr.Slider(0, MAX_GUIDANCE, value=DEFAULT_GUIDANCE, step=0.5,
                                         label="Guidance (higher = follows the prompt more closely)")
                    seed = gr.Number(value=0, precision=0, minimum=0, maximum=MAX_SEED, label="Seed")
                first_frames = gr.File(
                    label="Optional: first frames to continue (a video, a GIF / WebP, or images in the order listed)",
                    file_count="multiple", file_types=["image", "video", ".gif", ".webp"], allow_reordering=True,
                    height=150, elem_id="video-first-frames")
                strategy, n, verifier, drafts = search.search_controls(
                    settings, search.VIDEO_VERIFIERS, "video", strategies=search.VIDEO_STRATEGIES,
                    note=f"*Tree-of-Frames* grows N clips (the roots) in {TREE_UNITS} units: the first half of each "
                    "clip is the best of 2 draws, judged on motion too, the better half of the branches is kept, "
                    f"and each survivor is continued to full length at {TREE_EXTEND_FRACTION:.0%} of the steps; "
                    "about 1.2 times the compute of N plain clips (more, shorter denoiser calls), the final clips "
                    "shown. The *direction* verifier also reads the prompt's direction of motion. *Search on "
                    "drafts* judges clips drawn at a fifth of the steps and draws only the best in full (best-of-N: "
                    f"the best quarter; a tree: each first unit the best of {TREE_SCREEN} drafts, each continuation "
                    f"the better of {TREE_DRAFT_EXTEND} draws): in BENCHMARKS.md such a tree from 4 roots reaches "
                    "best-of-16's score at 0.38 of its compute.",
                    drafts="Search on drafts (a fifth of the steps; the best drawn in full)")
                generate_button = gr.Button("Generate", variant="primary", size="lg", elem_id="video-generate")
            with gr.Column(scale=1):
                shown = f"{size * settings.video_scale}×{size * settings.video_scale}" if size \
                    else f"×{settings.video_scale}"
                result = gr.Video(label=f"Clip (shown {shown})", format="mp4", interactive=False, autoplay=True,
                                  loop=True, height=360, elem_id="video-result")
                stats = gr.Markdown(label="Result statistics", elem_id="video-stats")
                files = gr.File(label=f"Download: MP4 (shown size) and GIF{f' ({size}×{size})' if size else ''}",
                                file_count="multiple", interactive=False, elem_id="video-files")
                candidates_box, candidates, search_line = search.candidates_display("video")

    inputs = [prompt, frames, steps, guidance, seed, first_frames, strategy, n, verifier, drafts]
    outputs = [result, files, stats, searched]
    display = (searched, candidates_box, candidates, search_line)
    search.wire_display(generate_button.click(tab.generate, inputs, outputs, api_name="generate_video"), *display,
                        api_name="video_search_candidates")
    search.wire_display(prompt.submit(tab.generate, inputs, outputs, api_visibility="private"), *display,
                        api_name=None)
    return tab
