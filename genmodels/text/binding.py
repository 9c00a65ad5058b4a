"""Which attribute belongs to which object? Attribute-pair labels of a caption, and swapped-binding captions.

A bag of words says a caption holds "green", "blue", "circle" and "triangle"; it does not say which colour is the
circle's. For a generator whose pooled text vector drives adaLN (a global modulation of every token), that is
all it can learn from the pooled path. This module gives

- :data:`LABELS` and :func:`binding_targets`: per caption, which (attribute, attribute) pairs one object holds,
  over the kinds shape, colour, motion and size (e.g. ``("shape", "circle", "colour", "green")``), read from the
  caption itself (:func:`~genmodels.data.moving_shapes.parse_video_caption`, else the shapes world's
  :func:`~genmodels.data.shapes.parse_caption`), so only stated attributes count;
- :func:`swapped_caption`: a two-object caption with one kind of attribute exchanged between its objects ("a red
  circle and a blue square" → "a blue circle and a red square"), in the same template and wording, the pair a
  binding-aware encoder must tell apart and a bag of words cannot.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from genmodels.data.moving_shapes import MOTIONS, MovingShapesError, parse_video_caption, video_caption_for
from genmodels.data.shapes import COLOURS, SHAPES, SIZES, ShapesError, parse_caption

KINDS = ("shape", "colour", "motion", "size")
VALUES: dict[str, tuple[str, ...]] = {"shape": tuple(SHAPES), "colour": tuple(COLOURS), "motion": tuple(MOTIONS),
                                      "size": tuple(SIZES)}
LABELS: tuple[tuple[str, str, str, str], ...] = tuple(
    (ka, va, kb, vb) for ka, kb in itertools.combinations(KINDS, 2) for va in VALUES[ka] for vb in VALUES[kb])
_INDEX = {label: i for i, label in enumerate(LABELS)}


def caption_objects(caption: str) -> list[dict]:
    """The objects a caption states, each ``{kind: value or None}``; ``[]`` for a caption outside both worlds'
    grammars (such a caption contributes no labels)."""
    try:
        return parse_video_caption(caption)["objects"]
    except MovingShapesError:
        pass
    try:
        return parse_caption(caption)["objects"]
    except ShapesError:
        return []


def binding_labels(caption: str) -> list[int]:
    """Indices into :data:`LABELS` of the attribute pairs that one object of ``caption`` holds."""
    out = set()
    for obj in caption_objects(caption):
        for ka, kb in itertools.combinations(KINDS, 2):
            va, vb = obj.get(ka), obj.get(kb)
            if va is not None and vb is not None:
                out.add(_INDEX[(ka, va, kb, vb)])
    return sorted(out)


def binding_targets(captions: list[str]) -> torch.Tensor:
    """``[B, len(LABELS)]`` float 0/1: :func:`binding_labels` of each caption."""
    targets = torch.zeros(len(captions), len(LABELS))
    for row, caption in enumerate(captions):
        targets[row, binding_labels(caption)] = 1.0
    return targets


def swapped_caption(spec: dict, kind: str, template_seed: int) -> tuple[str, str] | None:
    """(caption, the same caption with ``kind`` exchanged between its two objects), both worded by
    ``video_caption_for`` with ``np.random.default_rng(template_seed)``; None when the spec has one object or
    its objects share the value of ``kind`` (nothing to swap)."""
    objects = spec["objects"]
    if kind not in ("colour", "motion", "shape") or len(objects) != 2 or objects[0][kind] == objects[1][kind]:
        return None
    swapped = [dict(objects[0]), dict(objects[1])]
    swapped[0][kind], swapped[1][kind] = objects[1][kind], objects[0][kind]
    a = video_caption_for(spec, np.random.default_rng(template_seed))
    b = video_caption_for({**spec, "objects": swapped}, np.random.default_rng(template_seed))
    return a, b
