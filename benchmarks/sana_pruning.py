"""SANA 1.5 depth pruning on the shapes model: oracle accuracy after removing the least important blocks,
before and after a short fine-tune.

    python benchmarks/sana_pruning.py --model assets/shapes-sana --text-encoder-from-pipeline \\
        --remove 0 1 2 3 --finetune-steps 100 [--per-category 40] \\
        [--json benchmarks/results/sana_pruning.json] [--plot benchmarks/results/sana_pruning.png]

1. Block importance (``genmodels.sana.block_importance``, 1 − cos(input, output) per block) on
   ``--importance-batches`` batches of ``ShapesDataset("val")``: each batch's images noised to
   ``x_t = flow_interpolate(x0, ε, t)`` at every t of ``--importance-timesteps``, with their captions encoded
   by the text encoder.
2. For every k of ``--remove``: drop the k least important blocks (``prune_blocks``, the rest keep their
   order), score the pruned pipeline on the shapes evaluation set (``shapes_t2i_eval.evaluate_pipeline``:
   one sample per prompt from its own seed), fine-tune a copy for ``--finetune-steps`` steps (AdamW,
   ``--lr`` 1e-4, betas (0.9, 0.95), gradient clipping at 1, batch ``--train-batch-size`` 16 from
   ``ShapesDataset("train")``, the rectified-flow loss with caption dropout as in training, no EMA) and score
   it again. k = 0 fine-tunes the unpruned model: the control for what fine-tuning alone changes.

The text encoder is the pipeline's own (``--text-encoder-from-pipeline``, the default) or ``--text-encoder
PATH`` (an open_clip or diffusers folder, as ``training/train_dit.py`` takes). Everything is seeded.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader, RandomSampler  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from benchmarks.shapes_t2i_eval import (  # noqa: E402
    default_device,
    evaluate_pipeline,
    load_t2i_pipeline,
    model_summary,
    public,
    select_items,
)
from genmodels.data.shapes import CATEGORIES, ShapesDataset  # noqa: E402
from genmodels.diffusion.flow import FlowObjective  # noqa: E402
from genmodels.diffusion.objectives import TextConditioned  # noqa: E402
from genmodels.eval.shapes_oracle import load_eval_set  # noqa: E402
from genmodels.io import atomic_path, write_text_atomic  # noqa: E402
from genmodels.pipelines.text_to_image import TextToImagePipeline  # noqa: E402
from genmodels.sana import block_importance, prune_blocks  # noqa: E402
from training.prune_pipeline import importance_batches  # noqa: E402


def finetune(model, text_encoder, *, steps: int, side: int, lr: float = 1e-4, batch_size: int = 16,
             weight_decay: float = 1e-3, grad_clip: float = 1.0, seed: int = 0, progress: bool = True,
             desc: str = "fine-tune") -> tuple[torch.nn.Module, dict]:
    """Fine-tune a copy of ``model`` for ``steps`` AdamW steps on ``ShapesDataset("train")`` with the
    rectified-flow loss (caption dropout 0.1, as in training); returns (the copy in eval mode, stats)."""
    model = copy.deepcopy(model).train()
    device = next(model.parameters()).device
    objective = TextConditioned(FlowObjective(), text_encoder, use_pooled=bool(model.pooled_dim))
    optimizer = torch.optim.AdamW(model.param_groups(lr, weight_decay), lr=lr, betas=(0.9, 0.95),
                                  weight_decay=weight_decay)
    dataset = ShapesDataset("train", size=side)
    sampler = RandomSampler(dataset, num_samples=max(steps, 1) * batch_size,
                            generator=torch.Generator().manual_seed(seed))
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=True)
    losses = []
    t0 = time.perf_counter()
    with tqdm(total=steps, desc=desc, unit="step", disable=not progress) as bar:
        for step, batch in zip(range(steps), loader):
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            loss = objective(model, batch, torch.Generator().manual_seed(seed * 1_000_003 + step)).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            losses.append(loss.item())
            bar.update()
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
    tail = losses[-max(1, len(losses) // 10):]
    stats = {"steps": len(losses), "seconds": time.perf_counter() - t0,
             "loss_first": losses[0] if losses else None,
             "loss_last": float(np.mean(tail)) if losses else None}
    return model.eval(), stats


def plot(rows: list[dict], path: str | Path, finetune_steps: int) -> Path:
    """Overall accuracy vs blocks removed: pruned, and pruned + fine-tuned."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = [r["k"] for r in rows]
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    ax.plot(ks, [r["pruned"]["overall"] for r in rows], "o-", label="pruned")
    if any(r["finetuned"] is not None for r in rows):
        pts = [(r["k"], r["finetuned"]["overall"]) for r in rows if r["finetuned"] is not None]
        ax.plot(*zip(*pts, strict=True), "s-", label=f"pruned + {finetune_steps}-step fine-tune")
    ax.set_xlabel("blocks removed (least important first)")
    ax.set_ylabel("oracle accuracy (overall)")
    ax.set_xticks(ks)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(path)


def _accuracy(result: dict) -> dict:
    keep = ("overall", "accuracy", "per_category", "n", "seconds")
    return {k: v for k, v in public(result).items() if k in keep}


def print_table(rows: list[dict]) -> None:
    print(f"{'k':>3s} {'depth':>5s} {'removed blocks':>16s} {'importance':>22s} {'pruned':>8s} {'fine-tuned':>10s}")
    for r in rows:
        imp = ", ".join(f"{v:.3g}" for v in r["removed_importance"]) or "-"
        ft = f"{r['finetuned']['overall']:10.3f}" if r["finetuned"] is not None else f"{'-':>10s}"
        removed = ",".join(map(str, r["removed"])) or "-"
        print(f"{r['k']:3d} {r['depth']:5d} {removed:>16s} {imp:>22s} {r['pruned']['overall']:8.3f} {ft}")
    for r in rows:
        cats = "  ".join(f"{c[:8]} {r['pruned']['per_category'].get(c, float('nan')):.2f}" for c in CATEGORIES)
        print(f"k={r['k']} pruned      {cats}")
        if r["finetuned"] is not None:
            cats = "  ".join(f"{c[:8]} {r['finetuned']['per_category'].get(c, float('nan')):.2f}" for c in CATEGORIES)
            print(f"k={r['k']} fine-tuned  {cats}")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, metavar="FOLDER", help="text-to-image pipeline folder")
    text = p.add_mutually_exclusive_group()
    text.add_argument("--text-encoder-from-pipeline", action="store_true",
                      help="use the pipeline's text encoder (the default)")
    text.add_argument("--text-encoder", metavar="PATH", help="another text encoder (open_clip or diffusers folder)")
    p.add_argument("--remove", type=int, nargs="+", default=[0, 1, 2, 3], metavar="K",
                   help="numbers of least-important blocks to remove")
    p.add_argument("--finetune-steps", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--weight-decay", type=float, default=1e-3)
    p.add_argument("--train-batch-size", type=int, default=16)
    p.add_argument("--importance-batches", type=int, default=4)
    p.add_argument("--importance-batch-size", type=int, default=16)
    p.add_argument("--importance-timesteps", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    p.add_argument("--per-category", type=int, default=None, metavar="M",
                   help="evaluate the first M prompts per category (default: all 40)")
    p.add_argument("--steps", type=int, default=20, help="sampling steps for the evaluation")
    p.add_argument("--guidance", type=float, default=4.0)
    p.add_argument("--batch-size", type=int, default=48, help="prompts per sampling batch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--json", metavar="OUT")
    p.add_argument("--plot", metavar="PNG")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = args.device or default_device()
    progress = not args.no_progress
    pipe = load_t2i_pipeline(args.model, device)
    if args.text_encoder:
        from training.train_dit import load_text_encoder

        pipe.text_encoder = load_text_encoder(args.text_encoder).to(device).eval()
    if pipe.text_encoder is None:
        raise SystemExit(f"{args.model} has no text encoder; pass --text-encoder PATH")
    model, text_encoder, side = pipe.transformer, pipe.text_encoder, pipe.default_size
    depth = len(model.blocks)
    bad = [k for k in args.remove if not 0 <= k < depth]
    if bad:
        raise SystemExit(f"--remove values must lie in 0..{depth - 1} (the model has {depth} blocks), got {bad}")
    torch.manual_seed(args.seed)

    t0 = time.perf_counter()
    batches = importance_batches(model, text_encoder, side=side, batches=args.importance_batches,
                                 batch_size=args.importance_batch_size, timesteps=args.importance_timesteps,
                                 seed=args.seed)
    importance = block_importance(model, batches)
    del batches
    order = [int(i) for i in torch.argsort(importance, stable=True)]
    print(f"block importance (1 - cos), {time.perf_counter() - t0:.1f} s: "
          + ", ".join(f"{i}: {v:.4f}" for i, v in enumerate(importance.tolist())))

    items = select_items(load_eval_set(), args.per_category)
    sampling = dict(steps=args.steps, guidance=args.guidance, batch_size=args.batch_size, progress=progress)
    rows = []
    for k in args.remove:
        removed = order[:k]
        kept = sorted(order[k:])
        pruned = prune_blocks(model, kept).eval()
        variant = TextToImagePipeline(transformer=pruned, scheduler=pipe.scheduler, text_encoder=text_encoder)
        variant.set_progress_bar_config(disable=True)
        row = {"k": k, "depth": len(pruned.blocks), "removed": removed, "kept": kept,
               "removed_importance": [float(importance[i]) for i in removed],
               "pruned": _accuracy(evaluate_pipeline(variant, items, desc=f"k={k} pruned", **sampling)),
               "finetuned": None, "finetune": None}
        if args.finetune_steps > 0:
            tuned, stats = finetune(pruned, text_encoder, steps=args.finetune_steps, side=side, lr=args.lr,
                                    batch_size=args.train_batch_size, weight_decay=args.weight_decay,
                                    seed=args.seed, progress=progress, desc=f"k={k} fine-tune")
            variant = TextToImagePipeline(transformer=tuned, scheduler=pipe.scheduler, text_encoder=text_encoder)
            variant.set_progress_bar_config(disable=True)
            row["finetuned"] = _accuracy(evaluate_pipeline(variant, items, desc=f"k={k} tuned", **sampling))
            row["finetune"] = stats
            del tuned
        rows.append(row)
        del pruned, variant
    print_table(rows)

    report = {
        "model": str(args.model), **model_summary(pipe),
        "importance": [float(v) for v in importance], "order": order,
        "settings": {"finetune_steps": args.finetune_steps, "lr": args.lr, "weight_decay": args.weight_decay,
                     "train_batch_size": args.train_batch_size, "importance_batches": args.importance_batches,
                     "importance_batch_size": args.importance_batch_size,
                     "importance_timesteps": list(args.importance_timesteps),
                     "per_category": args.per_category or "all", "steps": args.steps, "guidance": args.guidance,
                     "batch_size": args.batch_size, "seed": args.seed, "device": device,
                     "text_encoder": args.text_encoder or "pipeline"},
        "rows": rows,
    }
    if args.json:
        write_text_atomic(args.json, json.dumps(report, indent=2) + "\n")
    if args.plot:
        plot(rows, args.plot, args.finetune_steps)
    return report


if __name__ == "__main__":
    main()
