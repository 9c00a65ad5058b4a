"""Moving-shapes world: short captioned clips of coloured shapes sliding over black, scorable by an oracle.

World
-----
A clip is ``frames`` images (8-16, default 8) of ``size x size`` pixels (32 or 64, default 32): uint8
``[F, S, S, 3]``, black background. Objects come from the still shapes world (``genmodels.data.shapes``): its
``SHAPES``, ``COLOURS`` and ``SIZES``, rasterised by its ``render_scene``, one frame at a time.

- Sizes: only those whose box is at least ``MIN_OBJECT_EXTENT`` (9) pixels wide (``object_sizes``): "large"
  (11 px) at 32, "small" (11 px) and "large" (21 px) at 64. Measured: a 5-px "small" circle at 32 survives
  lossless frames but after an MP4 round trip (yuv420 halves the chroma resolution) most 5-px circles read as
  squares, while every 11-px object keeps its shape.
- ``MOTIONS``: "left", "right", "up", "down" (image coordinates, y grows downwards) or "still". A moving object
  travels ``speed`` pixels per frame along one axis (``object_speeds``: 1-2 at 32, 2-4 at 64) and bounces off
  the border: when a step would leave the centre range (one free pixel between the box and the image edge, as
  in the still world) the position reflects off the limit and the velocity flips, so it stays fully inside.
- Bounce rule: the start position is drawn uniformly among those from which the first ``F // 2`` steps are
  free, so every clip (train, val and evaluation) moves in its stated direction over frames ``0 .. F // 2``;
  bounces happen only in the second half. The caption's direction is the initial one.
- Two objects never overlap: in every frame their bounding boxes are ``object_gap`` pixels apart
  (the rule of ``shapes.boxes_apart``); a layout that fails is redrawn.

Captions and specs
------------------
``CATEGORIES``: "single" (one object) and "two" (two objects of different (colour, shape), each with its own
motion). Every caption names each object's colour, shape and motion; sizes are never stated:

    "a red circle moves to the right", "a blue square stays still", "a video of a green triangle moving up",
    "a red circle moves left and a blue square moves down", "an orange circle goes up while a red square ..."

The spec records the claim as JSON-able data (``size`` per object is the rendered size, None when unknown;
``frames`` and ``size`` are the clip's, None for a parsed caption):

    {"category": str, "objects": [{"shape": str, "colour": str, "size": str | None, "motion": str}, ...],
     "frames": int | None, "size": int | None}

``parse_video_caption`` recovers the spec from any caption of the grammar (``VideoCaptionError`` otherwise).

Layouts (trajectories)
----------------------
A clip's layout is what a layout-conditioned generator is told besides the caption: per object, its noun phrase
("a red circle") and its bounding box in every frame, ``[F, 4]`` as ``(x0, y0, x1, y1)`` pixels with x1, y1
exclusive (``layout_boxes``). ``plan_layout`` is the layout planner of text to video: it parses a caption and
draws starts and speeds the way the world does (``place_movers``), so a planned layout is one the caption's
clip could have; the generator then only has to draw the objects along it.

Data
----
Clip ``i`` of a split is a pure function of ``(seed, split, i)`` (``make_clip``); its category is
``categories[i % len(categories)]``. ``MovingShapesDataset`` (registered as "moving_shapes") serves clips as
float tensors ``[3, F, S, S]`` in [-1, 1]. ``clip_for_spec`` renders a ground-truth clip for any spec (e.g. an
evaluation prompt).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from genmodels.data.shapes import (
    COLOURS,
    SHAPES,
    SIZES,
    ShapeObject,
    ShapesError,
    normalise_caption,
    object_extent,
    object_gap,
    render_scene,
)

CATEGORIES = ("single", "two")
MOTIONS = ("left", "right", "up", "down", "still")
# Unit step (dx, dy) of each motion in image coordinates.
DIRECTIONS: dict[str, tuple[int, int]] = {
    "left": (-1, 0),
    "right": (1, 0),
    "up": (0, -1),
    "down": (0, 1),
    "still": (0, 0),
}
CLIP_SIZES = (32, 64)
MIN_FRAMES, MAX_FRAMES = 8, 16
MIN_OBJECT_EXTENT = 9  # pixels: smaller objects lose their shape through lossy video codecs (module docstring)
SPLIT_STREAMS = {"train": 0, "val": 1}
EVAL_STREAM = 2  # the evaluation prompts' stream (genmodels.eval.video_oracle), disjoint from train and val
DEFAULT_LENGTHS = {"train": 60_000, "val": 1_200}
LAYOUT_TRIES = 8192  # random layouts tried per spec before the spec is redrawn
_LAYOUT_BATCH = 256
_SPEC_TRIES = 20


class MovingShapesError(ShapesError):
    """Bad arguments for the moving-shapes world (frames, size, category, split, index, spec)."""


class VideoCaptionError(MovingShapesError):
    """A caption outside the moving-shapes grammar."""


# ---------------------------------------------------------------------------------------------------------
# Geometry and motion


def check_clip_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or int(size) not in CLIP_SIZES:
        raise MovingShapesError(f"clip size must be one of {list(CLIP_SIZES)} pixels, got {size!r}")
    return int(size)


def check_frames(frames: int) -> int:
    if isinstance(frames, bool) or not isinstance(frames, (int, np.integer)) or not MIN_FRAMES <= frames <= MAX_FRAMES:
        raise MovingShapesError(f"frames must be an integer in {MIN_FRAMES}..{MAX_FRAMES}, got {frames!r}")
    return int(frames)


def object_sizes(side: int) -> tuple[str, ...]:
    """The ``SIZES`` used in ``side``-pixel clips: those at least ``MIN_OBJECT_EXTENT`` pixels wide."""
    return tuple(s for s in SIZES if object_extent(s, side) >= MIN_OBJECT_EXTENT)


def object_speeds(side: int) -> tuple[int, ...]:
    """Speeds in pixels per frame of moving objects: 1-2 at 32 pixels, scaled with the side (2-4 at 64)."""
    unit = max(1, side // 32)
    return tuple(range(unit, 2 * unit + 1))


def centre_limits(size: str, side: int) -> tuple[int, int]:
    """Lowest and highest centre coordinate of a ``size`` object: one free pixel between box and border."""
    r = object_extent(size, side) // 2
    return 1 + r, side - 2 - r


def free_steps(frames: int) -> int:
    """Steps from frame 0 during which no object bounces (the bounce rule in the module docstring)."""
    return frames // 2


def bounce_path(start, velocity, frames: int, low: int, high: int) -> np.ndarray:
    """Coordinates ``[..., frames]`` of points starting at ``start`` moving ``velocity`` pixels per frame
    (integers or integer arrays ``[...]``), reflected off ``low`` and ``high``: a step past a limit comes back by
    the overshoot and the velocity flips. Stepping with reflection is a triangle wave of the unfolded position,
    computed here in closed form.
    """
    start, velocity = np.asarray(start, dtype=np.int64), np.asarray(velocity, dtype=np.int64)
    span = high - low
    if span <= 0 or np.any(np.abs(velocity) > span):
        raise MovingShapesError(f"speeds {velocity} must not exceed the free range {low}..{high}")
    unfolded = (start[..., None] - low + velocity[..., None] * np.arange(frames)) % (2 * span)
    return low + np.where(unfolded <= span, unfolded, 2 * span - unfolded)


@dataclass(frozen=True)
class Mover:
    """An object in motion: ``shape``, ``colour``, ``size`` as in the shapes world, centre ``(x, y)`` at frame 0
    and velocity ``(vx, vy)`` in pixels per frame (one of them zero)."""

    shape: str
    colour: str
    size: str
    x: int
    y: int
    vx: int
    vy: int

    def track(self, frames: int, side: int) -> np.ndarray:
        """Centres ``[frames, 2]`` (column, row) over the clip, bouncing off the border."""
        low, high = centre_limits(self.size, side)
        return bounce_path([self.x, self.y], [self.vx, self.vy], frames, low, high).T


def _draw_candidates(obj: dict, rng: np.random.Generator, side: int, frames: int, n: int) -> np.ndarray:
    """``n`` random ``(x, y, vx, vy)`` rows ``[n, 4]`` for ``obj``: a speed from ``object_speeds`` (0 when still)
    and a start from which the first ``free_steps(frames)`` steps do not bounce."""
    low, high = centre_limits(obj["size"], side)
    speed = rng.choice(object_speeds(side), size=n) if obj["motion"] != "still" else np.zeros(n, dtype=np.int64)
    dx, dy = DIRECTIONS[obj["motion"]]
    reach = [d * speed * free_steps(frames) for d in (dx, dy)]  # signed travel before mid-clip, per axis
    x, y = (rng.integers(low + np.maximum(-r, 0), high - np.maximum(r, 0) + 1) for r in reach)
    return np.stack([x, y, dx * speed, dy * speed], 1)


def _apart_throughout(a: dict, b: dict, track_a: np.ndarray, track_b: np.ndarray, side: int) -> np.ndarray:
    """Whether objects ``a``, ``b`` with centre tracks ``[..., frames, 2]`` keep ``object_gap`` free pixels
    between their boxes in every frame (bool ``[...]``).

    The rule of ``shapes.boxes_apart`` for boxes of half-widths ``ra``, ``rb`` around their centre pixels: apart
    when the centres differ by at least ``ra + rb + 1 + gap`` on some axis.
    """
    need = object_extent(a["size"], side) // 2 + object_extent(b["size"], side) // 2 + 1 + object_gap(side)
    return np.all(np.abs(track_a - track_b).max(-1) >= need, axis=-1)


def _tracks(obj: dict, rows: np.ndarray, side: int, frames: int) -> np.ndarray:
    low, high = centre_limits(obj["size"], side)
    return np.stack(
        [
            bounce_path(rows[:, 0], rows[:, 2], frames, low, high),
            bounce_path(rows[:, 1], rows[:, 3], frames, low, high),
        ],
        -1,
    )


def place_movers(spec: dict, rng: np.random.Generator, side: int, frames: int) -> list[Mover] | None:
    """Starts and speeds for the objects of ``spec`` (sizes filled in) that never overlap, or None when
    ``LAYOUT_TRIES`` random layouts (drawn in batches) all collide."""
    objects = spec["objects"]
    batch = 1 if len(objects) == 1 else _LAYOUT_BATCH
    for _ in range(LAYOUT_TRIES // batch):
        rows = [_draw_candidates(obj, rng, side, frames, batch) for obj in objects]
        ok = np.ones(batch, dtype=bool)
        if len(objects) == 2:
            ok = _apart_throughout(*objects, *(_tracks(o, r, side, frames) for o, r in zip(objects, rows)), side)
        if ok.any():
            k = int(np.argmax(ok))
            return [Mover(o["shape"], o["colour"], o["size"], *(int(v) for v in r[k])) for o, r in zip(objects, rows)]
    return None


# ---------------------------------------------------------------------------------------------------------
# Rendering


def render_movers(movers: Sequence[Mover], side: int, frames: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """The clip uint8 ``[frames, side, side, 3]`` of ``movers`` and their centre tracks (``[frames, 2]`` each)."""
    tracks = [m.track(frames, side) for m in movers]
    clip = np.empty((frames, side, side, 3), dtype=np.uint8)
    for t in range(frames):
        scene = [ShapeObject(m.shape, m.colour, m.size, int(tr[t, 0]), int(tr[t, 1])) for m, tr in zip(movers, tracks)]
        clip[t] = render_scene(scene, side)
    return clip, tracks


# ---------------------------------------------------------------------------------------------------------
# Captions

VIDEO_PREFIXES = ("a video of", "a clip of", "a video showing")
# Finite verb phrases ("a red circle moves left") and participles ("a video of a red circle moving left").
_FINITE = {
    "left": ("moves left", "moves to the left", "goes left", "is moving left"),
    "right": ("moves right", "moves to the right", "goes right", "is moving right"),
    "up": ("moves up", "moves upwards", "goes up", "is moving up"),
    "down": ("moves down", "moves downwards", "goes down", "is moving down"),
    "still": ("stays still", "does not move", "is not moving", "stands still"),
}
_PARTICIPLE = {
    "left": ("moving left", "moving to the left"),
    "right": ("moving right", "moving to the right"),
    "up": ("moving up", "moving upwards"),
    "down": ("moving down", "moving downwards"),
    "still": ("staying still", "standing still", "not moving"),
}
MOTION_PHRASES: dict[str, tuple[str, ...]] = {m: _FINITE[m] + _PARTICIPLE[m] for m in MOTIONS}
# {a}, {b}: noun phrases ("a red circle"); {ma}, {mb}: finite motion phrases; {pa}, {pb}: participles.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "single": ("{a} {ma}", "{a} {pa}", "a video of {a} {pa}", "a clip of {a} {pa}", "a video showing {a} {pa}"),
    "two": (
        "{a} {ma} and {b} {mb}",
        "{a} {ma} while {b} {mb}",
        "{a} {pa} and {b} {pb}",
        "a video of {a} {pa} and {b} {pb}",
        "a clip of {a} {pa} and {b} {pb}",
    ),
}


def _choice(rng: np.random.Generator, options: Sequence):
    return options[int(rng.integers(len(options)))]


def _noun_phrase(obj: dict) -> str:
    return f"{'an' if obj['colour'][0] in 'aeiou' else 'a'} {obj['colour']} {obj['shape']}"


def video_caption_for(spec: dict, rng: np.random.Generator) -> str:
    """A caption of ``spec`` in one of its category's TEMPLATES, chosen (with its wording) by ``rng``."""
    template = _choice(rng, TEMPLATES[spec["category"]])
    slots = {}
    for obj, tag in zip(spec["objects"], "ab"):
        slots[tag] = _noun_phrase(obj)
        slots[f"m{tag}"] = _choice(rng, _FINITE[obj["motion"]])
        slots[f"p{tag}"] = _choice(rng, _PARTICIPLE[obj["motion"]])
    return template.format(**slots)


def _alternation(words) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


_MOTION_OF_PHRASE = {p: m for m, phrases in MOTION_PHRASES.items() for p in phrases}


def _clause(tag: str) -> str:
    return (
        rf"an? (?P<{tag}colour>{_alternation(COLOURS)}) (?P<{tag}shape>{_alternation(SHAPES)}) "
        rf"(?P<{tag}motion>{_alternation(_MOTION_OF_PHRASE)})"
    )


_VIDEO_GRAMMAR = re.compile(
    rf"(?:(?:{_alternation(VIDEO_PREFIXES)}) )?{_clause('a')}(?: (?:and|while) {_clause('b')})?"
)


def _object(shape: str, colour: str, motion: str, size: str | None = None) -> dict:
    return {"shape": shape, "colour": colour, "size": size, "motion": motion}


def _spec(objects: list[dict], frames: int | None, size: int | None) -> dict:
    return {"category": "single" if len(objects) == 1 else "two", "objects": objects, "frames": frames, "size": size}


def check_video_spec(spec: dict) -> dict:
    """``spec`` if it is well formed (module docstring), else ``MovingShapesError`` saying what is wrong."""
    if not isinstance(spec, dict) or spec.get("category") not in CATEGORIES:
        raise MovingShapesError(f"spec must be a dict with a category in {list(CATEGORIES)}, got {spec!r}")
    objects, wanted = spec.get("objects"), 1 if spec["category"] == "single" else 2
    if not isinstance(objects, list) or len(objects) != wanted:
        raise MovingShapesError(f"a {spec['category']} spec needs {wanted} object(s), got {objects!r}")
    for obj in objects:
        if (
            not isinstance(obj, dict)
            or obj.get("shape") not in SHAPES
            or obj.get("colour") not in COLOURS
            or obj.get("motion") not in MOTIONS
            or obj.get("size") not in (None, *SIZES)
        ):
            raise MovingShapesError(
                f"object {obj!r} needs a shape in {list(SHAPES)}, a colour in {list(COLOURS)}, a motion in "
                f"{list(MOTIONS)} and a size in {list(SIZES)} or None"
            )
    if len({(o["shape"], o["colour"]) for o in objects}) != len(objects):
        raise MovingShapesError(f"the two objects must differ in shape or colour: {objects!r}")
    if spec.get("frames") is not None:
        check_frames(spec["frames"])
    if spec.get("size") is not None:
        check_clip_size(spec["size"])
    return spec


def parse_video_caption(caption: str, frames: int | None = None, size: int | None = None) -> dict:
    """The spec that ``caption`` states (object sizes None; ``frames`` and ``size`` as given);
    ``VideoCaptionError`` when it is outside the grammar.

    The grammar: an optional prefix of ``VIDEO_PREFIXES``, then one or two clauses joined by "and" / "while";
    a clause is "a"/"an", a colour, a shape and any phrase of ``MOTION_PHRASES``. Case, spacing and a final
    full stop are ignored.
    """
    if not isinstance(caption, str):
        raise VideoCaptionError(f"caption must be a string, got {type(caption).__name__}")
    m = _VIDEO_GRAMMAR.fullmatch(normalise_caption(caption))
    if m is None:
        raise VideoCaptionError(
            f"{caption!r} is outside the moving-shapes caption grammar (genmodels.data.moving_shapes)"
        )
    objects = [
        _object(m.group(f"{tag}shape"), m.group(f"{tag}colour"), _MOTION_OF_PHRASE[m.group(f"{tag}motion")])
        for tag in "ab"
        if m.group(f"{tag}shape")
    ]
    try:
        return check_video_spec(_spec(objects, frames, size))
    except MovingShapesError as err:
        raise VideoCaptionError(f"{caption!r}: {err}") from err


# ---------------------------------------------------------------------------------------------------------
# Layouts

MAX_LAYOUT_OBJECTS = 2  # objects per clip, so per layout


def layout_boxes(movers: Sequence[Mover], side: int, frames: int) -> np.ndarray:
    """Bounding boxes ``[K, frames, 4]`` float32 ``(x0, y0, x1, y1)`` (x1, y1 exclusive, pixels) of ``movers``,
    frame by frame: the box ``render_scene`` fills around each centre."""
    out = np.zeros((len(movers), frames, 4), dtype=np.float32)
    for k, m in enumerate(movers):
        r = object_extent(m.size, side) // 2
        tr = m.track(frames, side)
        out[k] = np.stack([tr[:, 0] - r, tr[:, 1] - r, tr[:, 0] + r + 1, tr[:, 1] + r + 1], axis=-1)
    return out


@dataclass(frozen=True)
class ClipLayout:
    """A planned (or ground-truth) layout: ``phrases`` (one noun phrase per object) and ``boxes``
    ``[K, F, 4]`` float32 pixels (see the module docstring); ``spec`` with every field filled in."""

    phrases: tuple[str, ...]
    boxes: np.ndarray
    spec: dict


def plan_layout(caption: str, rng: np.random.Generator, size: int = 32, frames: int = 8) -> ClipLayout:
    """The layout planner: ``caption``'s objects (``parse_video_caption``; ``VideoCaptionError`` outside the
    grammar) with sizes from ``object_sizes`` and starts / speeds drawn as the world draws them (moving the
    stated way over the first half, bouncing after, never overlapping), all from ``rng``."""
    spec = parse_video_caption(caption, check_frames(frames), check_clip_size(size))
    for _ in range(_SPEC_TRIES):
        for obj in spec["objects"]:
            obj["size"] = _choice(rng, object_sizes(size))
        movers = place_movers(spec, rng, size, frames)
        if movers is not None:
            return ClipLayout(tuple(_noun_phrase(o) for o in spec["objects"]), layout_boxes(movers, size, frames),
                              spec)
    raise MovingShapesError(f"could not lay out {caption!r} in a {size}-pixel clip of {frames} frames")


# ---------------------------------------------------------------------------------------------------------
# Clips


@dataclass(frozen=True)
class ClipSample:
    """One rendered clip: ``frames`` uint8 ``[F, S, S, 3]``, its ``caption`` and ``spec``, ``tracks``: per
    object, the ``(cx, cy)`` centre pixel in each frame, and ``boxes``: the objects' ``layout_boxes``."""

    frames: np.ndarray
    caption: str
    spec: dict
    tracks: list[list[tuple[int, int]]]
    boxes: np.ndarray | None = None  # [K, F, 4] float32


def _random_object(rng: np.random.Generator, side: int) -> dict:
    return _object(
        _choice(rng, SHAPES), _choice(rng, tuple(COLOURS)), _choice(rng, MOTIONS), _choice(rng, object_sizes(side))
    )


def sample_video_spec(category: str, rng: np.random.Generator, size: int = 32, frames: int = 8) -> dict:
    """A random spec of ``category``: objects of distinct (colour, shape), motions uniform over ``MOTIONS``."""
    if category not in CATEGORIES:
        raise MovingShapesError(f"unknown category {category!r}; known: {list(CATEGORIES)}")
    size, frames = check_clip_size(size), check_frames(frames)
    objects = [_random_object(rng, size)]
    if category == "two":
        second = _random_object(rng, size)
        while (second["shape"], second["colour"]) == (objects[0]["shape"], objects[0]["colour"]):
            second = _random_object(rng, size)
        objects.append(second)
    return _spec(objects, frames, size)


def _clip_of(spec: dict, movers: list[Mover], caption: str) -> ClipSample:
    frames, tracks = render_movers(movers, spec["size"], spec["frames"])
    return ClipSample(frames, caption, spec, [[(int(x), int(y)) for x, y in tr] for tr in tracks],
                      layout_boxes(movers, spec["size"], spec["frames"]))


def clip_for_spec(
    spec: dict, seed: int = 0, size: int | None = None, frames: int | None = None, caption: str | None = None
) -> ClipSample:
    """A ground-truth clip of ``spec`` (a caption of it unless ``caption`` is given), random layout from ``seed``.

    The clip side and length are ``size`` / ``frames``, else the spec's, else 32 and 8; object sizes that are
    None or not drawn at that side (a "small" object of a 64-pixel spec rendered at 32) are drawn from
    ``object_sizes``. The returned spec has every field filled in.
    """
    spec = check_video_spec(json.loads(json.dumps(spec)))
    spec["size"] = check_clip_size(size or spec.get("size") or 32)
    spec["frames"] = check_frames(frames or spec.get("frames") or 8)
    rng = np.random.default_rng([_check_non_negative("seed", seed), EVAL_STREAM, 1])  # 3 words: no eval-set key
    allowed = object_sizes(spec["size"])
    for obj in spec["objects"]:
        obj["size"] = obj["size"] if obj["size"] in allowed else _choice(rng, allowed)
    movers = place_movers(spec, rng, spec["size"], spec["frames"])
    if movers is None:
        raise MovingShapesError(f"could not place {spec['objects']} without overlap in a {spec['size']}-pixel clip")
    return _clip_of(spec, movers, caption or video_caption_for(spec, rng))


def sample_clip(category: str, rng: np.random.Generator, size: int = 32, frames: int = 8) -> ClipSample:
    """A random clip of ``category``; ``rng`` is consumed deterministically. Specs that cannot be laid out
    without overlap (rare: two movers crossing in a long clip) are redrawn."""
    for _ in range(_SPEC_TRIES):
        spec = sample_video_spec(category, rng, size, frames)
        movers = place_movers(spec, rng, size, frames)
        if movers is not None:
            return _clip_of(spec, movers, video_caption_for(spec, rng))
    raise MovingShapesError(f"could not lay out a {category} clip of {frames} frames at {size} pixels")


def _check_categories(categories: Sequence[str]) -> tuple[str, ...]:
    categories = (categories,) if isinstance(categories, str) else tuple(categories)
    if not categories or any(c not in CATEGORIES for c in categories):
        raise MovingShapesError(f"categories must be a non-empty subset of {list(CATEGORIES)}, got {list(categories)}")
    return categories


def _stream(split: str) -> int:
    if split not in SPLIT_STREAMS:
        raise MovingShapesError(f"split must be one of {list(SPLIT_STREAMS)}, got {split!r}")
    return SPLIT_STREAMS[split]


def _check_non_negative(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise MovingShapesError(f"{name} must be an integer >= 0, got {value!r}")
    return int(value)


def make_clip(
    index: int,
    seed: int = 0,
    split: str = "train",
    size: int = 32,
    frames: int = 8,
    categories: Sequence[str] = CATEGORIES,
) -> ClipSample:
    """Clip ``index`` of ``split``: category ``categories[index % len(categories)]``, randomness from
    ``(seed, split, index)`` only."""
    categories = _check_categories(categories)
    index, seed = _check_non_negative("index", index), _check_non_negative("seed", seed)
    rng = np.random.default_rng([seed, _stream(split), index])
    return sample_clip(categories[index % len(categories)], rng, size, frames)


class MovingShapesDataset(Dataset):
    """Moving-shapes clips rendered on the fly, as model inputs in [-1, 1].

    Items are dicts: ``pixel_values`` float32 ``[3, F, S, S]`` (channels, then time; uint8 / 127.5 - 1),
    ``caption`` (str), ``category`` (str) and ``spec`` (JSON text). Item ``i`` is
    ``make_clip(i, seed, split, size, frames, categories)``; ``length`` defaults to 60,000 (train) or 1,200 (val).
    With ``layout`` the items also hold the clip's layout for a layout-conditioned model: ``layout_boxes``
    float32 ``[MAX_LAYOUT_OBJECTS, F, 4]`` (pixels; zeros for a missing object), ``layout_valid`` bool
    ``[MAX_LAYOUT_OBJECTS]`` and ``layout_phrases`` (the objects' noun phrases joined by "|").
    """

    def __init__(
        self,
        split: str = "train",
        size: int = 32,
        frames: int = 8,
        length: int | None = None,
        seed: int = 0,
        categories: Sequence[str] = CATEGORIES,
        layout: bool = False,
    ) -> None:
        _stream(split)
        self.layout = bool(layout)
        self.split = split
        self.size = check_clip_size(size)
        self.frames = check_frames(frames)
        self.length = DEFAULT_LENGTHS[split] if length is None else length
        if isinstance(self.length, bool) or not isinstance(self.length, (int, np.integer)) or self.length <= 0:
            raise MovingShapesError(f"length must be a positive integer, got {length!r}")
        self.seed = _check_non_negative("seed", seed)
        self.categories = _check_categories(categories)

    @property
    def layout_planner(self) -> str | None:
        """The text-to-video pipeline's planner for a model trained on these items' layouts (None: no layouts)."""
        return "moving_shapes" if self.layout else None

    def __len__(self) -> int:
        return int(self.length)

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} items")
        clip = make_clip(int(index), self.seed, self.split, self.size, self.frames, self.categories)
        pixels = torch.from_numpy(clip.frames).permute(3, 0, 1, 2).float() / 127.5 - 1.0
        item = {
            "pixel_values": pixels.contiguous(),
            "caption": clip.caption,
            "category": clip.spec["category"],
            "spec": json.dumps(clip.spec, sort_keys=True),
        }
        if self.layout:
            k = len(clip.spec["objects"])
            boxes = np.zeros((MAX_LAYOUT_OBJECTS, self.frames, 4), dtype=np.float32)
            boxes[:k] = clip.boxes
            item["layout_boxes"] = torch.from_numpy(boxes)
            item["layout_valid"] = torch.arange(MAX_LAYOUT_OBJECTS) < k
            item["layout_phrases"] = "|".join(_noun_phrase(o) for o in clip.spec["objects"])
        return item

    def __repr__(self) -> str:
        return (
            f"MovingShapesDataset(split={self.split!r}, size={self.size}, frames={self.frames}, "
            f"length={self.length}, seed={self.seed}, categories={list(self.categories)}"
            + (", layout=True)" if self.layout else ")")
        )


# Direction words, and clips as one still image (for a contrastive text encoder that must see motion)

REVERSED_DIRECTIONS = {"left": "right", "right": "left", "up": "down", "down": "up", "upwards": "downwards",
                       "downwards": "upwards"}
_DIRECTION_WORD = re.compile(r"\b(left|right|upwards|downwards|up|down)\b")


def reverse_direction(caption: str) -> str:
    """The caption with every direction word reversed ("moves to the left" → "moves to the right")."""
    return _DIRECTION_WORD.sub(lambda m: REVERSED_DIRECTIONS[m.group(1)], caption)


_MOVING_FINITE = re.compile(rf"\b({_alternation(p for m in MOTIONS if m != 'still' for p in _FINITE[m])})\b")
_MOVING_PARTICIPLE = re.compile(
    rf"\b({_alternation(p for m in MOTIONS if m != 'still' for p in _PARTICIPLE[m])})\b")


def still_caption(caption: str) -> str:
    """The caption with every object standing still ("a red circle moves left and a blue square moving up" →
    "a red circle stays still and a blue square standing still"): a negative prompt that steers a clip away
    from not moving. ``VideoCaptionError`` when ``caption`` is outside the grammar."""
    parse_video_caption(caption)
    text = normalise_caption(caption)
    return _MOVING_PARTICIPLE.sub("standing still", _MOVING_FINITE.sub("stays still", text))


def motion_negative(caption: str) -> str | None:
    """The negative prompt that steers ``caption``'s clip away from not moving: :func:`still_caption` when some
    object moves, None (the null text) when none does. ``VideoCaptionError`` outside the grammar."""
    still = still_caption(caption)
    return None if still == normalise_caption(caption) else still


def filmstrip(clip: torch.Tensor) -> torch.Tensor:
    """A clip ``[C, F, H, W]`` (F ≥ 4) as one ``[C, 2H, 2W]`` image: frames 0, F/4, F/2 and 3F/4 in reading
    order (top left, top right, bottom left, bottom right), so a still-image encoder sees the motion."""
    if clip.ndim != 4 or clip.shape[1] < 4:
        raise MovingShapesError(f"a filmstrip needs a [C, F ≥ 4, H, W] clip, got {tuple(clip.shape)}")
    f = clip.shape[1]
    a, b, c, d = (clip[:, i * f // 4] for i in range(4))
    return torch.cat([torch.cat([a, b], dim=-1), torch.cat([c, d], dim=-1)], dim=-2)


class FilmstripDataset(Dataset):
    """Moving-shapes clips as :func:`filmstrip` images of side ``image_size`` (clips of ``image_size // 2``
    pixels, 8 frames): ``{"pixel_values" [3, S, S] in [−1, 1], "caption", "spec"}``, for ``train_clip.py
    --data moving_shapes``."""

    def __init__(self, split: str = "train", image_size: int = 64, length: int | None = None, seed: int = 0):
        if image_size % 2:
            raise MovingShapesError(f"a filmstrip image has an even side, got {image_size}")
        self.clips = MovingShapesDataset(split, size=image_size // 2, frames=8, length=length, seed=seed)

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> dict:
        item = self.clips[index]
        return {"pixel_values": filmstrip(item["pixel_values"]), "caption": item["caption"], "spec": item["spec"]}
