"""The ``lingen`` command line.

    lingen pianoroll inpaint --midi IN.mid --bars 5-8 --pitches 60-84 --repaint 2 --samples 8 --out DIR
    lingen pianoroll inpaint --midi IN.mid --mask mask.png --out DIR

Errors in the input (a corrupt MIDI file, an impossible range, a mask that covers nothing) are reported in
one line on stderr with exit status 2, and nothing is written.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from genmodels.io import ASSETS_DIR

DEFAULT_PIANOROLL_MODEL = ASSETS_DIR / "pianoroll-hdit"


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

    roll, bpm = load_roll(args.midi)
    width = roll.shape[2]
    if args.mask:
        try:
            with Image.open(args.mask) as img:
                mask = mask_from_image(img, width)
        except OSError as err:
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lingen", description="linear-time generative models")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_pianoroll(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "pianoroll" and args.action == "inpaint":
            pianoroll_inpaint(args)
    except (CliError, ValueError, FloatingPointError) as err:
        print(f"lingen: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
