"""The ``lingen`` command line.

    lingen pianoroll inpaint --midi IN.mid --bars 5-8 --pitches 60-84 --repaint 2 --samples 8 --out DIR
    lingen pianoroll inpaint --midi IN.mid --mask mask.png --out DIR
    lingen generate --model FOLDER --prompt "a red circle" --prompt "a blue square" --seed 7 --out DIR
    lingen generate --model FOLDER --prompts prompts.txt --mask mask.png --image photo.png --out DIR
    lingen generate --model FOLDER --prompts prompts.txt --search best-of-n --n 8 --verifier clip --out DIR
    lingen generate --model assets/shapes-var --prompt "a red circle" --top-k 50 --top-p 0.95 --fastvar=-1:0.5 --out DIR
    lingen generate --model assets/moving-shapes-dim --prompts prompts.txt --frames 8 --seed 7 --out DIR
    lingen generate --model assets/moving-shapes-dim --prompt "a red circle moves right" --first-frames DIR_OR_VIDEO \
        --out DIR
    lingen generate --model assets/moving-shapes-dim --prompts prompts.txt --search tree-of-frames --n 8 \
        --verifier clip-video --out DIR

``lingen generate`` serves image and video models alike: the checkpoint folder names its pipeline class, and a
video pipeline writes clips (DIR/0000.mp4 and DIR/0000.gif, ...) where an image pipeline writes pictures. Image
pipelines are diffusion models (sampler --steps) or VAR next-scale prediction (one transformer pass per scale, no
steps; --top-k, --top-p and --fastvar instead).

Errors in the input (a corrupt MIDI file, an impossible range, a mask that covers nothing, an unsafe or
unknown checkpoint, an empty prompt, an option the model's kind does not take) are reported in one line on
stderr with exit status 2, and nothing is written.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

from genmodels.io import ASSETS_DIR
from genmodels.var import defaults as var_defaults

DEFAULT_PIANOROLL_MODEL = ASSETS_DIR / "pianoroll-hdit"
DEFAULT_IMAGE_MODEL = ASSETS_DIR / "shapes-sana"
DEFAULT_VIDEO_MODEL = ASSETS_DIR / "moving-shapes-dim"
DEFAULT_VAR_MODEL = ASSETS_DIR / "shapes-var"
# The shipped pipeline folders and the make targets that build them (named when one is missing).
SHIPPED_MODELS = {DEFAULT_IMAGE_MODEL: "make assets-shapes", DEFAULT_VIDEO_MODEL: "make assets-video",
                  DEFAULT_VAR_MODEL: "make assets-var"}
DEFAULT_CLIP = ASSETS_DIR / "clip-shapes"
SEARCHES = ("none", "best-of-n", "tournament", "tree-of-frames")
IMAGE_VERIFIERS = ("clip", "oracle", "ensemble")
VIDEO_VERIFIERS = ("clip-video", "clip-video-direction", "oracle")
# tree-of-frames: how the first unit is judged (genmodels.search.TREE_FIRST_STAGES, not imported here: the CLI
# imports torch only once a command needs it), and the options only that search takes
TREE_FIRST_STAGE_CHOICES = ("motion", "start")
TREE_OPTIONS = ("frames_per_unit", "grow_units", "extend_steps", "extend_candidates", "first_stage", "screen")
TREE_SCREEN = 6  # drafts per root's first unit with --preview-steps (genmodels.search.TREE_SCREEN, tested equal)
MAX_CANDIDATES = 1024
ORACLE_WARNING = ("the shapes oracle is the evaluator: selecting with it measures coverage (pass@k), not what a "
                  "deployable search achieves; do not report it as a verifier result")
VIDEO_ORACLE_WARNING = ("the moving-shapes oracle is the evaluator: selecting with it measures coverage (pass@k), not "
                        "what a deployable search achieves; do not report it as a verifier result")

DEFAULT_FPS = 8
DEFAULT_STEPS = 20  # diffusion models' sampler steps
DEFAULT_GUIDANCE = 4.0  # diffusion models' CFG scale
DEFAULT_MP4_SCALE = 8

# `lingen generate` serves every text-to-image and text-to-video model of the project: the checkpoint folder's
# model_index.json names its pipeline class (``_class_name``), looked up here as "module:attribute". A class
# with ``check_video_inputs`` makes clips (see _generate_video), any other makes pictures.
PIPELINES = {
    "TextToImagePipeline": "genmodels.pipelines.text_to_image:TextToImagePipeline",
    "TextToVideoPipeline": "genmodels.pipelines.text_to_video:TextToVideoPipeline",
    "VARPipeline": "genmodels.pipelines.var:VARPipeline",
}
VAR_PIPELINES = ("VARPipeline",)  # next-scale prediction: no sampler steps; top-k / top-p / FastVAR instead


class CliError(Exception):
    """A problem with the user's input: reported without a traceback."""


def _add_pianoroll(sub) -> None:
    p = sub.add_parser("pianoroll", help="piano-roll inpainting (Pictures of MIDI)")
    psub = p.add_subparsers(dest="action", required=True)
    inp = psub.add_parser("inpaint", help="fill a masked region of a MIDI file's piano roll with new notes")
    inp.add_argument("--midi", required=True, help="input MIDI file")
    inp.add_argument("--bars", help="bars to generate, 1-based inclusive, e.g. 5-8")
    inp.add_argument("--pitches", default=None, help="MIDI pitch range to generate, e.g. 60-84 (default: all)")
    inp.add_argument("--mask", help="mask image (white = generate), the roll's size or an integer multiple")
    inp.add_argument("--model", default=str(DEFAULT_PIANOROLL_MODEL), help="pipeline folder")
    inp.add_argument("--steps", type=int, default=24, help="sampler steps")
    inp.add_argument("--repaint", type=int, default=2, help="RePaint resampling count r (1-10)")
    inp.add_argument("--samples", type=int, default=1, help="candidates to generate (busyness selection)")
    inp.add_argument("--busyness", type=float, default=100.0, help="percentile of notes in the mask (100 = busiest)")
    inp.add_argument("--seed", type=int, default=0)
    inp.add_argument("--out", required=True, help="output folder")


def pianoroll_inpaint(args) -> dict:
    import numpy as np
    import torch
    from PIL import Image
    from tqdm.auto import tqdm

    from genmodels.loading import load_pipeline
    from genmodels.music import PITCH_HIGH, PITCH_LOW
    from genmodels.pipelines import PianoRollInpaintPipeline
    from genmodels.pipelines.pianoroll_io import load_roll, mask_from_image, parse_range, rect_mask, write_outputs

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CliError(f"--out {out} exists and is not a folder")
    roll, bpm = load_roll(args.midi)
    width = roll.shape[2]
    if args.mask:
        try:
            with Image.open(args.mask) as img:
                mask = mask_from_image(img, width)  # refuses oversized images before decoding them
        except (OSError, Image.DecompressionBombError) as err:
            raise CliError(f"cannot read mask image {args.mask}: {err}") from err
    elif args.bars:
        pitches = parse_range(args.pitches, "--pitches") if args.pitches else (PITCH_LOW, PITCH_HIGH)
        mask = rect_mask(width, parse_range(args.bars, "--bars"), pitches)
    else:
        raise CliError("give --bars (and optionally --pitches) or --mask")
    model_dir = Path(args.model)
    if not (model_dir / "model_index.json").is_file():
        raise CliError(f"{model_dir} is not a pipeline folder (no model_index.json); "
                       f"train one with `make assets-pianoroll`")
    pipe = load_pipeline(PianoRollInpaintPipeline, model_dir)
    pipe.set_progress_bar_config(disable=True)
    t0 = time.perf_counter()
    with tqdm(total=1, desc="inpaint", unit="step") as bar:
        def progress(done, total):
            bar.total = total
            bar.n = done
            bar.refresh()

        result = pipe(roll, mask, num_inference_steps=args.steps, repaint=args.repaint, num_samples=args.samples,
                      busyness=args.busyness, generator=torch.Generator().manual_seed(args.seed), callback=progress)
    manifest = {
        "input": str(args.midi), "model": str(model_dir), "bpm": bpm, "width_columns": width,
        "mask_cells": int(mask.sum()), "steps": args.steps, "repaint": args.repaint, "samples": args.samples,
        "busyness": args.busyness, "seed": args.seed, "chosen": result.chosen,
        "notes_in_mask": result.notes_in_mask, "nfe": result.nfe,
        "seconds": round(time.perf_counter() - t0, 3),
        "unchanged_outside_mask": bool(np.array_equal(result.roll[:, ~mask], roll[:, ~mask])),
    }
    paths = write_outputs(args.out, result.roll, mask, bpm, manifest)
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return manifest


def _add_generate(sub) -> None:
    g = sub.add_parser(
        "generate", help="text-to-image (and inpainting) or text-to-video (and continuation) with a checkpoint",
        description="With an image model, write DIR/0000.png, DIR/0001.png, ... (one per prompt, in order); with a "
                    "video model, DIR/0000.mp4 and DIR/0000.gif, ...; and DIR/manifest.jsonl. Output i uses seed "
                    "SEED + i with its own generator, so it depends only on its prompt, its seed and the settings, "
                    "never on --batch-size or on the other prompts. The model folder's pipeline class decides "
                    "which: --mask and --image take an image model; --frames, --first-frames, --fps, --mp4-scale, "
                    "--frames-per-unit and --search tree-of-frames a video model; --top-k, --top-p and --fastvar a "
                    "VAR model (which takes no --steps); the other search options both.")
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", action="append", help="a prompt (repeat for several outputs)")
    src.add_argument("--prompts", help="text file, one prompt per line (blank lines are skipped)")
    g.add_argument("--model", default=str(DEFAULT_IMAGE_MODEL),
                   help=f"pipeline folder (model_index.json); default "
                        f"{DEFAULT_IMAGE_MODEL.relative_to(ASSETS_DIR.parent)} (images, SANA diffusion); the VAR "
                        f"(next-scale prediction) image model is {DEFAULT_VAR_MODEL.relative_to(ASSETS_DIR.parent)}, "
                        f"the video model {DEFAULT_VIDEO_MODEL.relative_to(ASSETS_DIR.parent)}")
    g.add_argument("--mask", help="inpainting mask (white = generate), the image's size; needs --image")
    g.add_argument("--image", help="image to inpaint (kept exactly outside the mask); needs --mask")
    g.add_argument("--seed", type=int, default=0, help="seed of the first output; output i uses SEED + i")
    g.add_argument("--steps", type=int,
                   help=f"sampler steps of a diffusion model (default {DEFAULT_STEPS}); a VAR model takes none (one "
                        "transformer pass per scale)")
    g.add_argument("--guidance", type=float,
                   help=f"classifier-free guidance scale (default {DEFAULT_GUIDANCE:g}; {var_defaults.GUIDANCE:g} "
                        "with a VAR model, where it ramps from 0 at the first scale to this at the last)")
    g.add_argument("--batch-size", type=int, default=4,
                   help="images (or clips) per pipeline call, where the pipeline takes one generator per output "
                        "(otherwise they are made one at a time); never changes the result")
    g.add_argument("--height", type=int, help="image / frame height (default: the model's; with --width)")
    g.add_argument("--width", type=int, help="image / frame width (default: the model's; with --height)")
    g.add_argument("--out", required=True, help="output folder")
    r = g.add_argument_group(
        "VAR models", "Next-scale prediction (VARPipeline, e.g. assets/shapes-var): each token is drawn from the "
        "transformer's distribution, filtered by --top-k then --top-p.")
    r.add_argument("--top-k", type=int, help=f"keep the k most likely tokens (default {var_defaults.TOP_K}; 0 = off)")
    r.add_argument("--top-p", type=float, help="keep the smallest set of tokens holding this probability, in (0, 1] "
                                               f"(default {var_defaults.TOP_P:g}; 1 = off)")
    r.add_argument("--fastvar", metavar="SPEC",
                   help="FastVAR cached token pruning at the largest scales: scale:ratio pairs (scale indices from 0, "
                        "negative from the end; ratio in [0, 1) of the scale's tokens dropped), optionally ';skip=N' "
                        "(leave out the last N scales) and ';cache=S', e.g. '-1:0.5' or '-2:0.4,-1:0.5;skip=1'")
    v = g.add_argument_group(
        "video models",
        "A text-to-video model writes DIR/IIII.mp4 (H.264, magnified by --mp4-scale for viewing) and DIR/IIII.gif "
        "(the model's own pixels, exact) per prompt. --first-frames continues a clip: its K frames are kept "
        "exactly as the clip's first K frames (and give its size), the model makes the rest.")
    v.add_argument("--frames", type=int, help="frames per clip (default: the model's)")
    v.add_argument("--first-frames", metavar="DIR_OR_VIDEO",
                   help="frames to continue: a folder of images (in file-name order), a video (mp4, webm, ...), "
                        "a GIF / WebP or one image; the same for every prompt")
    v.add_argument("--layout", choices=["auto", "off"],
                   help="auto (default): a model with a layout planner lays out each prompt's objects and their "
                        "paths first and draws the clip along them (the manifest records the layout); off: never")
    v.add_argument("--fps", type=float, help=f"frame rate of the MP4 and GIF (default {DEFAULT_FPS})")
    v.add_argument("--mp4-scale", type=int,
                   help=f"nearest-neighbour magnification of the MP4 (default {DEFAULT_MP4_SCALE}; 1 keeps the model's "
                        "size)")
    s = g.add_argument_group(
        "test-time search",
        "Draw --n candidates per prompt (candidate j of prompt i uses seed SEED + i*N + j, so --n 1 reproduces the "
        "plain run), score them with --verifier and keep the best (best-of-n: the argmax; tournament: SANA-1.5's "
        "knockout bracket, N-1 comparisons). tree-of-frames (video models) grows each clip --frames-per-unit frames "
        "at a time by continuation (Video-T1): N roots, the first unit the best of 2 draws, later units 1 draw "
        "(continuations at --extend-steps), the live branches pruned at the median at Video-T1's relative depths "
        "4/16, 9/16, 13/16 of the units, the best leaf kept (defaults: the configuration measured in BENCHMARKS.md: "
        "two units, grown, continuations at 40% of --steps, the first unit judged on motion); prompt i's tree "
        "draws its seeds from SEED + i*S on, S = the seeds the tree could use "
        "without pruning. The manifest records the seeds, every score, the NFE and the wall time; "
        "DIR/score_vs_nfe.png plots the best score against NFE.")
    s.add_argument("--search", choices=SEARCHES, default="none", help="search strategy (default: none)")
    s.add_argument("--n", type=int,
                   help="candidates per prompt, or roots of the tree (default 4 with a search; none takes 1)")
    s.add_argument("--verifier", choices=sorted({*IMAGE_VERIFIERS, *VIDEO_VERIFIERS}),
                   help="images: clip (default): CLIP score of the prompt; ensemble: CLIP score + agreement with the "
                        "other candidates (CLIP-embedding cosine), rank-normalised, weights 1 and 0.5. Clips: "
                        "clip-video: per-frame CLIP score of the prompt's objects + frame-to-frame consistency "
                        "(blind to the direction of motion); clip-video-direction (default): that + how the named "
                        "colours' pixels move against the prompt's direction words (moving-shapes captions; 0 for "
                        "others). oracle: the shapes / moving-shapes "
                        "oracle, the evaluator itself (upper bound / pass@k only; the manifest marks it)")
    s.add_argument("--clip", default=str(DEFAULT_CLIP),
                   help="open_clip folder for the clip / ensemble / clip-video verifiers")
    s.add_argument("--frames-per-unit", type=int,
                   help="tree-of-frames: frames added per tree level (default: half the frames to generate, rounded "
                        "up: two levels, the first long enough to show motion)")
    s.add_argument("--grow-units", action=argparse.BooleanOptionalAction, default=None,
                   help="tree-of-frames: each unit denoises only the frames its branch has so far (given frames + "
                        "the new unit) instead of a whole clip (default: on; --no-grow-units denoises whole clips); "
                        "the manifest's clip_nfe counts the compute in whole-clip NFE")
    s.add_argument("--extend-steps", type=int,
                   help="tree-of-frames: denoising steps of a continuation (every unit after the first; default: 40%% "
                        "of --steps, rounded up: 8 of 20)")
    s.add_argument("--extend-candidates", type=int,
                   help="tree-of-frames: draws per continuation, the verifier's best kept (default 1, Video-T1's; "
                        "BENCHMARKS.md measures 2 with --preview-steps 4)")
    s.add_argument("--first-stage", choices=TREE_FIRST_STAGE_CHOICES,
                   help="tree-of-frames: how the first unit is judged: motion (default: every verifier term, "
                        "direction of motion included) or start (Video-T1: the scene only)")
    s.add_argument("--preview-steps", type=int,
                   help="video searches: judge cheap drafts at this many denoising steps instead of whole clips "
                        "(a deterministic sampler from the same seed lands near its draft). The --n candidates are "
                        "drafts; best-of-n draws the --preview-keep best again at --steps and keeps the verifier's "
                        "best, tournament its winner; tree-of-frames chooses each root's first unit among --screen "
                        "drafts, the best drawn at --steps. The NFE counts the drafts (BENCHMARKS.md: 16 drafts at "
                        "4 steps, 4 drawn in full, select as well as 16 whole clips)")
    s.add_argument("--preview-keep", type=int,
                   help="best-of-n with --preview-steps: the best drafts drawn in full, the verifier's best of them "
                        "kept (default: a quarter of --n, rounded up; BENCHMARKS.md: 4 of 16 drafts match best-of-16)")
    s.add_argument("--screen", type=int,
                   help=f"tree-of-frames with --preview-steps: drafts per root's first unit (default {TREE_SCREEN})")
    s.add_argument("--save-candidates", action="store_true",
                   help="also write every candidate, DIR/candidates/IIII-JJ.png (prompt I, candidate J); for clips "
                        "DIR/candidates/IIII-JJ.gif (tree-of-frames: the final leaves)")


def _read_prompts(args) -> list[str]:
    if args.prompts is None:
        prompts = list(args.prompt)
        blank = [i for i, p in enumerate(prompts) if not p.strip()]
        if blank:
            raise CliError(f"--prompt number {blank[0] + 1} is empty: describe the image to generate")
        return prompts
    try:
        text = Path(args.prompts).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise CliError(f"cannot read prompts file {args.prompts}: {err}") from err
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise CliError(f"prompts file {args.prompts} holds no prompt (one per line, blank lines are skipped)")
    return prompts


def _read_image(path: str, mode: str, what: str):
    from PIL import Image

    from genmodels.pipelines.text_to_image import MAX_IMAGE_PIXELS

    try:
        with Image.open(path) as img:
            if img.width * img.height > MAX_IMAGE_PIXELS:  # the header's size: refused before decoding
                raise CliError(f"{what} {path} is too large ({img.width}×{img.height} pixels; up to "
                               f"{MAX_IMAGE_PIXELS} pixels are accepted)")
            return img.convert(mode)  # decodes fully, so a truncated file fails here, not mid-run
    except (OSError, Image.DecompressionBombError) as err:
        raise CliError(f"cannot read {what} {path}: {err}") from err


def _pipeline_class(model_dir: Path):
    index = model_dir / "model_index.json"
    if not index.is_file():
        build = SHIPPED_MODELS.get(model_dir.resolve())
        hint = f" (the shipped model is not built yet: build it with `{build}`, or pass --model FOLDER)" \
            if build else ""
        raise CliError(f"{model_dir} is not a pipeline folder (no model_index.json){hint}")
    try:
        name = json.loads(index.read_text(encoding="utf-8")).get("_class_name")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as err:
        raise CliError(f"{index} is not a valid pipeline index: {err}") from err
    if name not in PIPELINES:
        raise CliError(f"{model_dir} holds a {name!r} pipeline; lingen generate supports "
                       f"{', '.join(sorted(PIPELINES))}")
    module, attr = PIPELINES[name].split(":")
    return getattr(importlib.import_module(module), attr)


def _load(cls, model_dir: Path):
    """``cls`` loaded from ``model_dir`` (safetensors only), without progress bars."""
    from diffusers.utils import logging as diffusers_logging

    from genmodels.loading import load_pipeline

    bars_on = diffusers_logging.is_progress_bar_enabled()
    diffusers_logging.disable_progress_bar()  # stderr keeps to our bar and, on error, the one error line
    try:
        pipe = load_pipeline(cls, model_dir)
    except (OSError, RuntimeError, KeyError) as err:  # unsafe/malformed folders raise ValueError themselves
        raise CliError(f"cannot load the pipeline in {model_dir}: {err}") from err
    finally:
        if bars_on:
            diffusers_logging.enable_progress_bar()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(args) -> list[dict]:
    import torch
    from tqdm.auto import tqdm

    from genmodels.io import atomic_path, write_text_atomic

    # Everything is checked and loaded before the first file is written.
    prompts = _read_prompts(args)
    if args.steps is not None and args.steps < 1:
        raise CliError(f"--steps must be at least 1, got {args.steps}")
    if args.batch_size < 1:
        raise CliError(f"--batch-size must be at least 1, got {args.batch_size}")
    if (args.height is None) != (args.width is None):
        raise CliError("give --height and --width together, or neither (the model's default size)")
    if args.height is not None and (args.height < 1 or args.width < 1):
        raise CliError(f"--height and --width must be positive, got {args.height}×{args.width}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CliError(f"--out {out} exists and is not a folder")
    model_dir = Path(args.model)
    cls = _pipeline_class(model_dir)
    var = cls.__name__ in VAR_PIPELINES
    fastvar = _check_var_options(args, cls, model_dir) if var else _refuse_var_options(args, cls, model_dir)
    if hasattr(cls, "check_video_inputs"):
        return _generate_video(args, cls, prompts, model_dir)
    video_only = _given(args, "frames", "first_frames", "layout", "fps", "mp4_scale", "preview_steps", "preview_keep",
                        *TREE_OPTIONS)
    if getattr(args, "search", "none") == "tree-of-frames":
        video_only.insert(0, "--search tree-of-frames")
    if getattr(args, "verifier", None) in VIDEO_VERIFIERS and args.verifier not in IMAGE_VERIFIERS:
        video_only.append(f"--verifier {args.verifier}")
    if video_only:
        raise CliError(f"{model_dir} holds a {cls.__name__} (pictures); {', '.join(video_only)} take a text-to-video "
                       "model")
    if getattr(args, "verifier", None) is None:
        args.verifier = "clip"
    search = getattr(args, "search", "none")
    if search == "none" and getattr(args, "n", None) not in (None, 1):
        raise CliError(f"--n {args.n} needs --search best-of-n or tournament (without a search there is one "
                       "image per prompt)")
    n = 1 if search == "none" else 4 if args.n is None else args.n
    if not 1 <= n <= MAX_CANDIDATES:
        raise CliError(f"--n must be in 1..{MAX_CANDIDATES}, got {n}")
    images_needed = len(prompts) * n
    if not 0 <= args.seed or args.seed + images_needed - 1 >= 2**63:
        raise CliError(f"--seed must be in 0..2^63 - {images_needed} ({images_needed} images), got {args.seed}")
    if (args.mask is None) != (args.image is None):
        raise CliError("inpainting needs both --mask (white = generate) and --image; give both or neither")
    mask = image = None
    if args.mask is not None:
        mask, image = _read_image(args.mask, "L", "mask image"), _read_image(args.image, "RGB", "image")
    pipe = _load(cls, model_dir)
    if var:
        if fastvar is not None:
            try:
                fastvar.resolved(pipe.transformer.num_scales, len(pipe.transformer.blocks))
            except ValueError as err:
                raise CliError(f"--fastvar {args.fastvar!r}: {err}") from err
        settings = dict(guidance_scale=args.guidance, top_k=args.top_k, top_p=args.top_p, fastvar=fastvar,
                        mask=mask, image=image, height=args.height, width=args.width)
        pipe.check_inputs(prompts, output_type="pil", generator=None, **settings)  # the pipeline's own checks
    else:
        settings = dict(num_inference_steps=args.steps, guidance_scale=args.guidance, mask=mask, image=image,
                        height=args.height, width=args.width)
        pipe.check_inputs(prompts, output_type="pil", **settings)  # the pipeline's own checks, before any work
    if search != "none":
        return _generate_search(args, pipe, cls, prompts, settings, n, model_dir, mask is not None)

    # One generator per image; a pipeline that takes a list of them gets whole batches, others one image a call.
    batch = args.batch_size if getattr(cls, "accepts_generator_list", False) else 1
    base = {**_sampler_record(args, var), "model": str(model_dir), "pipeline": cls.__name__}
    if mask is not None:
        base.update(mask=str(args.mask), image=str(args.image))
    records: list[dict] = []
    with tqdm(total=len(prompts), desc="generate", unit="image") as bar:
        for start in range(0, len(prompts), batch):
            chunk = prompts[start:start + batch]
            seeds = [args.seed + start + i for i in range(len(chunk))]
            gens = [torch.Generator().manual_seed(s) for s in seeds]
            t0 = time.perf_counter()
            result = pipe(chunk if batch > 1 else chunk[0], generator=gens if batch > 1 else gens[0], **settings)
            seconds = round((time.perf_counter() - t0) / len(chunk), 3)
            for i, (prompt, seed, img) in enumerate(zip(chunk, seeds, result.images, strict=True)):
                index = start + i
                name = f"{index:04d}.png"
                with atomic_path(out / name) as tmp:
                    img.save(tmp, format="PNG")
                record = {"index": index, "file": name, "prompt": prompt, "seed": seed, **base,
                          "height": img.height, "width": img.width, "nfe": int(result.nfe), "seconds": seconds}
                if getattr(result, "prompts", None) and result.prompts[i] != prompt:  # a prompt planner's caption
                    record["planned_prompt"] = result.prompts[i]
                records.append(record)
            # rewritten after every batch, so an interrupted run leaves a manifest of the images it made
            write_text_atomic(out / "manifest.jsonl", "".join(json.dumps(r) + "\n" for r in records))
            bar.update(len(chunk))
    print(f"wrote {len(records)} image(s) and manifest.jsonl to {out}")
    return records


def _check_var_options(args, cls, model_dir: Path):
    """With a VAR model: refuse --steps, settle the defaults of --guidance / --top-k / --top-p, check them and
    parse --fastvar (None without it)."""
    from genmodels.var.var import FastVARConfig

    if args.steps is not None:
        raise CliError(f"{model_dir} holds a {cls.__name__} (VAR next-scale prediction: one transformer pass per "
                       "scale), which takes no --steps; leave it out (--top-k, --top-p and --fastvar tune VAR)")
    args.guidance = var_defaults.GUIDANCE if args.guidance is None else args.guidance
    args.top_k = var_defaults.TOP_K if args.top_k is None else args.top_k
    args.top_p = var_defaults.TOP_P if args.top_p is None else args.top_p
    if args.top_k < 0:
        raise CliError(f"--top-k must be at least 0 (0 = off), got {args.top_k}")
    if not 0 < args.top_p <= 1:  # NaN fails too
        raise CliError(f"--top-p must be in (0, 1] (1 = off), got {args.top_p}")
    if args.fastvar is None:
        return None
    if not args.fastvar.strip():
        raise CliError("--fastvar is empty: give scale:ratio pairs, e.g. -1:0.5")
    try:
        return FastVARConfig.parse(args.fastvar)
    except ValueError as err:
        raise CliError(f"--fastvar {args.fastvar!r} is not a FastVAR spec ({err}); expected scale:ratio pairs such "
                       "as -1:0.5 or -2:0.4,-1:0.5, optionally followed by ;skip=N or ;cache=S") from err


def _refuse_var_options(args, cls, model_dir: Path) -> None:
    """With a diffusion model: refuse the VAR-only options and settle the defaults of --steps and --guidance."""
    var_only = _given(args, "top_k", "top_p", "fastvar")
    if var_only:
        raise CliError(f"{model_dir} holds a {cls.__name__} (diffusion); {', '.join(var_only)} take a VAR model "
                       f"(VARPipeline, e.g. {DEFAULT_VAR_MODEL.relative_to(ASSETS_DIR.parent)})")
    args.steps = DEFAULT_STEPS if args.steps is None else args.steps
    args.guidance = DEFAULT_GUIDANCE if args.guidance is None else args.guidance


def _sampler_record(args, var: bool) -> dict:
    """The sampler settings an output's manifest record names."""
    if var:
        return {"guidance": args.guidance, "top_k": args.top_k, "top_p": args.top_p, "fastvar": args.fastvar}
    return {"steps": args.steps, "guidance": args.guidance}


def _given(args, *names: str) -> list[str]:
    """The options among ``names`` (argparse destinations) that were given, spelled as flags (``--no-x`` for a
    boolean option given as off)."""
    defaults = {"search": "none", "save_candidates": False}  # None (not given) for the others
    return [f"--{'no-' if getattr(args, name) is False else ''}{name.replace('_', '-')}" for name in names
            if getattr(args, name, None) is not None and getattr(args, name) != defaults.get(name)]


def _generate_video(args, cls, prompts: list[str], model_dir: Path) -> list[dict]:
    """``lingen generate`` with a text-to-video model: DIR/IIII.mp4 and DIR/IIII.gif per prompt, in order."""
    import torch
    from tqdm.auto import tqdm

    from genmodels.io import write_text_atomic
    from genmodels.pipelines.text_to_image import MAX_IMAGE_PIXELS
    from genmodels.pipelines.video_io import MAX_FPS, MAX_SCALE, read_frames, write_gif, write_mp4

    image_only = _given(args, "mask", "image")
    verifier = getattr(args, "verifier", None)
    if verifier is not None and verifier not in VIDEO_VERIFIERS:
        image_only.append(f"--verifier {verifier}")
    if image_only:
        raise CliError(f"{model_dir} holds a {cls.__name__} (clips); {', '.join(image_only)} take an image model "
                       f"(clips are verified by {' or '.join(VIDEO_VERIFIERS)})")
    search = getattr(args, "search", "none")
    if search == "none":
        needs_search = _given(args, "save_candidates", "preview_steps", "preview_keep", *TREE_OPTIONS)
        if verifier is not None:
            needs_search.insert(0, f"--verifier {verifier}")
        if getattr(args, "n", None) not in (None, 1):
            needs_search.insert(0, f"--n {args.n}")
        if needs_search:
            raise CliError(f"{', '.join(needs_search)} need --search (best-of-n, tournament or tree-of-frames)")
    elif search != "tree-of-frames" and (tree_only := _given(args, *TREE_OPTIONS)):
        raise CliError(f"{', '.join(tree_only)} takes --search tree-of-frames, not {search}")
    preview_steps = getattr(args, "preview_steps", None)
    if preview_steps is not None and preview_steps < 1:
        raise CliError(f"--preview-steps must be at least 1, got {preview_steps}")
    if getattr(args, "extend_candidates", None) is not None and args.extend_candidates < 1:
        raise CliError(f"--extend-candidates must be at least 1, got {args.extend_candidates}")
    keep = getattr(args, "preview_keep", None)
    if keep is not None and (search != "best-of-n" or preview_steps is None):
        raise CliError("--preview-keep takes --search best-of-n and --preview-steps")
    if getattr(args, "screen", None) is not None and (args.screen < 1 or preview_steps is None):
        raise CliError(f"--screen must be at least 1 and takes --preview-steps (the drafts' steps), got "
                       f"--screen {args.screen}" + ("" if preview_steps else " without --preview-steps"))
    n = 1 if search == "none" else 4 if args.n is None else args.n
    if not 1 <= n <= MAX_CANDIDATES:
        raise CliError(f"--n must be in 1..{MAX_CANDIDATES}, got {n}")
    if keep is not None and not 1 <= keep <= n:
        raise CliError(f"--preview-keep must be in 1..{n} (--n), got {keep}")
    fps = DEFAULT_FPS if args.fps is None else args.fps
    if not 0 < fps <= MAX_FPS:  # NaN fails too
        raise CliError(f"--fps must be in (0, {MAX_FPS:g}], got {fps}")
    scale = DEFAULT_MP4_SCALE if args.mp4_scale is None else args.mp4_scale
    if not 1 <= scale <= MAX_SCALE:
        raise CliError(f"--mp4-scale must be in 1..{MAX_SCALE}, got {scale}")
    if not 0 <= args.seed or args.seed + len(prompts) * n - 1 >= 2**63:
        raise CliError(f"--seed must be in 0..2^63 - {len(prompts) * n} ({len(prompts) * n} clips), got {args.seed}")
    first = None
    if args.first_frames is not None:
        try:
            first = read_frames(args.first_frames)
        except ValueError as err:
            raise CliError(f"--first-frames: {err}") from err
    pipe = _load(cls, model_dir)
    settings = dict(num_frames=args.frames, num_inference_steps=args.steps, guidance_scale=args.guidance,
                    first_frames=first, height=args.height, width=args.width)
    # the pipeline's own checks, before any work; they also settle the clip's size
    _, _, frames, height, width = pipe.check_video_inputs(prompts, output_type="np", **settings)
    if height * width * scale**2 > MAX_IMAGE_PIXELS:
        raise CliError(f"--mp4-scale {scale} would make {width * scale}×{height * scale} MP4 frames; lower it")
    settings["plan_layout"] = False if args.layout == "off" else None
    if search != "none":
        settings.update(num_frames=frames, height=height, width=width)
        return _generate_video_search(args, pipe, cls, prompts, settings, n, model_dir, fps=fps, scale=scale)

    out = Path(args.out)
    batch = args.batch_size if getattr(cls, "accepts_generator_list", False) else 1
    base = {"steps": args.steps, "guidance": args.guidance, "model": str(model_dir), "pipeline": cls.__name__,
            "fps": fps, "mp4_scale": scale}
    if first is not None:
        base["first_frames"] = str(args.first_frames)
    records: list[dict] = []
    with tqdm(total=len(prompts), desc="generate", unit="clip") as bar:
        for start in range(0, len(prompts), batch):
            chunk = prompts[start:start + batch]
            seeds = [args.seed + start + i for i in range(len(chunk))]
            gens = [torch.Generator().manual_seed(s) for s in seeds]
            t0 = time.perf_counter()
            result = pipe(chunk if batch > 1 else chunk[0], generator=gens if batch > 1 else gens[0],
                          output_type="np", **settings)
            seconds = round((time.perf_counter() - t0) / len(chunk), 3)
            layouts = result.layouts or [None] * len(chunk)
            for i, (prompt, seed, clip) in enumerate(zip(chunk, seeds, result.frames, strict=True)):
                index = start + i
                files = [f"{index:04d}.mp4", f"{index:04d}.gif"]
                layout = None if layouts[i] is None else {"phrases": list(layouts[i].phrases),
                                                          "boxes": layouts[i].boxes.astype(int).tolist()}
                write_mp4(clip, out / files[0], fps=fps, scale=scale)
                write_gif(clip, out / files[1], fps=fps)
                records.append({"index": index, "files": files, "prompt": prompt, "seed": seed,
                                "frames": int(clip.shape[0]), "given": result.given, **base,
                                "height": int(clip.shape[1]), "width": int(clip.shape[2]), "seconds": seconds,
                                "layout": layout})
            # rewritten after every batch, so an interrupted run leaves a manifest of the clips it made
            write_text_atomic(out / "manifest.jsonl", "".join(json.dumps(r) + "\n" for r in records))
            bar.update(len(chunk))
    print(f"wrote {len(records)} clip(s) (MP4 and GIF) and manifest.jsonl to {out}")
    return records


def _load_verifier(args, prompts: list[str]):
    """The image verifier named by ``--verifier``, checked against the prompts before any work."""
    from genmodels.search import AgreementVerifier, CLIPScoreVerifier, EnsembleVerifier, ShapesOracleVerifier

    if args.verifier == "oracle":
        from genmodels.data.shapes import parse_caption

        for prompt in prompts:
            try:
                parse_caption(prompt)
            except ValueError as err:
                raise CliError(f"--verifier oracle needs shapes-world captions; {prompt!r}: {err}") from err
        return ShapesOracleVerifier()
    folder = Path(args.clip)
    if not (folder / "open_clip_config.json").is_file():
        hint = " (the shipped CLIP is not built yet; pass --clip FOLDER)" if folder == DEFAULT_CLIP else ""
        raise CliError(f"--clip {folder} is not an open_clip folder (no open_clip_config.json){hint}")
    try:
        clip = CLIPScoreVerifier.from_folder(folder)
    except (OSError, RuntimeError, KeyError, ValueError) as err:
        raise CliError(f"cannot load the CLIP verifier in {folder}: {err}") from err
    if args.verifier == "ensemble":
        return EnsembleVerifier([clip, AgreementVerifier(clip.embed_images)], weights=[1.0, 0.5], normalise="rank")
    return clip


def _generate_search(args, pipe, cls, prompts: list[str], settings: dict, n: int, model_dir: Path,
                     inpainting: bool) -> list[dict]:
    """``lingen generate --search``: n candidates per prompt, verified, the chosen one written as DIR/IIII.png."""
    import numpy as np
    from PIL import Image
    from tqdm.auto import tqdm

    from genmodels.io import atomic_path, write_text_atomic
    from genmodels.search import best_so_far, plot_score_vs_nfe, run_search, text_to_image_generate_fn

    if not getattr(cls, "accepts_generator_list", False):
        raise CliError(f"{cls.__name__} does not take one generator per image, which --search needs")
    verifier = _load_verifier(args, prompts)
    out = Path(args.out)
    var = cls.__name__ in VAR_PIPELINES
    base = {**_sampler_record(args, var), "model": str(model_dir), "pipeline": cls.__name__, "search": args.search,
            "n": n, "verifier": args.verifier, "verifier_is_oracle": verifier.is_oracle}
    if verifier.is_oracle:
        base["verifier_warning"] = ORACLE_WARNING
    if args.verifier != "oracle":
        base["clip"] = str(args.clip)
    if inpainting:
        base.update(mask=str(args.mask), image=str(args.image))
    records: list[dict] = []
    running_best, cumulative_nfe = [], []
    with tqdm(total=len(prompts) * n, desc=args.search, unit="candidate") as bar:
        def with_progress(fn):
            def generate(seeds):
                result = fn(seeds)
                bar.update(len(seeds))
                return result
            return generate

        for index, prompt in enumerate(prompts):
            seeds = [args.seed + index * n + j for j in range(n)]
            result = run_search(args.search, verifier=verifier, context={"prompt": prompt},
                                generate_fn=with_progress(text_to_image_generate_fn(pipe, prompt, **settings)),
                                n=n, seeds=seeds, batch_size=args.batch_size)
            name = f"{index:04d}.png"
            img = Image.fromarray(result.output)
            with atomic_path(out / name) as tmp:
                img.save(tmp, format="PNG")
            record = {"index": index, "file": name, "prompt": prompt, "seed": result.seed, **base,
                      "height": img.height, "width": img.width, "chosen": result.index,
                      "candidate_seeds": result.candidates.seeds, "scores": [float(x) for x in result.scores],
                      "nfe": result.nfe, "nfe_per_candidate": [int(x) for x in result.nfe_per_candidate],
                      "comparisons": result.comparisons, "seconds": round(result.seconds, 3)}
            if args.save_candidates:
                files = []
                for j, candidate in enumerate(result.candidates.outputs):
                    files.append(f"candidates/{index:04d}-{j:02d}.png")
                    with atomic_path(out / files[-1]) as tmp:
                        Image.fromarray(candidate).save(tmp, format="PNG")
                record["candidate_files"] = files
            records.append(record)
            running_best.append(best_so_far(result.scores))
            cumulative_nfe.append(np.cumsum(result.nfe_per_candidate))
            write_text_atomic(out / "manifest.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    label = f"{args.search} ({verifier.name}), mean over {len(prompts)} prompt(s)"
    plot_score_vs_nfe(out / "score_vs_nfe.png", {label: (np.mean(cumulative_nfe, 0), np.mean(running_best, 0))},
                      ylabel=f"best {verifier.name} score among the first m candidates",
                      title="best verifier score vs NFE (per prompt)")
    print(f"wrote {len(records)} image(s), manifest.jsonl and score_vs_nfe.png to {out}")
    return records


def _load_video_verifier(args, prompts: list[str], height: int, width: int):
    """The clip verifier named by ``--verifier`` (default clip-video), checked against the prompts before any
    work."""
    from genmodels.search import CLIPScoreVerifier, CLIPVideoVerifier, VideoOracleVerifier
    from genmodels.search.video import DIRECTION_WEIGHT

    if args.verifier == "oracle":
        from genmodels.data.moving_shapes import parse_video_caption

        for prompt in prompts:
            try:
                parse_video_caption(prompt)
            except ValueError as err:
                raise CliError(f"--verifier oracle needs moving-shapes captions; {err}") from err
        if height != width or height < 24:
            raise CliError(f"--verifier oracle reads square clips of at least 24 pixels, these are {width}×{height}")
        return VideoOracleVerifier()
    folder = Path(args.clip)
    if not (folder / "open_clip_config.json").is_file():
        hint = " (the shipped CLIP is not built yet; pass --clip FOLDER)" if folder == DEFAULT_CLIP else ""
        raise CliError(f"--clip {folder} is not an open_clip folder (no open_clip_config.json){hint}")
    try:
        weight = DIRECTION_WEIGHT if args.verifier == "clip-video-direction" else 0.0
        return CLIPVideoVerifier(CLIPScoreVerifier.from_folder(folder), direction_weight=weight)
    except (OSError, RuntimeError, KeyError, ValueError) as err:
        raise CliError(f"cannot load the CLIP verifier in {folder}: {err}") from err


def _generate_video_search(args, pipe, cls, prompts: list[str], settings: dict, n: int, model_dir: Path, *,
                           fps: float, scale: int) -> list[dict]:
    """``lingen generate --search`` with a video model: per prompt the chosen clip as DIR/IIII.mp4 + .gif, the
    manifest and DIR/score_vs_nfe.png (best-of-n / tournament over seeds, or tree-of-frames by continuation)."""
    import numpy as np
    from tqdm.auto import tqdm

    from genmodels.io import write_text_atomic
    from genmodels.pipelines.video_io import write_gif, write_mp4
    from genmodels.search import (
        TREE_FIRST_STAGE,
        TREE_FIRST_STAGES,
        TREE_GROW_UNITS,
        VideoChunkGenerator,
        best_so_far,
        drafts_drawn_in_full,
        plot_score_vs_nfe,
        run_search,
        text_to_video_generate_fn,
        tree_extend_steps,
        tree_frames_per_unit,
        tree_seed_budget,
        video_tree_config,
    )

    preview = None if args.preview_steps is None else {**settings, "num_inference_steps": args.preview_steps}
    final_k = 1
    if preview is not None and args.search == "best-of-n":
        final_k = drafts_drawn_in_full(n) if args.preview_keep is None else args.preview_keep
    if args.verifier is None:
        args.verifier = "clip-video-direction"
    if not getattr(cls, "accepts_generator_list", False):
        raise CliError(f"{cls.__name__} does not take one generator per clip, which --search needs")
    frames, first = settings["num_frames"], settings["first_frames"]
    tree = args.search == "tree-of-frames"
    stride = n
    if tree:
        to_make = frames - (0 if first is None else len(first))
        per_unit = tree_frames_per_unit(to_make) if args.frames_per_unit is None else args.frames_per_unit
        if not 1 <= per_unit <= to_make:
            raise CliError(f"--frames-per-unit must be in 1..{to_make} (the frames to generate), got {per_unit}")
        extend_steps = tree_extend_steps(args.steps) if args.extend_steps is None else args.extend_steps
        if extend_steps < 1:
            raise CliError(f"--extend-steps must be at least 1, got {extend_steps}")
        grow = TREE_GROW_UNITS if args.grow_units is None else args.grow_units
        first_stage = TREE_FIRST_STAGE if args.first_stage is None else args.first_stage
        units = -(-to_make // per_unit)
        screen = 0 if args.preview_steps is None else TREE_SCREEN if args.screen is None else args.screen
        first_candidates = 2 if not screen else 1  # with drafts the best draft's seed is drawn once
        extend_candidates = 1 if args.extend_candidates is None else args.extend_candidates
        config = video_tree_config(n, units, first_candidates, screen, extend_candidates)
        stride = tree_seed_budget(config)
        if args.seed + len(prompts) * stride - 1 >= 2**63:
            raise CliError(f"--seed must be in 0..2^63 - {len(prompts) * stride} (the trees draw up to {stride} "
                           f"seeds each), got {args.seed}")
    verifier = _load_video_verifier(args, prompts, settings["height"], settings["width"])
    out = Path(args.out)
    base = {"steps": args.steps, "guidance": args.guidance, "model": str(model_dir), "pipeline": cls.__name__,
            "fps": fps, "mp4_scale": scale, "search": args.search, "n": n, "verifier": args.verifier,
            "verifier_is_oracle": verifier.is_oracle}
    if verifier.is_oracle:
        base["verifier_warning"] = VIDEO_ORACLE_WARNING
    if args.verifier != "oracle":
        base["clip"] = str(args.clip)
    if first is not None:
        base["first_frames"] = str(args.first_frames)
    if tree:
        base["tree"] = {"frames_per_unit": per_unit, "grow_units": grow, "extend_steps": extend_steps,
                        "first_stage": first_stage, "units": units,
                        "branches": config.branches,
                        "candidates": config.candidates, "judge_depths": sorted(config.judge_depths),
                        "screen": config.screen}
    if preview is not None:
        base["preview_steps"] = args.preview_steps
        if not tree:
            base["preview_keep"] = final_k
    records: list[dict] = []
    curves_nfe, curves_best = [], []
    with tqdm(total=len(prompts) * (1 if tree else n), desc=args.search, unit="prompt" if tree else "clip") as bar:
        for index, prompt in enumerate(prompts):
            context = {"prompt": prompt}
            if tree:
                gen = VideoChunkGenerator(pipe, prompt, frames, per_unit, grow=grow, extend_steps=extend_steps,
                                          preview_steps=args.preview_steps,
                                          **{k: v for k, v in settings.items() if k != "num_frames"})
                seed = args.seed + index * stride
                result = run_search("tree-of-frames", verifier=verifier, context=context, unit_generator=gen,
                                    tree_config=config, seed=seed, stage_fn=TREE_FIRST_STAGES[first_stage])
                bar.update(1)
            else:
                final = text_to_video_generate_fn(pipe, prompt, **settings)
                generate = final if preview is None else text_to_video_generate_fn(pipe, prompt, **preview)

                def with_progress(seeds, generate=generate):
                    made = generate(seeds)
                    bar.update(len(seeds))
                    return made

                result = run_search(args.search, verifier=verifier, context=context, generate_fn=with_progress,
                                    n=n, seeds=[args.seed + index * n + j for j in range(n)],
                                    batch_size=args.batch_size, final_fn=None if preview is None else final,
                                    final_k=final_k)
            clip = result.output
            files = [f"{index:04d}.mp4", f"{index:04d}.gif"]
            write_mp4(clip, out / files[0], fps=fps, scale=scale)
            write_gif(clip, out / files[1], fps=fps)
            record = {"index": index, "files": files, "prompt": prompt, "seed": result.seed, **base,
                      "frames": int(clip.shape[0]), "given": 0 if first is None else len(first),
                      "height": int(clip.shape[1]), "width": int(clip.shape[2]), "chosen": result.index,
                      "scores": [float(x) for x in result.scores], "nfe": result.nfe,
                      "seconds": round(result.seconds, 3)}
            if tree:
                record.update(first_seed=seed, seeds_used=result.tree.seeds_used, clip_nfe=gen.clip_nfe,
                              live_per_depth=result.tree.live_per_depth, nfe_per_depth=result.tree.nfe_per_depth,
                              verifier_evaluations=result.tree.verifier_evaluations)
                outputs = [gen.output(s) for s in result.tree.leaves]
                curves_nfe.append([result.nfe])
                curves_best.append([float(result.scores[result.index])])
            else:
                record.update(candidate_seeds=result.candidates.seeds,
                              nfe_per_candidate=[int(x) for x in result.nfe_per_candidate],
                              comparisons=result.comparisons, final_nfe=result.final_nfe)
                if result.final_seeds is not None:
                    record.update(final_seeds=result.final_seeds,
                                  final_scores=[float(x) for x in result.final_scores] if final_k > 1 else None)
                outputs = result.candidates.outputs  # with --preview-steps: the drafts
                curves_nfe.append(np.cumsum(result.nfe_per_candidate) + result.final_nfe)
                curves_best.append(best_so_far(result.scores))
            if args.save_candidates:
                record["candidate_files"] = [f"candidates/{index:04d}-{j:02d}.gif" for j in range(len(outputs))]
                for name, candidate in zip(record["candidate_files"], outputs, strict=True):
                    write_gif(candidate, out / name, fps=fps)
            records.append(record)
            # rewritten after every prompt, so an interrupted run leaves a manifest of the clips it made
            write_text_atomic(out / "manifest.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    label = f"{args.search} ({verifier.name}), mean over {len(prompts)} prompt(s)"
    ylabel = ("best leaf's score (one point: the whole tree)" if tree
              else f"best {verifier.name} score among the first m candidates")
    plot_score_vs_nfe(out / "score_vs_nfe.png", {label: (np.mean(curves_nfe, 0), np.mean(curves_best, 0))},
                      ylabel=ylabel, title="best verifier score vs NFE (per prompt)")
    print(f"wrote {len(records)} clip(s) (MP4 and GIF), manifest.jsonl and score_vs_nfe.png to {out}")
    return records


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lingen", description="linear-time generative models")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_pianoroll(sub)
    _add_generate(sub)
    return parser


def _attach_values(argv: list[str], options: tuple[str, ...] = ("--fastvar",)) -> list[str]:
    """``--fastvar -1:0.5`` as ``--fastvar=-1:0.5``: argparse would take a value starting with "-" (that is not a
    plain negative number) for an option of its own."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in options and i + 1 < len(argv) and argv[i + 1].startswith("-") \
                and not argv[i + 1].startswith("--"):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(_attach_values(argv))
    try:
        if args.command == "pianoroll" and args.action == "inpaint":
            pianoroll_inpaint(args)
        elif args.command == "generate":
            generate(args)
    except (CliError, ValueError, FloatingPointError, OSError) as err:  # OSError: e.g. a full disk on writing
        print(f"lingen: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
