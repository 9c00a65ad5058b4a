"""Oracle scorer for the shapes world (``genmodels.data.shapes``): GenEval's checks without a detector.

Images
------
Square RGB images, any side >= 24 pixels, as:

- numpy or torch uint8 ``[H, W, 3]``, values 0-255;
- numpy or torch floating point ``[H, W, 3]`` or ``[3, H, W]``, values in ``value_range`` (default
  ``(0.0, 1.0)``, what diffusers returns with ``output_type="np"`` / ``"pt"``; pass ``(-1.0, 1.0)`` for model
  samples and ``ShapesDataset`` items); values may overshoot the range by 5% of its width and are clipped;
- ``PIL.Image.Image`` (converted to RGB).

Anything else raises ``ValueError``. ``evaluate`` also takes batches ``[N, ...]``.

Parsing an image into objects (``detect_objects``)
--------------------------------------------------
1. Every pixel snaps to the palette colour whose blends with black (``t * colour``) pass nearest to it, when
   its intensity ``t`` along that colour is at least ``min_intensity`` (0.5) and the distance is at most
   ``max_distance`` (75 RGB units); else it is background (``snap_to_palette``). Anti-aliased or blurred edges
   therefore cut at half intensity, where the sharp edge was, and noise or a colour cast up to tens of RGB
   units changes nothing (the nearest two rays, yellow's and orange's, are 77 apart at full intensity).
2. Per colour: background holes inside a region are filled, then 4-connected components are found
   (``scipy.ndimage.label``). Components smaller than ``min_area`` pixels (default 30% of a small triangle's
   area, 20 px at 64) are specks, not objects.
3. Shape from geometry (``classify_shape``): the fraction of the area in the lower half of the box (apex-up
   triangle 0.75, circle and square 0.5), then how much of the box corners is filled (square 1, circle 0).
   Components that fit no shape (elongated, apex down, too sparse) have shape None and match no caption.
4. Size: "small" when the longer box side is below the midpoint of the two ``SIZES`` fractions (0.25 side).

Scoring a spec (``score``), GenEval's rules with "exists" instead of its detector's top-confidence pick:

- single_object / colours: an object matching the description (shape; colour and size when stated) exists;
- two_objects / colour_attribution: two distinct objects match the two descriptions;
- counting: exactly ``count`` objects match the description;
- position: distinct objects ``a``, ``b`` match the descriptions with ``relation`` in
  ``relations_between(a.bbox, b.bbox)`` (GenEval's relative-position rule).

``evaluate`` returns per-category accuracies and their mean ("overall", GenEval's convention). The fixed
evaluation set, 40 prompts per category with generation seeds, is ``shapes_eval_prompts.jsonl`` next to this
file; rebuild it with ``python -m genmodels.eval.shapes_oracle --write-eval-set``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

from genmodels.data.shapes import (
    CATEGORIES,
    COLOURS,
    SIZES,
    check_spec,
    make_sample,
    object_extent,
    parse_caption,
    relations_between,
    sample_scene,
    shape_mask,
)
from genmodels.io import write_text_atomic

EVAL_SET_PATH = Path(__file__).resolve().parent / "shapes_eval_prompts.jsonl"
EVAL_SET_SEED = 2024
EVAL_PROMPTS_PER_CATEGORY = 40

COLOUR_NAMES = tuple(COLOURS)
PALETTE = np.array(list(COLOURS.values()), dtype=np.float32)  # [6, 3], rows in COLOUR_NAMES order
_PALETTE_NORM2 = (PALETTE**2).sum(1)
# RGB units (0-255 scale) from a colour's intensity ray (snap_to_palette): admits pure red (61 from red),
# rejects mid grey (84 from purple).
MAX_DISTANCE = 75.0
MIN_INTENSITY = 0.5  # fraction of a colour's full intensity: blurred edges are cut at half
MIN_AREA_FRACTION = 0.3  # of a small triangle's area: smaller components are specks
# Shape thresholds on a component's ShapeFeatures: see classify_shape.
MIN_ASPECT = 0.6
TRIANGLE_MIN_LOWER = 0.6
TRIANGLE_MAX_FILL = 0.8
SQUARE_MIN_CORNERS = 0.5
CIRCLE_MIN_FILL = 0.6
SIZE_THRESHOLD = sum(SIZES.values()) / 2
_FOUR_NEIGHBOURS = ndimage.generate_binary_structure(2, 1)
_SNAP_CHUNK = 64  # images per vectorised snapping step, to bound the [pixels, 6] distance arrays


@dataclass(frozen=True)
class Detected:
    """An object found in an image.

    ``shape`` in SHAPES or None (unrecognised), ``colour`` in COLOURS, ``size`` in SIZES; ``cx``, ``cy``: centre
    of the bounding box in pixels (column, row); ``area`` in pixels (holes filled); ``bbox``:
    ``(x0, y0, x1, y1)`` in pixels, ends exclusive.
    """

    shape: str | None
    colour: str
    size: str
    cx: float
    cy: float
    area: int
    bbox: tuple[int, int, int, int]


# ---------------------------------------------------------------------------------------------------------
# Input conversion


def _channels_last(array: np.ndarray) -> np.ndarray:
    if array.ndim == 3 and array.shape[0] == 3 and array.shape[-1] != 3:
        array = array.transpose(1, 2, 0)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"an image must be [H, W, 3] or [3, H, W], got shape {list(array.shape)}")
    if array.shape[0] != array.shape[1] or array.shape[0] < 24:
        raise ValueError(f"shapes-world images are square with a side >= 24 pixels, got {list(array.shape)}")
    return array


def to_rgb_uint8(image, value_range: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """``image`` (module docstring formats) as uint8 ``[H, W, 3]``; ValueError for anything else."""
    if isinstance(image, Image.Image):
        return _channels_last(np.asarray(image.convert("RGB")))
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        image = image.float().numpy() if image.is_floating_point() else image.numpy()
    if not isinstance(image, np.ndarray):
        raise ValueError(f"an image must be a numpy array, torch tensor or PIL image, got {type(image).__name__}")
    if image.dtype == np.uint8:
        if image.ndim == 3 and image.shape[-1] != 3:
            raise ValueError(f"uint8 images must be [H, W, 3], got shape {list(image.shape)}")
        return _channels_last(image)
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"images must be uint8 or floating point, got dtype {image.dtype}")
    image = _channels_last(image)
    low, high = value_range
    slack = 0.05 * (high - low)
    if not np.isfinite(image).all():
        raise ValueError("image values must be finite")
    if image.min() < low - slack or image.max() > high + slack:
        raise ValueError(
            f"floating-point image values must be in {value_range} (see value_range), "
            f"got min {image.min():.3g}, max {image.max():.3g}"
        )
    scaled = (image.astype(np.float32) - low) * (255.0 / (high - low))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _as_image_list(images, value_range: tuple[float, float]) -> list[np.ndarray]:
    if isinstance(images, (np.ndarray, torch.Tensor)):
        if images.ndim != 4:
            raise ValueError(f"a batch of images must be 4-d [N, ...], got shape {list(images.shape)}")
        images = list(images)
    return [to_rgb_uint8(image, value_range) for image in images]


# ---------------------------------------------------------------------------------------------------------
# Parsing images into objects


def snap_to_palette(
    images: np.ndarray, max_distance: float = MAX_DISTANCE, min_intensity: float = MIN_INTENSITY
) -> np.ndarray:
    """Colour index map int8 ``[...]`` of uint8 ``[..., 3]`` pixels: 0-5 = COLOUR_NAMES, -1 = background.

    Each palette colour ``c`` spans a ray of intensities ``t * c`` (its blends with the black background). A
    pixel ``x`` is measured against each ray: intensity ``t = x.c / |c|^2`` and distance ``|x - t c|`` (RGB
    units, 0-255 scale). It takes the nearest ray among those with ``t >= min_intensity``, or is background
    when none is within ``max_distance``. The half-intensity cut keeps a blurred edge where it was.
    """
    pixels = images.reshape(-1, 3).astype(np.float32)
    labels = np.full(len(pixels), -1, dtype=np.int8)
    # t >= min_intensity needs |x| >= min_intensity * |c|: skip the (mostly black) pixels darker than that
    candidates = np.flatnonzero((pixels**2).sum(1) >= min_intensity**2 * _PALETTE_NORM2.min())
    x = pixels[candidates]
    dots = x @ PALETTE.T  # [P, 6]
    intensity = dots / _PALETTE_NORM2
    distance2 = (x**2).sum(1, keepdims=True) - dots * intensity  # |x|^2 - (x.c)^2 / |c|^2
    distance2 = np.where(intensity >= min_intensity, distance2, np.inf)
    nearest = distance2.argmin(1)
    near = np.take_along_axis(distance2, nearest[:, None], 1)[:, 0] <= max_distance**2
    labels[candidates[near]] = nearest[near]
    return labels.reshape(images.shape[:-1])


def default_min_area(side: int) -> int:
    """Smallest component counted as an object: ``MIN_AREA_FRACTION`` of a small triangle's area (pixels)."""
    extent = object_extent("small", side)
    return max(1, int(MIN_AREA_FRACTION * shape_mask("triangle", extent).sum()))


class ShapeFeatures(NamedTuple):
    """Geometry of a component cropped to its bounding box; every entry is a ratio in [0, 1].

    aspect: shorter over longer box side. fill: area over box area. lower: fraction of the area below the middle
    row (the middle row counts half). corners: fraction of the four corner triangles of the box (legs a third
    of the box sides) that is set: 1 for a square, 0 for a circle, about 0.25 for a triangle.
    """

    aspect: float
    fill: float
    lower: float
    corners: float


@lru_cache(maxsize=256)
def _corner_region(h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w] + 0.5
    near_x, near_y = np.minimum(x, w - x) / (w / 3), np.minimum(y, h - y) / (h / 3)
    return near_x + near_y < 1


def shape_features(mask: np.ndarray) -> ShapeFeatures:
    """``ShapeFeatures`` of a component cropped to its bounding box (bool ``[h, w]``)."""
    h, w = mask.shape
    area = mask.sum()
    rows = mask.sum(1)
    y = np.arange(h)
    middle = (h - 1) / 2
    lower = (rows[y > middle].sum() + 0.5 * rows[y == middle].sum()) / area
    corners = _corner_region(h, w)
    return ShapeFeatures(
        aspect=min(h, w) / max(h, w),
        fill=float(area / (h * w)),
        lower=float(lower),
        corners=float(mask[corners].mean()) if corners.any() else 0.0,
    )


def classify_shape(mask: np.ndarray) -> str | None:
    """Shape of a component cropped to its bounding box (bool ``[h, w]``), or None when it resembles none.

    Apex-up triangles are the only shapes with most of their area in the lower half (ideal 0.75; blur erodes a
    small triangle's thin apex down to ~0.66). Circles and squares are symmetric (0.5): a square fills the
    corners of its box, a circle leaves them empty, which ragged edges and stray pixels barely change.
    """
    f = shape_features(mask)
    if f.aspect < MIN_ASPECT or f.lower < 1 - TRIANGLE_MIN_LOWER:  # elongated, or mass on top (apex down)
        return None
    if f.lower >= TRIANGLE_MIN_LOWER:
        return "triangle" if f.fill <= TRIANGLE_MAX_FILL else None
    if f.corners >= SQUARE_MIN_CORNERS:
        return "square"
    return "circle" if f.fill >= CIRCLE_MIN_FILL else None


def _objects_in(colour_map: np.ndarray, min_area: int) -> list[Detected]:
    """The objects of one snapped image ``[side, side]`` (``snap_to_palette`` output)."""
    side = colour_map.shape[0]
    found = []
    for colour in np.unique(colour_map):
        if colour < 0:
            continue
        mask = colour_map == colour
        # Fill holes of background only: a ring of one colour around an object of another stays a ring.
        mask |= ndimage.binary_fill_holes(mask) & (colour_map < 0)
        labels, count = ndimage.label(mask, structure=_FOUR_NEIGHBOURS)
        areas = np.bincount(labels.ravel(), minlength=count + 1)
        for k, box in enumerate(ndimage.find_objects(labels), start=1):
            if areas[k] < min_area:
                continue
            y0, y1, x0, x1 = box[0].start, box[0].stop, box[1].start, box[1].stop
            extent = max(x1 - x0, y1 - y0) / side
            found.append(
                Detected(
                    shape=classify_shape(labels[box] == k),
                    colour=COLOUR_NAMES[colour],
                    size="small" if extent < SIZE_THRESHOLD else "large",
                    cx=(x0 + x1 - 1) / 2,
                    cy=(y0 + y1 - 1) / 2,
                    area=int(areas[k]),
                    bbox=(int(x0), int(y0), int(x1), int(y1)),
                )
            )
    return sorted(found, key=lambda d: (d.bbox[1], d.bbox[0]))


def detect_objects(
    image,
    *,
    value_range: tuple[float, float] = (0.0, 1.0),
    max_distance: float = MAX_DISTANCE,
    min_area: int | None = None,
) -> list[Detected]:
    """Objects in ``image`` (module docstring: formats and method), top to bottom, then left to right."""
    rgb = to_rgb_uint8(image, value_range)
    side = rgb.shape[0]
    return _objects_in(snap_to_palette(rgb, max_distance), default_min_area(side) if min_area is None else min_area)


def _detect_many(images: list[np.ndarray], max_distance: float, min_area: int | None) -> list[list[Detected]]:
    """``detect_objects`` over uint8 images, snapping same-sized runs of images in vectorised chunks."""
    found = []
    for start in range(0, len(images), _SNAP_CHUNK):
        chunk = images[start : start + _SNAP_CHUNK]
        if all(im.shape == chunk[0].shape for im in chunk):
            maps = list(snap_to_palette(np.stack(chunk), max_distance))
        else:
            maps = [snap_to_palette(im, max_distance) for im in chunk]
        for colour_map in maps:
            area = default_min_area(colour_map.shape[0]) if min_area is None else min_area
            found.append(_objects_in(colour_map, area))
    return found


# ---------------------------------------------------------------------------------------------------------
# Scoring


def matches(obj: Detected, description: dict) -> bool:
    """True when ``obj`` fits a spec object ``{"shape", "colour", "size"}`` (None colour / size: any)."""
    return (
        obj.shape == description["shape"]
        and description.get("colour") in (None, obj.colour)
        and description.get("size") in (None, obj.size)
    )


def _distinct_pairs(objects: Sequence[Detected], first: dict, second: dict):
    for i, a in enumerate(objects):
        if matches(a, first):
            for j, b in enumerate(objects):
                if i != j and matches(b, second):
                    yield a, b


def score_detections(objects: Sequence[Detected], spec: dict) -> bool:
    """Whether detected ``objects`` satisfy ``spec`` (the rules are in the module docstring)."""
    category, descriptions = check_spec(spec)["category"], spec["objects"]
    if category in ("single_object", "colours"):
        return any(matches(obj, descriptions[0]) for obj in objects)
    if category == "counting":
        return sum(matches(obj, descriptions[0]) for obj in objects) == spec["count"]
    pairs = _distinct_pairs(objects, descriptions[0], descriptions[1])
    if category == "position":
        return any(spec["relation"] in relations_between(a.bbox, b.bbox) for a, b in pairs)
    return next(pairs, None) is not None  # two_objects, colour_attribution


def score(image, spec: dict | str, *, value_range: tuple[float, float] = (0.0, 1.0)) -> bool:
    """Whether ``image`` shows what ``spec`` claims; ``spec`` may also be a caption (``parse_caption``)."""
    spec = parse_caption(spec) if isinstance(spec, str) else spec
    return score_detections(detect_objects(image, value_range=value_range), spec)


def evaluate(
    images,
    specs: Sequence[dict | str],
    *,
    value_range: tuple[float, float] = (0.0, 1.0),
    max_distance: float = MAX_DISTANCE,
    min_area: int | None = None,
) -> dict:
    """Accuracy of ``images`` against ``specs`` (dicts or captions), one spec per image.

    Returns ``{"overall": mean of the per-category accuracies (GenEval's overall score), "accuracy": fraction
    of all images correct, "per_category": {category: accuracy}, "counts": {category: images}, "n": images,
    "correct": [bool per image]}``; categories without images are left out.
    """
    rgb = _as_image_list(images, value_range)
    specs = [check_spec(parse_caption(s) if isinstance(s, str) else s) for s in specs]
    if len(rgb) != len(specs) or not specs:
        raise ValueError(f"need one spec per image and at least one image, got {len(rgb)} images, {len(specs)}")
    correct = [
        score_detections(objects, spec)
        for objects, spec in zip(_detect_many(rgb, max_distance, min_area), specs, strict=True)
    ]
    per_category, counts = {}, {}
    for category in CATEGORIES:
        hits = [ok for ok, spec in zip(correct, specs) if spec["category"] == category]
        if hits:
            per_category[category], counts[category] = float(np.mean(hits)), len(hits)
    return {
        "overall": float(np.mean(list(per_category.values()))),
        "accuracy": float(np.mean(correct)),
        "per_category": per_category,
        "counts": counts,
        "n": len(correct),
        "correct": correct,
    }


def evaluate_imagefolder(folder: str | Path) -> dict:
    """``evaluate`` on an imagefolder: images listed in ``metadata.jsonl`` with their captions as specs."""
    folder = Path(folder)
    images, captions = [], []
    for line in (folder / "metadata.jsonl").read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            with Image.open(folder / record["file_name"]) as image:
                images.append(np.asarray(image.convert("RGB")))
            captions.append(record["text"])
    return evaluate(images, captions)


# ---------------------------------------------------------------------------------------------------------
# Fixed evaluation set


def make_eval_set(seed: int = EVAL_SET_SEED, per_category: int = EVAL_PROMPTS_PER_CATEGORY) -> list[dict]:
    """The evaluation prompts: ``per_category`` per category, each ``{"id", "category", "prompt", "seed",
    "spec"}``; ``seed`` (0 <= seed < 2**31) is the generation seed to use for that prompt.

    Prompts are drawn like training captions (``sample_scene``) from ``(seed, category)``; a prompt may repeat
    (single_object has 45 distinct prompts), with a different generation seed each time.
    """
    items = []
    for c, category in enumerate(CATEGORIES):
        rng = np.random.default_rng([seed, c])
        for i in range(per_category):
            _, caption, spec = sample_scene(category, rng)
            items.append(
                {
                    "id": f"{category}-{i:02d}",
                    "category": category,
                    "prompt": caption,
                    "seed": int(rng.integers(2**31)),
                    "spec": spec,
                }
            )
    return items


def write_eval_set(path: str | Path = EVAL_SET_PATH, seed: int = EVAL_SET_SEED) -> Path:
    """Write ``make_eval_set(seed)`` as JSON lines to ``path`` (atomically)."""
    lines = [json.dumps(item) for item in make_eval_set(seed)]
    return write_text_atomic(path, "\n".join(lines) + "\n")


def load_eval_set(path: str | Path = EVAL_SET_PATH) -> list[dict]:
    """The evaluation prompts stored at ``path`` (one JSON object per line)."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def validation_items(per_category: int, seed: int = 0) -> list[dict]:
    """``per_category`` × 6 captions of the *validation* split, shaped like the evaluation set's items, for
    choosing sampling settings or checkpoints without looking at the evaluation set (generation seeds 50,000 + i)."""
    items = []
    for i in range(per_category * len(CATEGORIES)):
        sample = make_sample(i, seed, "val")
        items.append({"id": f"val-{i}", "prompt": sample.caption, "spec": sample.spec,
                      "category": sample.spec["category"], "seed": 50_000 + i})
    return items


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m genmodels.eval.shapes_oracle", description=__doc__.split("\n")[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument(
        "--write-eval-set",
        nargs="?",
        const=str(EVAL_SET_PATH),
        metavar="PATH",
        help=f"write the fixed evaluation prompts (default {EVAL_SET_PATH.name} in this package)",
    )
    group.add_argument("--score", metavar="DIR", help="score an imagefolder (PNGs + metadata.jsonl captions)")
    args = parser.parse_args(argv)
    if args.write_eval_set:
        print(write_eval_set(args.write_eval_set))
    else:
        result = evaluate_imagefolder(args.score)
        result.pop("correct")
        json.dump(result, sys.stdout, indent=2)
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
