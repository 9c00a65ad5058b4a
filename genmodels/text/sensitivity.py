"""Which words does a text encoder see? Feature change when one word of a caption changes, per kind of word.

For each kind of word (colour, shape, count, relation, direction of motion, place in a layout caption) a list
of caption pairs that differ in that word (places: every place of the caption), written in the shapes and
moving-shapes grammars; per pair, from the encoder's
``encode`` (tokens ``[L, D]``, mask, pooled ``[P]``):

- **pooled cosine**: cosine similarity of the two pooled vectors (what adaLN / pooled conditioning sees);
  1.000 means the encoder maps both captions to the same vector;
- **token change**: the largest over positions of ‖a_i − b_i‖ / ‖a_i‖ (what cross-attention sees; a causal
  encoder leaves the positions before the word unchanged).

Reported per kind: the mean of both over its pairs. A generator conditioned on this encoder cannot follow a
kind of word whose pooled cosine is ~1 and token change small, however long it trains on the pooled path.
Used by ``benchmarks/caption_sensitivity.py`` and reported by ``training/train_clip.py``.
"""

from __future__ import annotations

import torch

PAIRS: dict[str, list[tuple[str, str]]] = {
    "colour": [("a red circle", "a green circle"), ("a blue square", "a yellow square"),
               ("a purple triangle", "an orange triangle")],
    "shape": [("a red circle", "a red square"), ("a blue square", "a blue triangle"),
              ("a green triangle", "a green circle")],
    "count": [("two red circles", "three red circles"), ("two blue squares", "four blue squares"),
              ("three green triangles", "four green triangles")],
    "relation": [("a red circle to the left of a blue square", "a red circle to the right of a blue square"),
                 ("a red circle above a blue square", "a red circle below a blue square"),
                 ("a green triangle to the right of a yellow circle",
                  "a green triangle to the left of a yellow circle")],
    "direction": [("a blue square moving left", "a blue square moving right"),
                  ("a blue square moving up", "a blue square moving down"),
                  ("a red circle moves to the left", "a red circle moves to the right"),
                  ("a green triangle moves upwards", "a green triangle moves downwards")],
    "place": [("large red circle top left", "large red circle bottom right"),  # layout captions (shapes_layout)
              ("small blue square left, large green triangle right",
               "small blue square right, large green triangle left"),
              ("small yellow circle top", "small yellow circle bottom")],
}


@torch.no_grad()
def caption_sensitivity(encoder, pairs: dict[str, list[tuple[str, str]]] = PAIRS) -> dict:
    """``{kind: {"pooled_cosine", "token_change", "pairs"}}`` for ``encoder`` (see the module docstring)."""
    out = {}
    for kind, kind_pairs in pairs.items():
        cosines, changes = [], []
        for a, b in kind_pairs:
            tokens, mask, pooled = encoder.encode([a, b])
            n = int(mask[0].sum()) if mask is not None else tokens.shape[1]
            cosines.append(float(torch.nn.functional.cosine_similarity(pooled[0], pooled[1], dim=0)))
            rel = (tokens[0, :n] - tokens[1, :n]).norm(dim=-1) / tokens[0, :n].norm(dim=-1).clamp_min(1e-8)
            changes.append(float(rel.max()))
        out[kind] = {"pooled_cosine": round(sum(cosines) / len(cosines), 4),
                     "token_change": round(sum(changes) / len(changes), 4), "pairs": len(kind_pairs)}
    return out
