"""How much a text-to-image model uses its caption: held-out flow error with the true caption, a wrong one, none.

    python benchmarks/text_dependence.py --model assets/shapes-sana [--model runs/other/pipeline ...] \\
        [--items 64] [--times 0.3 0.6 0.9] [--wrong shuffle|relation|place] [--threads 1] \\
        [--json benchmarks/results/text_dependence.json]

For ``--items`` validation-split shapes scenes x₀ (at the model's size), one noise ε per item (seed 1, the same for
every model and time) and each time t: x_t = (1 − t)·x₀ + t·ε, and the mean squared error of the model's
velocity against the flow target ε − x₀ with

- **true**: the scene's own caption;
- **wrong**: another scene's caption (item i gets item i + 1's); with ``--wrong relation`` the scenes are all of
  the position category and the wrong caption is the scene's own with its relation reversed ("left of" ↔ "right
  of", "above" ↔ "below"): how much the relation word alone moves the prediction; with ``--wrong place`` every
  scene is captioned by its layout caption (``genmodels.data.shapes_layout``: "small red circle top left, ...")
  and the wrong caption mirrors every place ("top left" ↔ "bottom right"; "middle" stays), for a model trained
  on layout captions: how much the place words move the prediction;
- **null**: the null text the model learnt under caption dropout (the unconditional branch of its CFG).

Reported per t: the three errors and the relative gaps (wrong − true) / true and (null − true) / true. A model
that reads its prompt has a clearly positive wrong-vs-true gap at high noise, where the caption decides what is
drawn; a gap near zero means the caption's content barely reaches the prediction (the model only learnt that
*some* caption is present), which caps prompt-following whatever the sampler, guidance or verifier.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks.shapes_t2i_eval import load_t2i_pipeline, model_labels  # noqa: E402
from genmodels.data.shapes import ShapesDataset, reverse_relation  # noqa: E402
from genmodels.data.shapes_layout import mirror_places  # noqa: E402
from genmodels.io import write_text_atomic  # noqa: E402

WRONG_KINDS = ("shuffle", "relation", "place")


@torch.no_grad()
def text_dependence(pipe, items: int = 64, times=(0.3, 0.6, 0.9), batch: int = 32, wrong: str = "shuffle") -> dict:
    """``{t: {"true", "wrong", "null", "wrong_gap", "null_gap"}}`` for ``pipe`` (see the module docstring)."""
    if items < 2:
        raise ValueError(f"items must be at least 2 (a wrong caption comes from another item), got {items}")
    if not all(0 < t <= 1 for t in times):
        raise ValueError(f"times must lie in (0, 1], got {list(times)}")
    if wrong not in WRONG_KINDS:
        raise ValueError(f"wrong must be one of {WRONG_KINDS}, got {wrong!r}")
    extra = {"categories": ("position",)} if wrong == "relation" else {"layout_share": 1.0} if wrong == "place" else {}
    ds = ShapesDataset("val", size=pipe.default_size, length=items, **extra)
    x0 = torch.stack([ds[i]["pixel_values"] for i in range(items)])
    captions = [ds[i]["caption"] for i in range(items)]
    if wrong == "relation":
        wrong_captions = [reverse_relation(c) for c in captions]
    elif wrong == "place":
        wrong_captions = [mirror_places(c) for c in captions]
    else:
        wrong_captions = captions[1:] + captions[:1]
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    out = {}
    for t0 in times:
        x_t, target = (1 - t0) * x0 + t0 * noise, noise - x0
        errors = {}
        for name, caps, w in (("true", captions, 1.0), ("wrong", wrong_captions, 1.0), ("null", captions, 0.0)):
            total = 0.0
            for s in range(0, items, batch):
                part = slice(s, s + batch)
                v = pipe.velocity_fn(caps[part], w)  # w = 0: the null-text branch exactly
                x = x_t[part].to(pipe._execution_device)
                pred = v(x, torch.full((x.shape[0],), t0, device=x.device)).cpu()
                total += (pred - target[part]).pow(2).mean(dim=(1, 2, 3)).sum().item()
            errors[name] = total / items
        errors["wrong_gap"] = (errors["wrong"] - errors["true"]) / errors["true"]
        errors["null_gap"] = (errors["null"] - errors["true"]) / errors["true"]
        out[t0] = errors
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", required=True, metavar="FOLDER", help="TextToImagePipeline folder")
    p.add_argument("--items", type=int, default=64)
    p.add_argument("--times", type=float, nargs="+", default=[0.3, 0.6, 0.9])
    p.add_argument("--wrong", choices=WRONG_KINDS, default="shuffle",
                   help="the wrong caption: another scene's, (relation) the scene's own with the relation reversed, "
                        "or (place) the scene's layout caption with every place mirrored")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json", metavar="OUT")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    report = {"items": args.items, "times": args.times, "wrong": args.wrong, "models": []}
    for folder, label in zip(args.model, model_labels(args.model), strict=True):
        try:
            pipe = load_t2i_pipeline(folder)
        except ValueError as err:  # UnsafeCheckpointError included: e.g. a VAR folder
            raise SystemExit(f"{folder}: not a text-to-image flow pipeline this script can read ({err})") from err
        pipe.set_progress_bar_config(disable=True)
        result = text_dependence(pipe, args.items, args.times, wrong=args.wrong)
        report["models"].append({"model": str(folder), "label": label,
                                 "per_time": {str(t): r for t, r in result.items()}})
        kind = {"relation": "position scenes; wrong = relation reversed",
                "place": "scenes with layout captions; wrong = places mirrored"}.get(args.wrong, "validation scenes")
        print(f"{label}  (flow MSE on {args.items} {kind}; gap = relative to the true caption)")
        print(f"{'t':>5s} {'true':>8s} {'wrong':>8s} {'null':>8s} {'wrong gap':>10s} {'null gap':>9s}")
        for t, r in result.items():
            print(f"{t:5.2f} {r['true']:8.4f} {r['wrong']:8.4f} {r['null']:8.4f} {r['wrong_gap']:+10.1%} "
                  f"{r['null_gap']:+9.1%}")
    if args.json:
        write_text_atomic(args.json, json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
