"""Which words does a text encoder see? Feature change when one word of a caption changes, per kind of word.

    python benchmarks/caption_sensitivity.py [--text-encoder assets/clip-shapes] [--text-encoder other ...] \\
        [--json benchmarks/results/caption_sensitivity.json]

What is measured, per kind of word (colour, shape, count, relation, direction): see
``genmodels/text/sensitivity.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from genmodels.io import write_text_atomic  # noqa: E402
from genmodels.text.sensitivity import PAIRS, caption_sensitivity  # noqa: E402, F401


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
