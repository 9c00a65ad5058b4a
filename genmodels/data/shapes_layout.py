"""Layout captions for the shapes world: every object of a scene described in full, and a planner that turns a
short prompt into one.

A short caption leaves most of the scene open: "a photo of a square" says nothing about colour, size or place,
and "a red circle to the left of a blue square" fixes a relation but no positions. A generator trained on
such captions has to learn a broad distribution per caption and, for two objects, which word belongs to which
object. DALL-E 3 (Betker et al. 2023) trains on descriptive captions and rewrites short prompts into such
captions at sampling time; LLM-grounded diffusion (Lian et al. 2023) has a language model plan the layout
(boxes) first. This module does both for the shapes grammar, with a program instead of a language model:

- ``layout_caption(scene)``: the scene's objects left to right, each as "size colour shape place", where
  *place* names the cell of a 3 × 3 grid holding the object's centre ("top left", "middle", "bottom", ...):
  "small red circle top left, large blue square bottom right". At most 4 objects × 6 tokens: it fits the
  32-token context of the shapes CLIP.
- ``plan_scene(spec, rng)``: a concrete scene that satisfies a parsed caption (``shapes.parse_caption``), its
  unstated attributes (colours, sizes, positions) drawn as the data generator draws them, the relation of a
  position caption respected with the generator's margins.
- ``plan_prompt(prompt, rng)``: ``layout_caption(plan_scene(parse_caption(prompt)))``, or the prompt unchanged
  when it is outside the grammar (then the model sees the short prompt, which it is also trained on).

``ShapesDataset(layout_share=p)`` gives a share p of the training captions as layout captions.
"""

from __future__ import annotations

import numpy as np

from genmodels.data.shapes import (
    COLOURS,
    SHAPES,
    SIZES,
    CaptionError,
    Scene,
    ShapesError,
    _place,
    check_image_side,
    check_spec,
    parse_caption,
)

ROW_WORDS = ("top", "middle", "bottom")
COLUMN_WORDS = ("left", "middle", "right")


def place_words(cx: int, cy: int, side: int) -> str:
    """The 3 × 3 grid cell of the centre ``(cx, cy)`` in a ``side``-pixel image: "top left", "top", "left",
    "middle", ... (the middle row or column is not named when the other one is)."""
    row, col = min(2, 3 * int(cy) // side), min(2, 3 * int(cx) // side)
    if row == 1 and col == 1:
        return "middle"
    if row == 1:
        return COLUMN_WORDS[col]
    if col == 1:
        return ROW_WORDS[row]
    return f"{ROW_WORDS[row]} {COLUMN_WORDS[col]}"


def layout_caption(scene: Scene, side: int = 64) -> str:
    """Every object of ``scene``, left to right (then top to bottom), as "size colour shape place", joined by
    commas."""
    if not scene:
        raise ShapesError("a layout caption needs at least one object")
    side = check_image_side(side)
    ordered = sorted(scene, key=lambda o: (o.cx, o.cy))
    return ", ".join(f"{o.size} {o.colour} {o.shape} {place_words(o.cx, o.cy, side)}" for o in ordered)


_MIRRORED = {"top": "bottom", "bottom": "top", "left": "right", "right": "left"}


def mirror_places(caption: str) -> str:
    """A layout caption with every place mirrored through the picture's centre ("top left" ↔ "bottom right",
    "left" ↔ "right"; "middle" stays): the same objects, each said to be elsewhere."""
    return ", ".join(" ".join(_MIRRORED.get(w, w) if i >= 3 else w for i, w in enumerate(part.split()))
                     for part in caption.split(", "))


def _choice(rng: np.random.Generator, options) -> str:
    return str(options[int(rng.integers(len(options)))])


def plan_scene(spec: dict, rng: np.random.Generator, side: int = 64) -> Scene:
    """A scene satisfying ``spec``: stated shapes, colours, sizes, count and relation kept; unstated colours and
    sizes drawn uniformly (two objects of one shape in a position claim get different colours, as in the data, so
    the relation can be told apart); positions drawn by the data generator's placement rule."""
    spec = check_spec(spec)
    side = check_image_side(side)
    objects = spec["objects"] * (spec["count"] or 1)
    wanted = []
    for obj in objects:
        colour = obj["colour"] or _choice(rng, tuple(COLOURS))
        wanted.append((obj["shape"], colour, obj["size"] or _choice(rng, tuple(SIZES))))
    if spec["category"] == "position" and objects[0]["shape"] == objects[1]["shape"] \
            and wanted[0][1] == wanted[1][1] and not objects[1]["colour"]:
        others = [c for c in COLOURS if c != wanted[0][1]]
        wanted[1] = (wanted[1][0], _choice(rng, others), wanted[1][2])
    for _ in range(100):
        scene = _place(wanted, spec["relation"], rng, side)
        if scene is not None:
            return scene
    raise ShapesError(f"could not place {wanted} in a {side}-pixel image")


def plan_prompt(prompt: str, rng: np.random.Generator, side: int = 64) -> tuple[str, bool]:
    """(layout caption of a scene planned for ``prompt``, True), or (``prompt``, False) when the prompt is
    outside the shapes grammar."""
    try:
        spec = parse_caption(prompt)
    except CaptionError:
        return prompt, False
    return layout_caption(plan_scene(spec, rng, side), side), True


__all__ = ["COLUMN_WORDS", "ROW_WORDS", "SHAPES", "layout_caption", "mirror_places", "place_words", "plan_prompt",
           "plan_scene"]
