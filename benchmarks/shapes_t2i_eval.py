"""Shapes-world text-to-image evaluation with the oracle scorer (GenEval's protocol without a detector).

    python benchmarks/shapes_t2i_eval.py --model assets/shapes-sana [--model runs/other/pipeline ...] \\
        [--steps 20] [--guidance 4.0] [--guidance-interval T_LO T_HI] [--per-category 40] [--split eval|val] \\
        [--batch-size 48] [--json benchmarks/results/shapes_t2i_eval.json] [--samples-dir DIR] [--grid grid.png]

Text to image (default): for every model, ONE sample per prompt of the fixed evaluation set
(``genmodels/eval/shapes_eval_prompts.jsonl``: 40 prompts in each of the six categories), each drawn from the
prompt's own seed (one ``torch.Generator().manual_seed(seed)`` per prompt, so batching changes nothing), scored
by ``genmodels.eval.shapes_oracle.evaluate``. ``--split val`` uses validation-split captions instead (choose
checkpoints and settings there, then report the evaluation set). Printed side
by side: per-category accuracy and "overall", the mean of the categories (GenEval's convention).
``--samples-dir`` keeps the PNGs with an imagefolder ``metadata.jsonl`` (one model: DIR itself; several:
DIR/<model label>), so ``python -m genmodels.eval.shapes_oracle --score DIR`` re-scores them. ``--grid``
draws a contact sheet: the first four prompts of each category (×2, a green / red frame = oracle verdict).

Text-guided inpainting (``--inpaint``, instead of the above): ``--inpaint-cases`` K scenes built from a seed,
each with one object in the RIGHT half; the LEFT half is masked (generated) and the prompt names a colour and
shape that differ from that object's ("a purple triangle"). Every case is inpainted (a) with the prompt at
``--guidance`` and (b) at guidance 0 (the unconditional velocity; same prompt string and seed). The left half,
pasted onto a black square (the oracle takes square images), is scored against the prompt's spec; reported:
the satisfied rate with and without the prompt, their difference, and the number of outputs whose known
(right) half is not bit-identical to the input (must be 0).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from genmodels.data.shapes import (  # noqa: E402
    CATEGORIES,
    COLOURS,
    SHAPES,
    SIZES,
    ShapeObject,
    caption_for,
    object_extent,
    parse_caption,
    render_scene,
)
from genmodels.eval.shapes_oracle import evaluate, load_eval_set, validation_items  # noqa: E402
from genmodels.io import atomic_path, write_text_atomic  # noqa: E402
from genmodels.loading import load_pipeline  # noqa: E402
from genmodels.pipelines.text_to_image import TextToImagePipeline  # noqa: E402

GRID_PER_CATEGORY = 4
GRID_SCALE = 2


# ---------------------------------------------------------------------------------------------------------
# Loading


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_t2i_pipeline(folder: str | Path, device: str | torch.device = "cpu") -> TextToImagePipeline:
    """A text-to-image pipeline folder (safetensors only), on ``device``, progress bar off."""
    pipe = load_pipeline(TextToImagePipeline, folder)
    pipe.to(device)
    pipe.transformer.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def model_summary(pipe) -> dict:
    """The transformer facts worth recording next to a score."""
    config = pipe.transformer.config
    return {
        "cross_attn": config.cross_attn,
        "depth": int(config.depth),
        "width": int(config.width),
        "patch_size": int(config.patch_size),
        "sample_size": int(config.sample_size),
        "parameters": sum(p.numel() for p in pipe.transformer.parameters()),
        "prompt_planner": getattr(pipe.config, "prompt_planner", None),
    }


def model_labels(folders: Sequence[str]) -> list[str]:
    """Short distinct labels: the folder name (with its parent for generic names such as ``pipeline``)."""
    labels = []
    for folder in folders:
        path = Path(folder).resolve()
        label = path.name if path.name not in ("pipeline", "model", "final") else f"{path.parent.name}/{path.name}"
        labels.append(label)
    return [f"{i}:{label}" if labels.count(label) > 1 else label for i, label in enumerate(labels)]


def safe_name(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_") or "model"


# ---------------------------------------------------------------------------------------------------------
# Text to image


def select_items(items: Sequence[dict], per_category: int | None) -> list[dict]:
    """The first ``per_category`` items of every category (all of them for None), in the set's order."""
    if per_category is None:
        return list(items)
    if per_category < 1:
        raise ValueError(f"per_category must be >= 1, got {per_category}")
    seen: dict[str, int] = {}
    chosen = []
    for item in items:
        if seen.get(item["category"], 0) < per_category:
            seen[item["category"]] = seen.get(item["category"], 0) + 1
            chosen.append(item)
    return chosen


def generate(pipe: TextToImagePipeline, items: Sequence[dict], *, steps: int, guidance: float, batch_size: int,
             progress: bool = True, desc: str = "sampling",
             guidance_interval: tuple[float, float] | None = None, plan_prompts: bool | None = None,
             prompts_out: list[str] | None = None) -> np.ndarray:
    """One image per item (``prompt`` with its own ``seed``): uint8 ``[N, H, W, 3]``, ``batch_size`` prompts per
    pipeline call, each with its own generator (so an image does not depend on the batch it is in).
    ``plan_prompts`` goes to the pipeline (None: its prompt planner when it has one); the captions the model
    was given are appended to ``prompts_out`` when it is a list."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    images = []
    with tqdm(total=len(items), desc=desc, unit="img", disable=not progress) as bar:
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            out = pipe([item["prompt"] for item in chunk], num_inference_steps=steps, guidance_scale=guidance,
                       output_type="np", generator=[torch.Generator().manual_seed(int(i["seed"])) for i in chunk],
                       guidance_interval=guidance_interval, plan_prompts=plan_prompts)
            images.append(out.images)
            if prompts_out is not None:
                prompts_out.extend(out.prompts or [item["prompt"] for item in chunk])
            bar.update(len(chunk))
    return np.concatenate(images)


def evaluate_pipeline(pipe: TextToImagePipeline, items: Sequence[dict] | None = None, *, steps: int = 20,
                      guidance: float = 4.0, batch_size: int = 48, per_category: int | None = None,
                      progress: bool = True, desc: str = "sampling",
                      guidance_interval: tuple[float, float] | None = None,
                      plan_prompts: bool | None = None) -> dict:
    """Generate and score ``items`` (default: the fixed evaluation set, ``per_category`` per category).

    Returns the oracle's ``per_category``, ``overall`` (mean of categories), ``accuracy`` (over images),
    ``counts``, ``n``, ``correct`` (bool per item), ``ids``, ``model_prompts`` (what the model was given: the
    planned captions of a pipeline with a prompt planner), ``seconds`` (sampling wall time, excluding scoring)
    and ``images`` (uint8 ``[N, H, W, 3]``; drop it before writing JSON).
    """
    items = select_items(load_eval_set() if items is None else items, per_category)
    if pipe.transformer.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    model_prompts: list[str] = []
    images = generate(pipe, items, steps=steps, guidance=guidance, batch_size=batch_size, progress=progress,
                      desc=desc, guidance_interval=guidance_interval, plan_prompts=plan_prompts,
                      prompts_out=model_prompts)
    if pipe.transformer.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    scores = evaluate(images, [item["spec"] for item in items])
    return {**scores, "ids": [item["id"] for item in items], "model_prompts": model_prompts, "seconds": seconds,
            "images": images}


def public(result: dict) -> dict:
    """``result`` without the image arrays (JSON-able)."""
    return {k: v for k, v in result.items() if k != "images"}


def write_samples(folder: str | Path, items: Sequence[dict], images: np.ndarray, correct: Sequence[bool]) -> Path:
    """PNGs named by item id + ``metadata.jsonl`` (``file_name``, ``text`` = prompt, id, category, seed,
    oracle verdict): the imagefolder layout ``shapes_oracle --score`` reads."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for item, image, ok in zip(items, images, correct, strict=True):
        name = f"{item['id']}.png"
        Image.fromarray(image).save(folder / name)
        lines.append(json.dumps({"file_name": name, "text": item["prompt"], "id": item["id"],
                                 "category": item["category"], "seed": item["seed"], "correct": bool(ok)}))
    write_text_atomic(folder / "metadata.jsonl", "\n".join(lines) + "\n")
    return folder


def _tile(image: np.ndarray, ok: bool | None, scale: int = GRID_SCALE) -> Image.Image:
    """An image upscaled ``scale``× (nearest) inside a 2-pixel frame: green = correct, red = wrong."""
    tile = Image.fromarray(image).resize((image.shape[1] * scale, image.shape[0] * scale), Image.NEAREST)
    frame = {True: (40, 200, 60), False: (220, 40, 40), None: (90, 90, 90)}[ok]
    framed = Image.new("RGB", (tile.width + 4, tile.height + 4), frame)
    framed.paste(tile, (2, 2))
    return framed


def _sheet(rows: list[tuple[str, list[Image.Image]]], header: str, label_width: int = 120) -> Image.Image:
    """Labelled rows of equally sized tiles under a header line."""
    tile_w, tile_h = rows[0][1][0].size
    cols = max(len(tiles) for _, tiles in rows)
    gap, top = 4, 16
    sheet = Image.new("RGB", (label_width + cols * (tile_w + gap), top + len(rows) * (tile_h + gap)), (30, 30, 30))
    draw = ImageDraw.Draw(sheet)
    draw.text((4, 2), header, fill=(255, 255, 255))
    for r, (label, tiles) in enumerate(rows):
        y = top + r * (tile_h + gap)
        draw.text((4, y + tile_h // 2 - 5), label, fill=(220, 220, 220))
        for c, tile in enumerate(tiles):
            sheet.paste(tile, (label_width + c * (tile_w + gap), y))
    return sheet


def _stack_sheets(sheets: list[Image.Image]) -> Image.Image:
    """Sheets side by side (one per model)."""
    gap = 12
    out = Image.new("RGB", (sum(s.width for s in sheets) + gap * (len(sheets) - 1), max(s.height for s in sheets)),
                    (0, 0, 0))
    x = 0
    for sheet in sheets:
        out.paste(sheet, (x, 0))
        x += sheet.width + gap
    return out


def _save_png(image: Image.Image, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return Path(path)


def t2i_grid(results: list[tuple[str, list[dict], dict]], path: str | Path,
             per_category: int = GRID_PER_CATEGORY) -> Path:
    """Contact sheet: per model, one row per category with its first ``per_category`` samples."""
    sheets = []
    for label, items, result in results:
        rows = []
        for category in CATEGORIES:
            idx = [i for i, item in enumerate(items) if item["category"] == category][:per_category]
            if idx:
                rows.append((category, [_tile(result["images"][i], result["correct"][i]) for i in idx]))
        sheets.append(_sheet(rows, f"{label}  overall {result['overall']:.3f}"))
    return _save_png(_stack_sheets(sheets), path)


def print_t2i_table(labels: Sequence[str], results: Sequence[dict]) -> None:
    width = max(12, *(len(label) for label in labels))
    print(f"{'category':20s} " + " ".join(f"{label:>{width}s}" for label in labels))
    for category in CATEGORIES:
        if any(category in r["per_category"] for r in results):
            cells = [f"{r['per_category'][category]:{width}.3f}" if category in r["per_category"] else " " * width
                     for r in results]
            print(f"{category:20s} " + " ".join(cells))
    print(f"{'overall':20s} " + " ".join(f"{r['overall']:{width}.3f}" for r in results))
    print(f"{'images':20s} " + " ".join(f"{r['n']:{width}d}" for r in results))
    print(f"{'seconds':20s} " + " ".join(f"{r['seconds']:{width}.1f}" for r in results))


# ---------------------------------------------------------------------------------------------------------
# Text-guided inpainting


def make_inpaint_cases(k: int, side: int = 64, seed: int = 0) -> list[dict]:
    """``k`` inpainting cases, a pure function of ``(k, side, seed)``.

    Case i (rng ``default_rng([seed, i])``): one random object whose box lies in the right half (at least a
    pixel right of the middle and inside the border); ``mask`` ``[side, side]`` bool, True (generate) on the
    left half; ``prompt``: a colours-category caption of a (colour, shape) differing in both from that
    object's, so the object itself can never satisfy it; ``spec`` = ``parse_caption(prompt)``; ``seed``: the
    sampling seed.
    """
    half = side // 2
    cases = []
    for i in range(k):
        rng = np.random.default_rng([seed, i])
        shape, colour = SHAPES[rng.integers(len(SHAPES))], list(COLOURS)[rng.integers(len(COLOURS))]
        size = list(SIZES)[rng.integers(len(SIZES))]
        r = object_extent(size, side) // 2
        cx = int(rng.integers(half + 1 + r, side - 2 - r + 1))
        cy = int(rng.integers(1 + r, side - 2 - r + 1))
        obj = ShapeObject(shape, colour, size, cx, cy)
        other_shapes = [s for s in SHAPES if s != shape]
        other_colours = [c for c in COLOURS if c != colour]
        target = {"shape": other_shapes[rng.integers(len(other_shapes))],
                  "colour": other_colours[rng.integers(len(other_colours))], "size": None}
        prompt = caption_for({"category": "colours", "objects": [target], "count": None, "relation": None}, rng)
        mask = np.zeros((side, side), dtype=bool)
        mask[:, :half] = True
        cases.append({"id": f"inpaint-{i:03d}", "image": render_scene([obj], side), "mask": mask, "prompt": prompt,
                      "spec": parse_caption(prompt), "seed": int(rng.integers(2**31)),
                      "scene": [{"shape": shape, "colour": colour, "size": size, "cx": cx, "cy": cy}]})
    return cases


def left_half_on_black(image: np.ndarray) -> np.ndarray:
    """The left half of ``image`` ``[S, S, 3]`` on a black ``S × S`` canvas (the oracle scores square images;
    object sizes stay relative to S)."""
    canvas = np.zeros_like(image)
    half = image.shape[1] // 2
    canvas[:, :half] = image[:, :half]
    return canvas


def evaluate_inpainting(pipe: TextToImagePipeline, cases: Sequence[dict], *, steps: int = 20, guidance: float = 4.0,
                        progress: bool = True, desc: str = "inpainting") -> dict:
    """Inpaint every case with its prompt at ``guidance`` and at guidance 0 (same prompt and seed); score the left
    halves; count outputs whose known region differs from the input in any pixel."""
    outputs: dict[str, list[np.ndarray]] = {"with_prompt": [], "without_prompt": []}
    violations = 0
    t0 = time.perf_counter()
    with tqdm(total=2 * len(cases), desc=desc, unit="img", disable=not progress) as bar:
        for case in cases:
            for key, w in (("with_prompt", guidance), ("without_prompt", 0.0)):
                out = pipe(case["prompt"], num_inference_steps=steps, guidance_scale=float(w), output_type="np",
                           image=case["image"], mask=case["mask"],
                           generator=torch.Generator().manual_seed(case["seed"])).images[0]
                known = ~case["mask"]
                violations += int(not np.array_equal(out[known], case["image"][known]))
                outputs[key].append(out)
                bar.update()
    seconds = time.perf_counter() - t0
    specs = [case["spec"] for case in cases]
    scored = {key: evaluate([left_half_on_black(o) for o in outs], specs)["correct"] for key, outs in outputs.items()}
    rate = {key: float(np.mean(ok)) for key, ok in scored.items()}
    return {
        "n": len(cases),
        "with_prompt": rate["with_prompt"],
        "without_prompt": rate["without_prompt"],
        "difference": rate["with_prompt"] - rate["without_prompt"],
        "known_region_violations": violations,
        "outputs_checked": 2 * len(cases),
        "seconds": seconds,
        "cases": [{"id": c["id"], "prompt": c["prompt"], "seed": c["seed"], "scene": c["scene"],
                   "with_prompt": bool(a), "without_prompt": bool(b)}
                  for c, a, b in zip(cases, scored["with_prompt"], scored["without_prompt"], strict=True)],
        "images": outputs,
    }


def inpaint_grid(results: list[tuple[str, list[dict], dict]], path: str | Path, rows: int = 8) -> Path:
    """Per model: rows of (input with the mask dimmed, with prompt, without prompt) for the first cases."""
    sheets = []
    for label, cases, result in results:
        lines = []
        for i, case in enumerate(cases[:rows]):
            shown = case["image"].copy()
            shown[case["mask"]] = 60  # the region to generate, in grey
            lines.append((case["prompt"][:30], [
                _tile(shown, None),
                _tile(result["images"]["with_prompt"][i], result["cases"][i]["with_prompt"]),
                _tile(result["images"]["without_prompt"][i], result["cases"][i]["without_prompt"]),
            ]))
        sheets.append(_sheet(lines, f"{label}: input | prompt | w=0", label_width=190))
    return _save_png(_stack_sheets(sheets), path)


def write_inpaint_samples(folder: str | Path, cases: Sequence[dict], result: dict) -> Path:
    """Full inpainted outputs as imagefolders ``folder/with_prompt`` and ``folder/without_prompt``; their
    ``correct`` fields hold the left-half verdicts (``--score`` on them scores whole images instead)."""
    folder = Path(folder)
    for key in ("with_prompt", "without_prompt"):
        items = [{"id": c["id"], "prompt": c["prompt"], "category": "colours", "seed": c["seed"]} for c in cases]
        write_samples(folder / key, items, np.stack(result["images"][key]), [c[key] for c in result["cases"]])
    return folder


def print_inpaint_table(labels: Sequence[str], results: Sequence[dict]) -> None:
    width = max(12, *(len(label) for label in labels))
    print(f"{'inpainting (left half)':24s} " + " ".join(f"{label:>{width}s}" for label in labels))
    for key in ("with_prompt", "without_prompt", "difference"):
        print(f"{key:24s} " + " ".join(f"{r[key]:{width}.3f}" for r in results))
    print(f"{'known-region violations':24s} " + " ".join(f"{r['known_region_violations']:{width}d}" for r in results))
    print(f"{'cases':24s} " + " ".join(f"{r['n']:{width}d}" for r in results))
    print(f"{'seconds':24s} " + " ".join(f"{r['seconds']:{width}.1f}" for r in results))


# ---------------------------------------------------------------------------------------------------------
# Command line


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", required=True, metavar="FOLDER",
                   help="text-to-image pipeline folder; repeat to compare models side by side")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=4.0)
    p.add_argument("--guidance-interval", type=float, nargs=2, default=None, metavar=("T_LO", "T_HI"),
                   help="guide only at T_LO < t <= T_HI, the prompt alone elsewhere (default: every step)")
    p.add_argument("--per-category", type=int, default=None, metavar="N",
                   help="only the first N prompts of each category (default: all 40)")
    p.add_argument("--split", choices=["eval", "val"], default="eval",
                   help="eval: the fixed 240-prompt evaluation set; val: validation-split captions (--per-category "
                        "of each, default 20), for choosing checkpoints and settings without the evaluation set")
    p.add_argument("--batch-size", type=int, default=48, help="prompts per sampling batch (1: one pipeline call each)")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--json", metavar="OUT")
    p.add_argument("--samples-dir", metavar="DIR", help="save PNGs + metadata.jsonl (several models: DIR/<label>)")
    p.add_argument("--grid", metavar="PNG", help="contact sheet of the first samples per category")
    p.add_argument("--inpaint", action="store_true", help="run the text-guided inpainting benchmark instead")
    p.add_argument("--inpaint-cases", type=int, default=48, metavar="K")
    p.add_argument("--inpaint-seed", type=int, default=0)
    p.add_argument("--no-plan", action="store_true",
                   help="give a pipeline with a prompt planner the prompts as they are (no layout captions)")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = args.device or default_device()
    labels = model_labels(args.model)
    settings = {"steps": args.steps, "guidance": args.guidance, "device": device, "threads": torch.get_num_threads()}
    if args.guidance_interval is not None:
        settings["guidance_interval"] = args.guidance_interval
    if args.no_plan:
        settings["plan_prompts"] = False
    if args.inpaint:
        settings.update(cases=args.inpaint_cases, seed=args.inpaint_seed)
    else:
        settings.update(split=args.split, per_category=args.per_category or ("all" if args.split == "eval" else 20),
                        batch_size=args.batch_size)
    report: dict = {"mode": "inpaint" if args.inpaint else "t2i", "settings": settings, "models": []}
    shown = []
    for folder, label in zip(args.model, labels, strict=True):
        pipe = load_t2i_pipeline(folder, device)
        entry = {"model": str(folder), "label": label, **model_summary(pipe)}
        if args.inpaint:
            cases = make_inpaint_cases(args.inpaint_cases, pipe.default_size, args.inpaint_seed)
            result = evaluate_inpainting(pipe, cases, steps=args.steps, guidance=args.guidance,
                                         progress=not args.no_progress, desc=label)
            if args.samples_dir:
                folder_out = Path(args.samples_dir) / (safe_name(label) if len(labels) > 1 else "")
                write_inpaint_samples(folder_out, cases, result)
        else:
            cases = select_items(load_eval_set(), args.per_category) if args.split == "eval" \
                else validation_items(args.per_category or 20)
            result = evaluate_pipeline(pipe, cases, steps=args.steps, guidance=args.guidance,
                                       batch_size=args.batch_size, progress=not args.no_progress, desc=label,
                                       guidance_interval=args.guidance_interval,
                                       plan_prompts=False if args.no_plan else None)
            result["images_per_second"] = result["n"] / max(result["seconds"], 1e-9)
            if args.samples_dir:
                folder_out = Path(args.samples_dir) / (safe_name(label) if len(labels) > 1 else "")
                write_samples(folder_out, cases, result["images"], result["correct"])
        entry.update(public(result))
        report["models"].append(entry)
        shown.append((label, cases, result))
        del pipe
    if args.inpaint:
        print_inpaint_table(labels, report["models"])
    else:
        print_t2i_table(labels, report["models"])
    if args.grid:
        (inpaint_grid if args.inpaint else t2i_grid)(shown, args.grid)
    if args.json:
        write_text_atomic(args.json, json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
