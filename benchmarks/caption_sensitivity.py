"""Which words does a text encoder see? Feature change when one word of a caption changes, per kind of word.

    python benchmarks/caption_sensitivity.py [--text-encoder assets/clip-shapes] [--text-encoder other ...] \\
        [--json benchmarks/results/caption_sensitivity.json]

For each kind of word (colour, shape, count, relation, direction of motion) a fixed list of caption pairs that
differ in that one word, written in the shapes and moving-shapes grammars; per pair, from the encoder's
``encode`` (tokens ``[L, D]``, mask, pooled ``[P]``):

- **pooled cosine**: cosine similarity of the two pooled vectors (what adaLN / pooled conditioning sees);
  1.000 means the encoder maps both captions to the same vector;
- **token change**: the largest over positions of ‖a_i − b_i‖ / ‖a_i‖ (what cross-attention sees; a causal
  encoder leaves the positions before the word unchanged).

Reported per kind: the mean of both over its pairs. A generator conditioned on this encoder cannot follow a
kind of word whose pooled cosine is ~1 and token change small, however long it trains on the pooled path.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from genmodels.io import write_text_atomic  # noqa: E402

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


def main(argv=None) -> dict:
    from training.train_dit import load_text_encoder

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--text-encoder", action="append",
                   help="open_clip folder or a pipeline's text_encoder folder (repeatable; default "
                        "assets/clip-shapes)")
    p.add_argument("--json", help="write the results here (atomically)")
    args = p.parse_args(argv)
    results = {}
    for path in args.text_encoder or ["assets/clip-shapes"]:
        results[path] = caption_sensitivity(load_text_encoder(path))
        print(path)
        for kind, r in results[path].items():
            print(f"  {kind:10} pooled cosine {r['pooled_cosine']:.3f}   largest token change {r['token_change']:.2f}")
    if args.json:
        write_text_atomic(args.json, json.dumps(results, indent=2))
        print(f"wrote {args.json}")
    return results


if __name__ == "__main__":
    main()
