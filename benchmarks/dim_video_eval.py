"""Oracle evaluation of a text-to-video pipeline on the fixed moving-shapes prompts, and of frame continuation.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/dim_video_eval.py \\
        --json benchmarks/results/dim_video_eval.json --grid benchmarks/results/dim_video_grid.png

Text to video: one clip per prompt of ``genmodels/eval/moving_shapes_eval_prompts.jsonl`` (60 prompts: 30 with
one object, 30 with two), single samples, the prompt's own seed (one generator per clip, so batching does not
change a clip), ``--steps`` DPM-Solver++ steps at guidance ``--guidance``; scored by
:mod:`genmodels.eval.video_oracle` (object, motion, identity, all). Targets: object ≥ 0.6, motion ≥ 0.5,
identity ≥ 0.8.

Continuation: for the same prompts, a ground-truth clip of the prompt's spec (``clip_for_spec``, the prompt's
seed) gives its first ``--given`` frames; the model generates the rest. Reported: the fraction of clips whose
given frames come back bit-identical (target 1.0) and the oracle scores of the continued clips.

``--negative still`` / ``reversed``: guidance steers away from the prompt with its objects standing still / its
directions reversed instead of from the null text (the pipeline's ``negative_prompt``).

``--layout off``: no planned layout, for a pipeline with a ``layout_planner`` (by default such a pipeline lays
out each prompt first and draws the clip along it; continuations never get one).

``--first-frame-pass``: text to video in two passes (the pipeline's ``first_frame_pass``: a clip, then its first
frame animated again as a continuation; twice the network evaluations).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from genmodels.io import atomic_path, write_text_atomic  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = "assets/moving-shapes-dim"
TARGETS = {"object": 0.6, "motion": 0.5, "identity": 0.8}


def load(model: str):
    from genmodels.loading import load_pipeline
    from genmodels.pipelines.text_to_video import TextToVideoPipeline

    folder = Path(model)
    if not folder.exists() and (ROOT / folder).exists():
        folder = ROOT / folder
    pipe = load_pipeline(TextToVideoPipeline, folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(pipe, items: list[dict], *, steps: int, guidance: float, batch: int, frames: int,
             given: np.ndarray | None = None, desc: str = "clips", first_frame_pass: bool = False,
             negatives: list[str | None] | None = None,
             guidance_interval: tuple[float, float] | None = None, plan_layout: bool | None = None,
             planned: list | None = None) -> np.ndarray:
    """Clips ``[N, F, H, W, 3]`` uint8 for ``items`` (prompt i with a generator seeded by its seed); ``given``
    ``[N, K, H, W, 3]``: first frames to continue, one clip per item; ``negatives``: one negative prompt (or
    None, the null text) per item; ``guidance_interval``: guide only at t_lo < t ≤ t_hi (the pipeline's);
    ``plan_layout``: the pipeline's; ``planned``: a list that receives each clip's layout (None: none)."""
    out = []
    with tqdm(total=len(items), desc=desc, unit="clip") as bar:
        for start in range(0, len(items), batch):
            chunk = items[start:start + batch]
            gens = [torch.Generator().manual_seed(int(item["seed"])) for item in chunk]
            first = None if given is None else given[start:start + batch]
            negative = None if negatives is None else negatives[start:start + batch]
            result = pipe([item["prompt"] for item in chunk], num_frames=frames, num_inference_steps=steps,
                          guidance_scale=guidance, generator=gens, first_frames=first,
                          first_frame_pass=first_frame_pass, negative_prompt=negative,
                          guidance_interval=guidance_interval, plan_layout=plan_layout)
            out.append(result.frames)
            if planned is not None:
                planned += result.layouts or [None] * len(chunk)
            bar.update(len(chunk))
    return np.concatenate(out)


def negative_prompts(items: list[dict], kind: str) -> list[str | None] | None:
    """Per item: None for every item ("null": plain guidance), the prompt with its objects standing still
    ("still", :func:`~genmodels.data.moving_shapes.motion_negative`; None when nothing moves), or with its
    directions reversed ("reversed"; None when it names none)."""
    from genmodels.data.moving_shapes import motion_negative, reverse_direction

    if kind == "null":
        return None
    if kind == "still":
        return [motion_negative(item["prompt"]) for item in items]
    reversed_prompts = [(reverse_direction(item["prompt"]), item["prompt"]) for item in items]
    return [None if reverse == prompt else reverse for reverse, prompt in reversed_prompts]


def describe_breakdown(breakdown: dict) -> str:
    return f"{breakdown['n']} — " + ", ".join(f"{k.replace('_', ' ')} {breakdown[k]:.3f}" for k in
                                               ("correct", "wrong_direction", "static", "untracked"))


def rates(report: dict) -> dict:
    keep = ("object", "motion", "identity", "all", "n", "per_category", "motion_breakdown")
    return {k: report[k] for k in keep if k in report}


def save_grid(path: str, rows: list[tuple[str, np.ndarray]], scale: int = 4) -> None:
    """One row per clip (frames left to right, magnified ``scale``×), its label above it."""
    from PIL import Image, ImageDraw

    frames, h, w = rows[0][1].shape[:3]
    label_h = 12
    grid = Image.new("RGB", (frames * w * scale, len(rows) * (h * scale + label_h)), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for r, (label, clip) in enumerate(rows):
        y = r * (h * scale + label_h)
        draw.text((2, y), label[:120], fill=(0, 0, 0))
        for f in range(frames):
            tile = Image.fromarray(clip[f]).resize((w * scale, h * scale), Image.NEAREST)
            grid.paste(tile, (f * w * scale, y + label_h))
    with atomic_path(path) as tmp:
        grid.save(tmp, format="PNG")


def main(argv=None) -> dict:
    from genmodels.data.moving_shapes import clip_for_spec
    from genmodels.eval.video_oracle import evaluate, load_video_eval_set

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=DEFAULT_MODEL, help="TextToVideoPipeline folder (default: %(default)s)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=4.0)
    p.add_argument("--guidance-interval", type=float, nargs=2, metavar=("T_LO", "T_HI"), default=None,
                   help="guide only at T_LO < t <= T_HI, the prompt alone elsewhere")
    p.add_argument("--frames", type=int, default=None, help="clip length (default: the eval specs', 8)")
    p.add_argument("--given", type=int, default=4, help="given frames for the continuation test")
    p.add_argument("--batch", type=int, default=6, help="clips per pipeline call (does not change the clips)")
    p.add_argument("--category", choices=["single", "two"], default=None,
                   help="only the prompts of this category (before --limit)")
    p.add_argument("--limit", type=int, default=None, help="first N prompts only (quick checks)")
    p.add_argument("--skip-continuation", action="store_true")
    p.add_argument("--skip-text-to-video", action="store_true", help="only the continuation test")
    p.add_argument("--first-frame-pass", action="store_true",
                   help="text to video in two passes: a clip, then its first frame animated again")
    p.add_argument("--negative", choices=["null", "still", "reversed"], default="null",
                   help="what guidance steers away from: the null text, the prompt with its objects standing "
                        "still, or with its directions reversed")
    p.add_argument("--layout", choices=["auto", "off"], default="auto",
                   help="auto: a pipeline with a layout_planner plans each prompt's layout; off: never")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", help="write the results here (atomically)")
    p.add_argument("--grid", help="PNG of the first clips (text to video, then continuation)")
    args = p.parse_args(argv)
    if args.skip_text_to_video and args.skip_continuation:
        raise SystemExit("--skip-text-to-video and --skip-continuation leave nothing to evaluate")
    if args.threads:
        torch.set_num_threads(args.threads)
    items = [item for item in load_video_eval_set() if args.category in (None, item["category"])][: args.limit]
    frames = args.frames or int(items[0]["spec"]["frames"])
    specs = [{**item["spec"], "frames": frames} for item in items]
    pipe = load(args.model)
    interval = tuple(args.guidance_interval) if args.guidance_interval else None
    plan = None if args.layout == "auto" else False
    result: dict = {"model": args.model, "steps": args.steps, "guidance": args.guidance, "frames": frames,
                    "guidance_interval": interval,
                    "first_frame_pass": args.first_frame_pass, "negative": args.negative, "category": args.category,
                    "prompts": len(items), "layout": args.layout,
                    "threads": torch.get_num_threads(), "targets": TARGETS}

    rows = []
    if not args.skip_text_to_video:
        t0 = time.perf_counter()
        planned: list = []
        clips = generate(pipe, items, steps=args.steps, guidance=args.guidance, batch=args.batch, frames=frames,
                         desc="text-to-video", first_frame_pass=args.first_frame_pass,
                         negatives=negative_prompts(items, args.negative), guidance_interval=interval,
                         plan_layout=plan, planned=planned)
        seconds = time.perf_counter() - t0
        t2v = rates(evaluate(clips, specs))
        t2v["layouts_planned"] = sum(lay is not None for lay in planned)
        t2v["seconds_per_clip"] = round(seconds / len(items), 3)
        t2v["pass"] = {k: t2v[k] >= v for k, v in TARGETS.items()}
        result["text_to_video"] = t2v
        print(f"text to video ({len(items)} prompts, {t2v['layouts_planned']} with a planned layout): "
              + ", ".join(f"{k} {t2v[k]:.3f}" for k in ("object", "motion", "identity", "all")))
        print("  objects that should move: " + describe_breakdown(t2v["motion_breakdown"]))
        for cat, r in t2v.get("per_category", {}).items():
            print(f"  {cat}: " + ", ".join(f"{k} {r[k]:.3f}" for k in ("object", "motion", "identity", "all")
                                           if k in r))
        rows = [(f"T2V: {item['prompt']}", clip) for item, clip in zip(items[:4], clips[:4])]
        rows += [(f"T2V: {item['prompt']}", clip) for item, clip in zip(items[30:34], clips[30:34])]

    if not args.skip_continuation:
        truth = np.stack([clip_for_spec(spec, seed=int(item["seed"]), frames=frames).frames
                          for item, spec in zip(items, specs)])
        given = truth[:, : args.given]
        cont = generate(pipe, items, steps=args.steps, guidance=args.guidance, batch=args.batch, frames=frames,
                        given=given, desc="continuation", negatives=negative_prompts(items, args.negative),
                        guidance_interval=interval)
        exact = float(np.mean([np.array_equal(c[: args.given], g) for c, g in zip(cont, given)]))
        report = rates(evaluate(cont, specs))
        report.update(given=args.given, given_frames_exact=exact,
                      truth_oracle=rates(evaluate(truth, specs))["all"])
        result["continuation"] = report
        print(f"continuation (first {args.given} of {frames} frames given): given frames bit-identical in "
              f"{exact:.3f} of clips; " + ", ".join(f"{k} {report[k]:.3f}" for k in
                                                      ("object", "motion", "identity", "all")))
        print("  objects that should move: " + describe_breakdown(report["motion_breakdown"]))
        rows += [(f"continued from {args.given}: {item['prompt']}", clip)
                 for item, clip in zip(items[:2] + items[30:32], list(cont[:2]) + list(cont[30:32]))]

    if args.grid:
        save_grid(args.grid, rows)
        print(f"wrote {args.grid}")
    if args.json:
        write_text_atomic(args.json, json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
