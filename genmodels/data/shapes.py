"""Shapes world: captioned images of coloured shapes on black, scorable by an oracle (GenEval-style).

World
-----
An image is ``size x size`` RGB uint8 (default 64), background black ``(0, 0, 0)``, holding 1-4 objects. The
vocabulary is fixed so that outside evaluators can score outputs:

- ``SHAPES``: circle, square, triangle (isosceles, apex up, base at the bottom).
- ``COLOURS``: name -> exact RGB; every object pixel has exactly its palette colour (no anti-aliasing).
- ``SIZES``: name -> side of the object's bounding box as a fraction of the image side; in pixels the odd
  integer nearest to it (``object_extent``: 11 and 21 px at 64).
- ``RELATIONS``: "left of", "right of", "above", "below", in image coordinates (y grows downwards), decided
  from bounding boxes by GenEval's rule (``relations_between``).

Objects never overlap: bounding boxes are at least ``object_gap(size)`` pixels apart (3 at 64) and at least one
pixel inside the image border. Shapes are rasterised with numpy (pixel centres inside the continuous shape),
so images are identical across Pillow versions.

Captions and specs
------------------
``CATEGORIES`` are GenEval's six tasks. Each caption states a claim that ``spec`` records as JSON-able data:

    {"category": str, "objects": [{"shape": str, "colour": str | None, "size": str | None}, ...],
     "count": int | None, "relation": str | None}

- single_object: one object, shape (and maybe size) only: "a photo of a circle", "there is a small square".
- two_objects: two different shapes, no colours: "a circle and a triangle".
- counting: ``count`` (2-4) objects of one shape, maybe one colour: "three squares", "there are 3 blue squares".
- colours: one shape with its colour: "a purple triangle", "a triangle that is purple".
- position: ``objects[0]`` is ``relation`` ``objects[1]``: "a red circle to the left of a blue square".
- colour_attribution: two (colour, shape) pairs: "a red square and a green circle".

``parse_caption`` recovers the spec from any caption of this grammar (``CaptionError`` otherwise), so free
prompts can be scored. Scenes of categories other than single_object and counting may hold one distractor,
whose shape is mentioned nowhere in the caption, so it never changes the caption's truth.

Data
----
Sample ``i`` of a split is a pure function of ``(seed, split, i)``: ``ShapesDataset`` (registered as "shapes"),
``render_dataset`` and ``export_imagefolder`` (PNGs + diffusers' ``metadata.jsonl``) all draw from it; train
and val use different seed streams. Sample ``i`` has category ``categories[i % len(categories)]``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

SHAPES = ("circle", "square", "triangle")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "green": (40, 190, 70),
    "blue": (40, 90, 240),
    "yellow": (240, 220, 40),
    "purple": (160, 70, 220),
    "orange": (250, 140, 20),
}
SIZES: dict[str, float] = {"small": 1 / 6, "large": 1 / 3}
RELATIONS = ("left of", "right of", "above", "below")
CATEGORIES = ("single_object", "two_objects", "counting", "colours", "position", "colour_attribution")
COUNTS = (2, 3, 4)
NUMBER_WORDS = {2: "two", 3: "three", 4: "four"}
SPLIT_STREAMS = {"train": 0, "val": 1}
_LAYOUT_STREAM = 7  # the coin deciding a layout caption (ShapesDataset.layout_share) has its own stream
DEFAULT_LENGTHS = {"train": 60_000, "val": 1_200}

# GenEval's position rule: centre offsets shrink by this fraction of the summed box sizes before the direction
# test, so objects that nearly line up relate in no direction.
POSITION_THRESHOLD = 0.1
# Position scenes separate the pair by at least this fraction of the side along the stated axis, and by at
# most half that distance across it, so the relation is unambiguous (GenEval's rule then holds with margin).
POSITION_MIN_AXIS_OFFSET = 0.25


class ShapesError(ValueError):
    """Bad arguments for the shapes world (unknown category, size, split, ...)."""


class CaptionError(ShapesError):
    """A caption outside the shapes grammar."""


# ---------------------------------------------------------------------------------------------------------
# Geometry


@dataclass(frozen=True)
class ShapeObject:
    """One object: ``shape`` in SHAPES, ``colour`` in COLOURS, ``size`` in SIZES, centre pixel ``(cx, cy)``.

    ``cx`` is the column and ``cy`` the row of the centre pixel of the bounding box (y grows downwards).
    """

    shape: str
    colour: str
    size: str
    cx: int
    cy: int

    def bbox(self, side: int) -> tuple[int, int, int, int]:
        """Bounding box ``(x0, y0, x1, y1)`` in pixels of a ``side``-pixel image, ends exclusive."""
        r = object_extent(self.size, side) // 2
        return self.cx - r, self.cy - r, self.cx + r + 1, self.cy + r + 1


Scene = list[ShapeObject]


def object_extent(size: str, side: int) -> int:
    """Bounding-box side in pixels of a ``size`` object in a ``side``-pixel image: the nearest odd integer."""
    if size not in SIZES:
        raise ShapesError(f"unknown size {size!r}; known: {list(SIZES)}")
    return 2 * int(np.floor((SIZES[size] * side - 1) / 2 + 0.5)) + 1


def object_gap(side: int) -> int:
    """Minimum gap in pixels between the bounding boxes of two objects (3 at 64)."""
    return max(2, side // 20)


MAX_IMAGE_SIDE = 4096  # larger pictures are refused rather than allocated


def check_image_side(side: int) -> int:
    if isinstance(side, bool) or not isinstance(side, (int, np.integer)) or not 24 <= side <= MAX_IMAGE_SIDE:
        raise ShapesError(f"image size must be an integer in 24..{MAX_IMAGE_SIDE} pixels, got {side!r}")
    return int(side)


@lru_cache(maxsize=64)
def shape_mask(shape: str, extent: int) -> np.ndarray:
    """Bool mask ``[extent, extent]`` of ``shape`` filling an ``extent``-pixel box (odd ``extent``).

    A pixel is set when its centre lies inside the continuous shape: the full box (square), the inscribed disc
    (circle), or the triangle with its apex at the top middle of the box and its base along the bottom edge.
    """
    if shape not in SHAPES:
        raise ShapesError(f"unknown shape {shape!r}; known: {list(SHAPES)}")
    r = (extent - 1) / 2
    v, u = np.mgrid[0:extent, 0:extent] - r  # v: rows (down), u: columns, from the centre pixel
    if shape == "square":
        mask = np.ones((extent, extent), dtype=bool)
    elif shape == "circle":
        mask = u**2 + v**2 <= (r + 0.5) ** 2
    else:
        mask = np.abs(u) <= (v + r + 0.5) / 2
    mask.setflags(write=False)
    return mask


def boxes_apart(a: tuple[int, int, int, int], b: tuple[int, int, int, int], gap: int) -> bool:
    """True when boxes ``(x0, y0, x1, y1)`` (ends exclusive) have at least ``gap`` free pixels between them."""
    return a[0] >= b[2] + gap or b[0] >= a[2] + gap or a[1] >= b[3] + gap or b[1] >= a[3] + gap


def relations_between(a: Sequence[float], b: Sequence[float]) -> set[str]:
    """The RELATIONS in which box ``a`` stands to box ``b``: GenEval's ``relative_position`` rule.

    Boxes are ``(x0, y0, x1, y1)`` in pixels. The centre offset ``a - b`` is shrunk on each axis by
    ``POSITION_THRESHOLD`` times the summed box extents on that axis and divided by the offset's length; a
    component below -0.5 gives "left of" / "above", above 0.5 "right of" / "below". Nearly coincident centres
    relate in no direction.
    """
    centre_a = np.array([(a[0] + a[2]) / 2, (a[1] + a[3]) / 2])
    centre_b = np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2])
    dims = np.array([a[2] - a[0] + b[2] - b[0], a[3] - a[1] + b[3] - b[1]], dtype=float)
    offset = centre_a - centre_b
    revised = np.maximum(np.abs(offset) - POSITION_THRESHOLD * dims, 0) * np.sign(offset)
    if np.all(np.abs(revised) < 1e-3):
        return set()
    dx, dy = revised / np.linalg.norm(offset)
    found = set()
    if dx < -0.5:
        found.add("left of")
    if dx > 0.5:
        found.add("right of")
    if dy < -0.5:
        found.add("above")
    if dy > 0.5:
        found.add("below")
    return found


def clearly_related(a: ShapeObject, b: ShapeObject, relation: str, side: int) -> bool:
    """True when ``a`` is unambiguously ``relation`` ``b``: far apart on the stated axis, close across it."""
    dx, dy = a.cx - b.cx, a.cy - b.cy
    along, across = {"left of": (-dx, dy), "right of": (dx, dy), "above": (-dy, dx), "below": (dy, dx)}[relation]
    if along < POSITION_MIN_AXIS_OFFSET * side or abs(across) > along / 2:
        return False
    return relations_between(a.bbox(side), b.bbox(side)) == {relation}


# ---------------------------------------------------------------------------------------------------------
# Rendering


def render_scene(scene: Sequence[ShapeObject], size: int = 64) -> np.ndarray:
    """The image of ``scene``: uint8 ``[size, size, 3]``, black background, exact palette colours."""
    image = np.zeros((size, size, 3), dtype=np.uint8)
    for obj in scene:
        x0, y0, x1, y1 = obj.bbox(size)
        if x0 < 0 or y0 < 0 or x1 > size or y1 > size:
            raise ShapesError(f"{obj} does not fit inside a {size}-pixel image")
        mask = shape_mask(obj.shape, x1 - x0)
        image[y0:y1, x0:x1][mask] = COLOURS[obj.colour]
    return image


# ---------------------------------------------------------------------------------------------------------
# Scene sampling

# An object to place: (shape, colour, size).
_Wanted = tuple[str, str, str]


def _choice(rng: np.random.Generator, options: Sequence):
    return options[int(rng.integers(len(options)))]


def _descriptor(shape: str, colour: str | None = None, size: str | None = None) -> dict:
    return {"shape": shape, "colour": colour, "size": size}


def _spec(category: str, objects: list[dict], count: int | None = None, relation: str | None = None) -> dict:
    return {"category": category, "objects": objects, "count": count, "relation": relation}


def _random_size(rng: np.random.Generator) -> str:
    return _choice(rng, tuple(SIZES))


def _distractor(rng: np.random.Generator, mentioned: set[str], p: float = 0.5) -> list[_Wanted]:
    """0 or 1 extra object whose shape the caption never mentions, so it cannot change the caption's truth."""
    free = [s for s in SHAPES if s not in mentioned]
    if not free or rng.random() >= p:
        return []
    return [(_choice(rng, free), _choice(rng, tuple(COLOURS)), _random_size(rng))]


def _claim_single_object(rng: np.random.Generator) -> tuple[dict, list[_Wanted]]:
    shape, size = _choice(rng, SHAPES), _random_size(rng)
    stated_size = size if rng.random() < 1 / 3 else None
    wanted = [(shape, _choice(rng, tuple(COLOURS)), size)]
    return _spec("single_object", [_descriptor(shape, size=stated_size)]), wanted


def _claim_two_objects(rng: np.random.Generator) -> tuple[dict, list[_Wanted]]:
    a, b = (str(s) for s in rng.choice(SHAPES, size=2, replace=False))
    wanted = [(s, _choice(rng, tuple(COLOURS)), _random_size(rng)) for s in (a, b)]
    return _spec("two_objects", [_descriptor(a), _descriptor(b)]), wanted + _distractor(rng, {a, b})


def _claim_counting(rng: np.random.Generator) -> tuple[dict, list[_Wanted]]:
    count, shape = _choice(rng, COUNTS), _choice(rng, SHAPES)
    colour = _choice(rng, tuple(COLOURS)) if rng.random() < 0.5 else None
    wanted = [(shape, colour or _choice(rng, tuple(COLOURS)), _random_size(rng)) for _ in range(count)]
    return _spec("counting", [_descriptor(shape, colour)], count=count), wanted


def _claim_colours(rng: np.random.Generator) -> tuple[dict, list[_Wanted]]:
    shape, colour = _choice(rng, SHAPES), _choice(rng, tuple(COLOURS))
    wanted = [(shape, colour, _random_size(rng))]
    return _spec("colours", [_descriptor(shape, colour)]), wanted + _distractor(rng, {shape})


def _claim_position(rng: np.random.Generator) -> tuple[dict, list[_Wanted]]:
    """Two objects, ``objects[0]`` placed ``relation`` ``objects[1]``; colours stated when the shapes match."""
    a, b = _choice(rng, SHAPES), _choice(rng, SHAPES)
    if a == b:
        ca, cb = (str(c) for c in rng.choice(tuple(COLOURS), size=2, replace=False))
        stated = True
    else:
        ca, cb = _choice(rng, tuple(COLOURS)), _choice(rng, tuple(COLOURS))
        stated = rng.random() < 0.5
    relation = _choice(rng, RELATIONS)
    objects = [_descriptor(a, ca if stated else None), _descriptor(b, cb if stated else None)]
    wanted = [(a, ca, _random_size(rng)), (b, cb, _random_size(rng))]
    return _spec("position", objects, relation=relation), wanted + _distractor(rng, {a, b})


def _claim_colour_attribution(rng: np.random.Generator) -> tuple[dict, list[_Wanted]]:
    a, b = (str(s) for s in rng.choice(SHAPES, size=2, replace=False))
    ca, cb = (str(c) for c in rng.choice(tuple(COLOURS), size=2, replace=False))
    wanted = [(a, ca, _random_size(rng)), (b, cb, _random_size(rng))]
    spec = _spec("colour_attribution", [_descriptor(a, ca), _descriptor(b, cb)])
    return spec, wanted + _distractor(rng, {a, b})


_CLAIMS = {
    "single_object": _claim_single_object,
    "two_objects": _claim_two_objects,
    "counting": _claim_counting,
    "colours": _claim_colours,
    "position": _claim_position,
    "colour_attribution": _claim_colour_attribution,
}


def _place(wanted: list[_Wanted], relation: str | None, rng: np.random.Generator, side: int) -> Scene | None:
    """Random non-overlapping centres for ``wanted`` (objects 0 and 1 satisfying ``relation``), or None."""
    gap = object_gap(side)
    scene: Scene = []
    for i, (shape, colour, size) in enumerate(wanted):
        r = object_extent(size, side) // 2
        low, high = 1 + r, side - 2 - r  # one free pixel inside the border
        for _ in range(100):
            cx, cy = (int(v) for v in rng.integers(low, high + 1, size=2))
            obj = ShapeObject(shape, colour, size, cx, cy)
            if not all(boxes_apart(obj.bbox(side), other.bbox(side), gap) for other in scene):
                continue
            if i == 1 and relation is not None and not clearly_related(scene[0], obj, relation, side):
                continue
            scene.append(obj)
            break
        else:
            return None
    return scene


def sample_scene(category: str, rng: np.random.Generator, size: int = 64) -> tuple[Scene, str, dict]:
    """A random scene of ``category`` with its caption and spec (see the module docstring for the format).

    ``rng`` is consumed deterministically, so the same generator state gives the same triple.
    """
    if category not in _CLAIMS:
        raise ShapesError(f"unknown category {category!r}; known: {list(CATEGORIES)}")
    size = check_image_side(size)
    spec, wanted = _CLAIMS[category](rng)
    for _ in range(100):  # crowded draws (four large objects) can fail to fit: redraw the positions
        scene = _place(wanted, spec["relation"], rng, size)
        if scene is not None:
            return scene, caption_for(spec, rng), spec
    raise ShapesError(f"could not place {wanted} in a {size}-pixel image")


# ---------------------------------------------------------------------------------------------------------
# Captions

PREFIXES = ("a photo of", "an image of", "a picture of", "there is", "there are")
RELATION_PHRASES: dict[str, tuple[str, ...]] = {
    "left of": ("to the left of", "on the left of", "left of"),
    "right of": ("to the right of", "on the right of", "right of"),
    "above": ("above",),
    "below": ("below", "under"),
}
# Several templates per category. {a}, {b}: noun phrases ("a small red circle"); {a_post}: the colour after the
# noun ("a circle that is red"); {n}: a number (word or digit); {things}: plural noun phrase ("blue squares").
_PAIR_TEMPLATES = (
    "{a} and {b}",
    "a photo of {a} and {b}",
    "an image of {a} and {b}",
    "there is {a} and {b}",
    "{a} with {b}",
)
TEMPLATES: dict[str, tuple[str, ...]] = {
    "single_object": ("{a}", "a photo of {a}", "an image of {a}", "there is {a}", "a picture of {a}"),
    "two_objects": _PAIR_TEMPLATES,
    "counting": ("{n} {things}", "a photo of {n} {things}", "there are {n} {things}", "exactly {n} {things}"),
    "colours": ("{a}", "a photo of {a}", "an image of {a}", "there is {a}", "{a_post}", "a photo of {a_post}"),
    "position": ("{a} {rel} {b}", "a photo of {a} {rel} {b}", "there is {a} {rel} {b}"),
    "colour_attribution": _PAIR_TEMPLATES,
}


def _noun_phrase(obj: dict, colour_after: bool = False) -> str:
    words = [w for w in (obj["size"], None if colour_after else obj["colour"], obj["shape"]) if w]
    phrase = ("an " if words[0][0] in "aeiou" else "a ") + " ".join(words)
    return f"{phrase} that is {obj['colour']}" if colour_after else phrase


def caption_for(spec: dict, rng: np.random.Generator) -> str:
    """A caption of ``spec`` in one of its category's TEMPLATES, chosen (with its wording) by ``rng``."""
    objects = spec["objects"]
    template = _choice(rng, TEMPLATES[spec["category"]])
    slots = {"a": _noun_phrase(objects[0])}
    if "{a_post}" in template:
        slots["a_post"] = _noun_phrase(objects[0], colour_after=True)
    if len(objects) > 1:
        slots["b"] = _noun_phrase(objects[1])
    if spec["relation"] is not None:
        slots["rel"] = _choice(rng, RELATION_PHRASES[spec["relation"]])
    if spec["count"] is not None:
        count, obj = spec["count"], objects[0]
        slots["n"] = NUMBER_WORDS[count] if rng.random() < 0.5 else str(count)
        slots["things"] = " ".join(w for w in (obj["size"], obj["colour"], obj["shape"] + "s") if w)
    return template.format(**slots)


OPPOSITE_RELATION = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


def false_spec(spec: dict, rng: np.random.Generator) -> dict | None:
    """A minimally changed spec that is **false** of every scene drawn for ``spec`` (a hard negative for
    contrastive training, NegCLIP-style), or None where the spec alone cannot guarantee that (two_objects: a
    distractor may carry any third shape).

    single_object: another shape (the scene holds one object); counting: another count, or another colour when
    one is stated (the scene holds exactly ``count`` such objects, nothing else); colours: another colour (the
    distractor's shape is never the mentioned one); position: the opposite relation; colour_attribution: the
    two colours swapped.
    """
    objects = [dict(o) for o in spec["objects"]]
    category = spec["category"]
    out = {**spec, "objects": objects}
    if category == "single_object":
        objects[0]["shape"] = _choice(rng, [s for s in SHAPES if s != objects[0]["shape"]])
    elif category == "counting":
        if objects[0]["colour"] is not None and rng.random() < 0.5:
            objects[0]["colour"] = _choice(rng, [c for c in COLOURS if c != objects[0]["colour"]])
        else:
            out["count"] = _choice(rng, [c for c in COUNTS if c != spec["count"]])
    elif category == "colours":
        objects[0]["colour"] = _choice(rng, [c for c in COLOURS if c != objects[0]["colour"]])
    elif category == "position":
        out["relation"] = OPPOSITE_RELATION[spec["relation"]]
    elif category == "colour_attribution":
        objects[0]["colour"], objects[1]["colour"] = objects[1]["colour"], objects[0]["colour"]
    else:
        return None
    return out


def _alternation(words) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


# each relation phrase → the phrase at the same place for the opposite relation ("on the left of" → "on the right
# of"; "under" → "above", the only phrase for above)
_REVERSED_PHRASES = {
    phrase: RELATION_PHRASES[OPPOSITE_RELATION[rel]][min(i, len(RELATION_PHRASES[OPPOSITE_RELATION[rel]]) - 1)]
    for rel, phrases in RELATION_PHRASES.items() for i, phrase in enumerate(phrases)}
_RELATION_PHRASE = re.compile(rf"\b({_alternation(_REVERSED_PHRASES)})\b")


def reverse_relation(caption: str) -> str:
    """The caption with its (first) relation phrase reversed: "a red circle to the left of a blue square" →
    "a red circle to the right of a blue square"; ``ShapesError`` when it holds none."""
    out, n = _RELATION_PHRASE.subn(lambda m: _REVERSED_PHRASES[m.group(1)], caption, count=1)
    if not n:
        raise ShapesError(f"no relation phrase in {caption!r}")
    return out


def _np_pattern(tag: str, plural: bool = False) -> str:
    """Regex of a noun phrase; groups ``{tag}size``, ``{tag}colour``, ``{tag}shape``, ``{tag}post``."""
    colours, shapes = _alternation(COLOURS), _alternation([s + "s" for s in SHAPES] if plural else SHAPES)
    article = "" if plural else "an? "
    post = "" if plural else rf"(?: (?:that is|in) (?P<{tag}post>{colours}))?"
    return (
        rf"{article}(?:(?P<{tag}size>{_alternation(SIZES)}) )?(?:(?P<{tag}colour>{colours}) )?"
        rf"(?P<{tag}shape>{shapes}){post}"
    )


_PREFIX = rf"(?:(?:{_alternation(PREFIXES)}) )?"
_NUMBER = _alternation([*NUMBER_WORDS.values(), *(str(n) for n in COUNTS)])
_RELATION = _alternation([p for phrases in RELATION_PHRASES.values() for p in phrases])
_GRAMMAR = {
    "one": re.compile(rf"{_PREFIX}{_np_pattern('a')}"),
    "pair": re.compile(rf"{_PREFIX}{_np_pattern('a')} (?:and|with) {_np_pattern('b')}"),
    "position": re.compile(rf"{_PREFIX}{_np_pattern('a')} (?P<rel>{_RELATION}) {_np_pattern('b')}"),
    "counting": re.compile(rf"{_PREFIX}(?:exactly )?(?P<n>{_NUMBER}) {_np_pattern('a', plural=True)}"),
}
_RELATION_OF_PHRASE = {p: rel for rel, phrases in RELATION_PHRASES.items() for p in phrases}
_COUNT_OF_WORD = {**{w: n for n, w in NUMBER_WORDS.items()}, **{str(n): n for n in COUNTS}}


def _descriptor_of(match: re.Match, tag: str, caption: str) -> dict:
    colour, post = match.group(f"{tag}colour"), match.groupdict().get(f"{tag}post")
    if colour and post:
        raise CaptionError(f"{caption!r}: an object has two colours")
    shape = match.group(f"{tag}shape")
    return _descriptor(shape[:-1] if shape.endswith("s") else shape, colour or post, match.group(f"{tag}size"))


_OBJECTS_PER_CATEGORY = {c: 1 if c in ("single_object", "counting", "colours") else 2 for c in CATEGORIES}


def check_spec(spec: dict) -> dict:
    """``spec`` if it is a well-formed spec (module docstring), else ``ShapesError`` saying what is wrong."""
    if not isinstance(spec, dict) or spec.get("category") not in CATEGORIES:
        raise ShapesError(f"spec must be a dict with a category in {list(CATEGORIES)}, got {spec!r}")
    category, objects = spec["category"], spec.get("objects")
    if not isinstance(objects, list) or len(objects) != _OBJECTS_PER_CATEGORY[category]:
        raise ShapesError(f"a {category} spec needs {_OBJECTS_PER_CATEGORY[category]} object(s), got {objects!r}")
    for obj in objects:
        if not isinstance(obj, dict) or obj.get("shape") not in SHAPES:
            raise ShapesError(f"object {obj!r} needs a shape in {list(SHAPES)}")
        if obj.get("colour") not in (None, *COLOURS) or obj.get("size") not in (None, *SIZES):
            raise ShapesError(f"object {obj!r}: colour must be in {list(COLOURS)} or None, size in {list(SIZES)}")
    if (category == "counting") != (spec.get("count") is not None) or spec.get("count") not in (None, *COUNTS):
        raise ShapesError(f"count must be one of {list(COUNTS)} for counting specs and None otherwise: {spec!r}")
    if (category == "position") != (spec.get("relation") is not None) or spec.get("relation") not in (
        None,
        *RELATIONS,
    ):
        raise ShapesError(f"relation must be one of {list(RELATIONS)} for position specs, None otherwise: {spec!r}")
    return spec


def normalise_caption(caption: str) -> str:
    """Lower case, single spaces, no surrounding spaces or final full stop."""
    return " ".join(caption.lower().split()).rstrip(".").strip()


def parse_caption(caption: str) -> dict:
    """The spec (module docstring) that ``caption`` states; ``CaptionError`` when it is outside the grammar.

    The grammar is that of ``TEMPLATES`` with any prefix of ``PREFIXES`` (or none), "a"/"an", an optional size
    before the colour, and the colour before the noun or after it ("that is red", "in red").
    """
    if not isinstance(caption, str):
        raise CaptionError(f"caption must be a string, got {type(caption).__name__}")
    text = normalise_caption(caption)
    if m := _GRAMMAR["counting"].fullmatch(text):
        return _spec("counting", [_descriptor_of(m, "a", caption)], count=_COUNT_OF_WORD[m.group("n")])
    if m := _GRAMMAR["one"].fullmatch(text):
        obj = _descriptor_of(m, "a", caption)
        return _spec("colours" if obj["colour"] else "single_object", [obj])
    if m := _GRAMMAR["position"].fullmatch(text):
        objects = [_descriptor_of(m, "a", caption), _descriptor_of(m, "b", caption)]
        return _spec("position", objects, relation=_RELATION_OF_PHRASE[m.group("rel")])
    if m := _GRAMMAR["pair"].fullmatch(text):
        objects = [_descriptor_of(m, "a", caption), _descriptor_of(m, "b", caption)]
        coloured = [o["colour"] is not None for o in objects]
        if coloured[0] != coloured[1]:
            raise CaptionError(f"{caption!r}: give a colour for both objects or for neither")
        return _spec("colour_attribution" if coloured[0] else "two_objects", objects)
    raise CaptionError(f"{caption!r} is outside the shapes caption grammar (see genmodels.data.shapes)")


# ---------------------------------------------------------------------------------------------------------
# Samples and datasets


@dataclass(frozen=True)
class Sample:
    """One rendered example: ``image`` uint8 ``[H, W, 3]``, its ``caption``, ``spec`` and ``scene``."""

    image: np.ndarray
    caption: str
    spec: dict
    scene: Scene


def _check_categories(categories: Sequence[str]) -> tuple[str, ...]:
    categories = tuple(categories)
    unknown = [c for c in categories if c not in CATEGORIES]
    if not categories or unknown:
        raise ShapesError(f"categories must be a non-empty subset of {list(CATEGORIES)}, got {list(categories)}")
    return categories


def _stream(split: str) -> int:
    if split not in SPLIT_STREAMS:
        raise ShapesError(f"split must be one of {list(SPLIT_STREAMS)}, got {split!r}")
    return SPLIT_STREAMS[split]


def make_sample(
    index: int, seed: int = 0, split: str = "train", size: int = 64, categories: Sequence[str] = CATEGORIES
) -> Sample:
    """Sample ``index`` of ``split``: category ``categories[index % len(categories)]``, randomness from
    ``(seed, split, index)`` only."""
    categories = _check_categories(categories)
    if index < 0 or seed < 0:
        raise ShapesError(f"index and seed must be >= 0, got index={index}, seed={seed}")
    rng = np.random.default_rng([int(seed), _stream(split), int(index)])
    scene, caption, spec = sample_scene(categories[index % len(categories)], rng, size)
    return Sample(render_scene(scene, size), caption, spec, scene)


def render_dataset(
    n: int, seed: int = 0, size: int = 64, split: str = "train", categories: Sequence[str] = CATEGORIES
) -> Iterator[Sample]:
    """Samples ``0 .. n-1`` of ``split`` (the items of ``ShapesDataset(split, size, seed=seed)``), lazily."""
    for index in range(n):
        yield make_sample(index, seed, split, size, categories)


class ShapesDataset(Dataset):
    """Shapes-world images rendered on the fly, as model inputs in [-1, 1].

    Items are dicts: ``pixel_values`` float32 ``[3, size, size]`` (uint8 / 127.5 - 1), ``caption`` (str),
    ``category`` (str) and ``spec`` (the spec as JSON text, ``json.loads`` gives the dict: a dict with None
    values and lists of varying length would not pass torch's default collate). Item ``i`` is
    ``make_sample(i, seed, split, size, categories)``; ``length`` defaults to 60,000 (train) or 1,200 (val).

    ``layout_share`` p: item i's caption is replaced, with probability p (drawn from ``(seed, split, i)`` on a
    stream of its own, so images and short captions stay as they were), by the layout caption of its scene
    (:func:`genmodels.data.shapes_layout.layout_caption`: every object, with its size, colour and grid cell).
    """

    def __init__(
        self,
        split: str = "train",
        size: int = 64,
        length: int | None = None,
        seed: int = 0,
        categories: Sequence[str] = CATEGORIES,
        layout_share: float = 0.0,
    ) -> None:
        _stream(split)
        if isinstance(layout_share, bool) or not isinstance(layout_share, (int, float)) \
                or not 0.0 <= layout_share <= 1.0:
            raise ShapesError(f"layout_share must be a number in [0, 1], got {layout_share!r}")
        self.layout_share = float(layout_share)
        self.split = split
        self.size = check_image_side(size)
        self.length = DEFAULT_LENGTHS[split] if length is None else int(length)
        if self.length <= 0:
            raise ShapesError(f"length must be positive, got {length}")
        self.seed = int(seed)
        if self.seed < 0:
            raise ShapesError(f"seed must be >= 0, got {seed!r}")
        self.categories = _check_categories(categories)

    def __len__(self) -> int:
        return self.length

    @property
    def prompt_planner(self) -> str | None:
        """The prompt planner a model trained on this data samples with (its layout captions need one)."""
        return "shapes_layout" if self.layout_share > 0 else None

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} items")
        sample = make_sample(index, self.seed, self.split, self.size, self.categories)
        pixels = torch.from_numpy(sample.image).permute(2, 0, 1).float() / 127.5 - 1.0
        caption = sample.caption
        if self.layout_share > 0 and np.random.default_rng(
                [self.seed, _stream(self.split), int(index), _LAYOUT_STREAM]).random() < self.layout_share:
            from genmodels.data.shapes_layout import layout_caption

            caption = layout_caption(sample.scene, self.size)
        return {
            "pixel_values": pixels.contiguous(),
            "caption": caption,
            "category": sample.spec["category"],
            "spec": json.dumps(sample.spec, sort_keys=True),
        }

    def __repr__(self) -> str:
        return (
            f"ShapesDataset(split={self.split!r}, size={self.size}, length={self.length}, seed={self.seed}, "
            f"categories={len(self.categories)}, layout_share={self.layout_share})"
        )


def export_imagefolder(
    out_dir: str | Path,
    n: int,
    seed: int = 0,
    size: int = 64,
    split: str = "train",
    categories: Sequence[str] = CATEGORIES,
    overwrite: bool = False,
) -> Path:
    """Write samples ``0 .. n-1`` as ``out_dir/00000.png ...`` plus ``metadata.jsonl``; return ``out_dir``.

    ``metadata.jsonl`` has one line per image, ``{"file_name": "00000.png", "text": caption}``: the imagefolder
    convention that ``datasets.load_dataset("imagefolder", data_dir=out_dir)`` and diffusers' training scripts
    (``--caption_column text``) read. The folder is written under a temporary name next to ``out_dir`` and
    renamed into place, so it is complete or absent. An existing ``out_dir`` is an error unless ``overwrite``.
    """
    out_dir = Path(out_dir)
    if n <= 0:
        raise ShapesError(f"n must be positive, got {n}")
    if out_dir.exists() and not overwrite:
        raise ShapesError(f"{out_dir} exists; pass overwrite=True to replace it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        width = max(5, len(str(n - 1)))
        lines = []
        for index, sample in enumerate(render_dataset(n, seed, size, split, categories)):
            name = f"{index:0{width}d}.png"
            Image.fromarray(sample.image).save(tmp / name)
            lines.append(json.dumps({"file_name": name, "text": sample.caption}))
        (tmp / "metadata.jsonl").write_text("\n".join(lines) + "\n")
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old.", dir=out_dir.parent))
            os.replace(out_dir, old / out_dir.name)
            os.replace(tmp, out_dir)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
