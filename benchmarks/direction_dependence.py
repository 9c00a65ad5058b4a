"""Does a text-to-video model read the direction in its prompt? Held-out flow error, true vs reversed direction.

    python benchmarks/direction_dependence.py --model assets/moving-shapes-dim [--model runs/other/pipeline ...] \\
        [--items 48] [--times 0.5 0.8 0.9 0.95 0.98] [--given 0 1] [--wrong {direction,colour,motion}] \\
        [--threads 1] [--json benchmarks/results/direction_dependence.json]

For ``--items`` validation-split moving-shapes clips with one moving object (left, right, up or down), one noise ε
per clip (seed 1, the same for every model and time) and each time t: x_t = (1 − t)·x₀ + t·ε, and the mean
squared error of the model's velocity against ε − x₀ over the generated frames with

- **true**: the clip's own caption;
- **reversed**: the same caption with the direction word reversed (left ↔ right, up ↔ down);
- **null**: the null text (the unconditional branch of classifier-free guidance).

``--given K``: the first K frames enter clean, flagged by the frame mask, as in continuation (K = 1: image to
video, where the object's start is known and only the caption says where it goes). Reported per K and t: the
three errors and the gaps (reversed − true) / true and (null − true) / true. A model that follows the
direction has a clearly positive reversed gap at the noise levels where the motion is decided; a gap near 0
means the direction words do not reach the prediction, whatever the sampler or guidance.

``--wrong colour`` / ``motion`` asks the same of binding: two-object clips, and as the wrong caption the clip's
caption with the two objects' colours (or motions) swapped, which holds the same words. A model that reads the
caption as a bag of words has no gap there, however well it follows one-object captions.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from genmodels.data.moving_shapes import reverse_direction  # noqa: E402
from genmodels.io import write_text_atomic  # noqa: E402


def swapped_clips(items: int, size: int, frames: int, kind: str) -> tuple[torch.Tensor, list[str], list[str]]:
    """The first ``items`` two-object validation clips whose objects differ in ``kind`` (colour or motion):
    ``[N, 3, F, H, W]`` in [−1, 1], a caption of each (worded afresh from its spec) and the same caption with
    ``kind`` swapped between the objects (:func:`genmodels.text.binding.swapped_caption`)."""
    from genmodels.data.moving_shapes import MovingShapesDataset
    from genmodels.text.binding import swapped_caption

    ds = MovingShapesDataset("val", size=size, frames=frames, categories=("two",), length=20 * items)
    clips, captions, swapped = [], [], []
    for i in range(len(ds)):
        item = ds[i]
        pair = swapped_caption(json.loads(item["spec"]), kind, template_seed=i)
        if pair is not None:
            clips.append(item["pixel_values"])
            captions.append(pair[0])
            swapped.append(pair[1])
            if len(clips) == items:
                break
    return torch.stack(clips), captions, swapped


def moving_clips(items: int, size: int, frames: int) -> tuple[torch.Tensor, list[str]]:
    """The first ``items`` validation clips with one object moving left, right, up or down: ``[N, 3, F, H, W]``
    in [−1, 1] and their captions."""
    from genmodels.data.moving_shapes import MovingShapesDataset

    ds = MovingShapesDataset("val", size=size, frames=frames, categories=("single",), length=20 * items)
    clips, captions = [], []
    for i in range(len(ds)):
        item = ds[i]
        if json.loads(item["spec"])["objects"][0]["motion"] != "still":
            clips.append(item["pixel_values"])
            captions.append(item["caption"])
            if len(clips) == items:
                break
    return torch.stack(clips), captions


@torch.no_grad()
def direction_dependence(pipe, items: int = 48, times=(0.5, 0.8, 0.9, 0.95, 0.98), given=(0, 1),
                         batch: int = 16, pooled_code=None, wrong: str = "direction") -> dict:
    """``{K: {t: {"true", "reversed", "null", "reversed_gap", "null_gap"}}}`` (see the module docstring).

    ``wrong``: what the "reversed" caption changes: "direction" (one-object clips, the direction word reversed)
    or "colour" / "motion" (two-object clips, that attribute swapped between the objects: does the model bind
    it to the right object?). ``pooled_code(captions) -> [N, P]``, when given, is added to the pooled text of
    the true and reversed captions (the direction oracle of ``benchmarks/direction_oracle.py``)."""
    model = pipe.transformer
    cfg = model.config
    if wrong == "direction":
        x0, captions = moving_clips(items, cfg.sample_size, cfg.num_frames)
        reversed_captions = [reverse_direction(c) for c in captions]
    elif wrong in ("colour", "motion"):
        x0, captions, reversed_captions = swapped_clips(items, cfg.sample_size, cfg.num_frames, wrong)
    else:
        raise ValueError(f"wrong must be 'direction', 'colour' or 'motion', got {wrong!r}")
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    device, dtype = pipe._execution_device, model.dtype
    encoded = {name: pipe.encode_prompt(prompts, device, dtype)
               for name, prompts in (("true", captions), ("reversed", reversed_captions))}
    if pooled_code is not None:
        for name, prompts in (("true", captions), ("reversed", reversed_captions)):
            tokens, mask, pooled = encoded[name]
            encoded[name] = (tokens, mask, pooled + pooled_code(prompts).to(pooled))
    out: dict = {}
    for k in given:
        if k and not cfg.frame_conditioning:
            raise ValueError("given frames need a model built with frame_conditioning=True")
        if not 0 <= k < cfg.num_frames:
            raise ValueError(f"--given must lie in 0..{cfg.num_frames - 1}, got {k}")
        out[k] = {}
        for t in times:
            x_t = (1 - t) * x0 + t * eps
            target = eps - x0
            kwargs = {}
            if cfg.frame_conditioning:
                mask = (torch.arange(cfg.num_frames) < k)[None].expand(len(x0), -1)
                x_t = torch.where(mask[:, None, :, None, None], x0, x_t)
                kwargs["frame_mask"] = mask
            errors = {}
            for name in ("true", "reversed", "null"):
                total = 0.0
                for s in range(0, len(x0), batch):
                    sl = slice(s, s + batch)
                    text = {} if name == "null" else dict(zip(
                        ("encoder_hidden_states", "encoder_attention_mask", "pooled_text"),
                        (None if v is None else v[sl] for v in encoded[name])))
                    extra = {key: v[sl] for key, v in kwargs.items()}
                    v = model(x_t[sl].to(device, dtype), torch.full((len(x0[sl]),), t, device=device), **text,
                              **extra).float().cpu()
                    total += float((v - target[sl])[:, :, k:].pow(2).sum())
                errors[name] = total / target[:, :, k:].numel()
            out[k][t] = {**{n: round(e, 6) for n, e in errors.items()},
                         "reversed_gap": round(errors["reversed"] / errors["true"] - 1, 5),
                         "null_gap": round(errors["null"] / errors["true"] - 1, 5)}
    return out


def print_gaps(name: str, results: dict) -> None:
    """One line per given-frames count K and time t of a :func:`direction_dependence` result."""
    for k, rows in results.items():
        print(f"{name}, {k} frames given:")
        for t, r in rows.items():
            print(f"  t={t:.2f}  true {r['true']:.4f}  wrong caption {100 * r['reversed_gap']:+.2f}%  "
                  f"null text {100 * r['null_gap']:+.2f}%")


def main(argv=None) -> dict:
    from benchmarks.dim_video_eval import load

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", help="TextToVideoPipeline folder (repeatable)")
    p.add_argument("--items", type=int, default=48)
    p.add_argument("--times", type=float, nargs="+", default=[0.5, 0.8, 0.9, 0.95, 0.98])
    p.add_argument("--given", type=int, nargs="+", default=[0, 1], help="given clean frames K (0: text to video)")
    p.add_argument("--wrong", choices=["direction", "colour", "motion"], default="direction",
                   help="the wrong caption: one-object clips with the direction reversed, or two-object clips "
                        "with the colours / motions swapped between the objects (binding)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", help="write the results here (atomically)")
    args = p.parse_args(argv)
    if args.items < 1 or any(not 0 < t < 1 for t in args.times):
        raise SystemExit("--items must be positive and every time must lie in (0, 1)")
    if args.threads:
        torch.set_num_threads(args.threads)
    results = {}
    for folder in args.model or ["assets/moving-shapes-dim"]:
        try:
            results[folder] = direction_dependence(load(folder), args.items, tuple(args.times), tuple(args.given),
                                                   wrong=args.wrong)
        except ValueError as err:
            raise SystemExit(f"{folder}: {err}") from err
        print_gaps(folder, results[folder])
    if args.json:
        write_text_atomic(args.json, json.dumps({"items": args.items, "wrong": args.wrong, "results": results},
                                                indent=2))
        print(f"wrote {args.json}")
    return results


if __name__ == "__main__":
    main()
