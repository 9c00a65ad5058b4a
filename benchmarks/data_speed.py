"""How fast the procedural datasets render (they are drawn on the fly during training).

    python benchmarks/data_speed.py [--repeats 5] [--items 200]

Times ``genmodels.data.moving_shapes.make_clip`` (an 8-frame 32×32 clip with its caption and spec) and
``genmodels.data.shapes.sample_scene`` + ``render_scene`` (a 64×64 scene), ``--items`` items per repeat, and
prints the median and best time per item over ``--repeats`` repeats (one thread, no model involved).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from genmodels.data.moving_shapes import make_clip  # noqa: E402
from genmodels.data.shapes import CATEGORIES, render_scene, sample_scene  # noqa: E402


def per_item(fn, items: int, repeats: int) -> tuple[float, float]:
    fn(0)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(items):
            fn(i)
        times.append((time.perf_counter() - start) / items)
    return statistics.median(times), min(times)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--items", type=int, default=200)
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)

    def scene(i: int):
        return render_scene(sample_scene(CATEGORIES[i % len(CATEGORIES)], rng, 64)[0], 64)

    results = {"moving-shapes clip, 8 frames of 32²": per_item(lambda i: make_clip(i, seed=1), args.items,
                                                                args.repeats),
               "shapes scene, 64²": per_item(scene, args.items, args.repeats)}
    for name, (med, best) in results.items():
        print(f"{name:40s} median {med * 1e3:.3f} ms, best {best * 1e3:.3f} ms per item")
    return results


if __name__ == "__main__":
    main()
