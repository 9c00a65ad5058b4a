"""The lingen web app: ``build_app(settings)`` returns the Blocks, one tab per capability plus "About".

Run it with ``python -m app`` (see ``app.__main__``). Tests launch it in-process with ``launch_kwargs``.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from app import gradio_fixes
from app.registry import ModelRegistry
from app.settings import Settings
from app.tabs import image, pianoroll, video

TITLE = "lingen: linear-time generative models"
HEADER = """\
# lingen
Generative models built on linear-time attention, running on a CPU. Pick a tab.
"""

CSS = """
.gradio-container { max-width: 1280px !important; margin: 0 auto !important; }
#generate, #image-generate, #video-generate { min-height: 52px; font-size: 1.1em; }
#result-image img, #image-result img { width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated; }
.instructions p { margin: 0.2em 0; }
"""

# Tab builders in page order; a new capability adds its module here.
TABS = (pianoroll.build_tab, image.build_tab, video.build_tab)


def about_markdown(settings: Settings, registry: ModelRegistry) -> str:
    """The "About" tab: models, where they come from, and the limits this server enforces."""
    folder = settings.model_dir("pianoroll")
    status = "installed" if registry.is_available("pianoroll") else "**not installed**: run `make assets-pianoroll`"
    image_folder = settings.model_dir("image")
    image_status = "installed" if registry.is_available("image") else "**not installed**: run `make assets-shapes`"
    var_folder = settings.model_dir("var")
    var_status = "installed" if registry.is_available("var") else "**not installed**: run `make assets-var`"
    video_folder = settings.model_dir("video")
    video_status = "installed" if registry.is_available("video") else "**not installed**: run `make assets-video`"
    clip_status = "installed" if registry.is_available("clip") else "**not installed**: run `make assets-shapes`"
    return f"""\
## Piano roll (Pictures of MIDI)
A diffusion transformer (HDiT, neighbourhood attention) trained on music21's corpus (Bach chorales and Ryan's
Mammoth Collection fiddle tunes) fills a masked region of a piano roll with new notes. The roll has 64 pitch
rows (MIDI 28–91) and one column per 16th note, 16 columns per bar; a MIDI file's tempo is kept. Inpainting
uses RePaint resampling (*r*), and among *N* candidates the one at the chosen *busyness* percentile of notes in
the mask is returned, as in [Pictures of MIDI](https://huggingface.co/spaces/drscotthawley/PicturesOfMIDI).

Model folder: `{folder}` ({status}). The same is available on the command line:
`lingen pianoroll inpaint --midi IN.mid --bars 5-8 --pitches 60-84 --out DIR`.

## Image (shapes world)
A SANA-style linear diffusion transformer (rectified flow; the caption is first planned into a layout caption
that places every object, then read by cross-attention) draws 64×64 pictures of coloured circles, squares and
triangles from a caption, and inpaints the painted part of a picture. Model folder:
`{image_folder}` ({image_status}). The tab's Model dropdown also offers VAR, next-scale prediction (the picture
drawn coarse to fine, one transformer pass per scale, with top-k / top-p sampling; inpainting by forcing the known
tokens): `{var_folder}` ({var_status}).

## Video (moving shapes)
Diffusion Mamba (bidirectional Mamba-2 state-space scans over space and time, CrossWKV text conditioning,
rectified flow) makes short clips of those shapes moving left, right, up or down (or staying still) from a
caption, and continues a clip from its first frames, which it keeps exactly. A model with a layout planner first
lays out the caption's objects and their paths (where each starts, which way it goes) and then draws the clip
along them; the statistics name the layout. Model folder: `{video_folder}`
({video_status}). On the command line:
`lingen generate --model {video_folder} --prompt "a red circle moves to the right" --out DIR`.

## Test-time search
Each tab's "Test-time search" makes *N* candidates (seeds *S* … *S*+*N*−1) and keeps the one a verifier scores best
(best-of-*N*) or wins a knockout tournament of pairs; every candidate is shown with its score, with the NFE and
the wall time. The Video tab also offers Tree-of-Frames: *N* clips grown by continuation, the first half of
each the best of 2 draws, the weaker half of the branches pruned after it, the final clips shown; "search on
drafts" judges clips drawn at a fifth of the steps and draws only the best in full. Verifiers: the
CLIP score of the prompt (pictures; over frames, with temporal consistency, for clips, optionally with the
prompt's direction of motion; CLIP folder `{settings.model_dir("clip")}`, {clip_status}) and busyness, in-key
and onset-grid scores (piano rolls). The shapes oracle is the evaluator, never a verifier here.

## Limits on this server
MIDI uploads up to {settings.max_upload_bytes / 1e6:.0f} MB; pieces are cut to their first {settings.max_bars} bars;
up to {settings.max_samples} samples, {settings.max_steps} steps, {settings.max_frames} video frames and
{settings.max_search_n} search candidates per request;
{settings.concurrency} generation(s) at a time and up to {settings.max_queue} waiting. Generated files are deleted after
{settings.output_ttl_s / 60:.0f} minutes. Running on: `{settings.device}`.
"""


def build_app(settings: Settings | None = None, registry: ModelRegistry | None = None) -> gr.Blocks:
    """The app for ``settings`` (default: from the environment), with its queue configured."""
    settings = Settings.from_env() if settings is None else settings
    registry = ModelRegistry(settings) if registry is None else registry
    gradio_fixes.install(settings.max_image_pixels)  # atomic image-cache writes; bombs refused from the header
    with gr.Blocks(title=TITLE, delete_cache=(3600, 3600), analytics_enabled=False) as demo:
        gr.Markdown(HEADER)
        with gr.Tabs():
            for build_tab in TABS:
                build_tab(demo, settings, registry)
            with gr.Tab("About", id="about"):
                gr.Markdown(about_markdown(settings, registry))
    demo.queue(default_concurrency_limit=settings.concurrency, max_size=settings.max_queue)
    return demo


def launch_kwargs(settings: Settings) -> dict[str, Any]:
    """Arguments for ``demo.launch`` that belong to the app (Gradio 6 takes theme and CSS here)."""
    return {
        "show_error": True,  # handlers already turn every exception into a readable message (app.errors)
        "allowed_paths": [str(settings.output_dir)],
        "max_file_size": settings.max_request_bytes,
        "run_history": False,  # Gradio 6's run history offers uploads to a Hugging Face bucket: not for a local tool
        "theme": gr.themes.Soft(primary_hue="orange", secondary_hue="blue"),
        "css": CSS,
    }
