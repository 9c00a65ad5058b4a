"""Teach a text encoder's pooled vector which attribute belongs to which object, without moving it far.

    python training/train_text_binding.py --init assets/moving-shapes-dim/text_encoder \\
        --output-dir runs/text-binding [--data moving_shapes] [--max-steps 1500]

Why: the tiny CLIP's pooled vector (what a generator's adaLN reads) is a bag of words. "a green circle moving
right and a blue triangle moving down" and the same caption with the colours swapped sit at cosine 0.998 (mean
of 300 such pairs) in the shipped video model's encoder, so a generator can learn from it that green and blue
are present, not which shape is which colour, and its two-object clips come out in one colour (BENCHMARKS.md,
issue 6).

What: the text tower of ``--init`` (a pipeline's ``text_encoder`` folder or an open_clip folder) fine-tuned on
captions alone (no images: a caption's truth is known from its grammar) with

- a **binding loss**: a cosine classifier with a fixed logit scale on the pooled vector answers a yes/no question
  per attribute pair one object may hold (``genmodels.text.binding.LABELS``: shape–colour, shape–motion,
  colour–motion, …), binary cross-entropy summed over the pairs;
- the **bag-of-words loss** of ``train_clip.py --word-loss`` (keeps single words apart, direction words
  included);
- two **anchors** to the starting encoder, so a generator trained on it needs only a short fine-tune to follow:
  ``--anchor-pooled`` × (1 − cos(pooled, pooled₀)) and ``--anchor-tokens`` × the squared change of the per-token
  features (what cross-attention reads) relative to their squared norm, both averaged over captions.

Output: a ``CLIPTextEncoder`` folder (diffusers layout, usable as ``train_dit.py --text-encoder``; written
atomically) with ``metrics.json``: per kind of swapped attribute (colour, motion, shape) the mean pooled cosine
between two-object captions and their swapped twins, before and after; the losses on 512 captions before (fresh
heads) and after; both sets are drawn from a stream no training step draws from, but the grammar is small, so
most of their specs also occur in training (this measures what the encoder does on the captions a generator
sees, not generalisation; the swapped pairs are moving-shapes captions whatever ``--data``);
``pooled_cosine_to_init`` and ``token_change_to_init`` on the fixed evaluation prompts; and the one-word
``caption_sensitivity`` probe.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from genmodels.io import replace_dir_atomic  # noqa: E402
from genmodels.text.binding import LABELS, binding_targets, swapped_caption  # noqa: E402
from training.train_clip import WordHead, eval_prompts, lr_at, word_loss  # noqa: E402
from training.train_dit import load_text_encoder  # noqa: E402

SWAP_KINDS = ("colour", "motion", "shape")
VAL_SEED = 10_007  # evaluation captions: a stream no training step draws from


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--init", required=True, help="text encoder to start from (pipeline text_encoder or open_clip "
                                                 "folder)")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--data", choices=("moving_shapes", "shapes"), default="moving_shapes",
                   help="whose captions to train on")
    p.add_argument("--two-share", type=float, default=0.5,
                   help="moving_shapes: share of two-object captions in a batch")
    p.add_argument("--max-steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--warmup-steps", type=int, default=50)
    p.add_argument("--bind-loss", type=float, default=1.0, help="weight of the binding loss")
    p.add_argument("--word-loss", type=float, default=1.0, help="weight of the bag-of-words loss (0: off)")
    p.add_argument("--anchor-pooled", type=float, default=20.0, help="weight of 1 − cos(pooled, pooled₀)")
    p.add_argument("--anchor-tokens", type=float, default=1.0, help="weight of the relative token change")
    p.add_argument("--head-lr", type=float, default=3e-2, help="peak LR of the two fresh cosine heads")
    p.add_argument("--head-scale", type=float, default=20.0, help="the heads' fixed logit scale")
    p.add_argument("--val-captions", type=int, default=300, help="evaluation two-object specs per swap kind")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = p.parse_args(argv)
    for name in ("bind_loss", "word_loss", "anchor_pooled", "anchor_tokens"):
        value = getattr(args, name)
        if not (math.isfinite(value) and value >= 0):
            raise SystemExit(f"--{name.replace('_', '-')} must be a finite number ≥ 0, got {value}")
    if args.bind_loss == 0 and args.word_loss == 0:
        raise SystemExit("--bind-loss and --word-loss are both 0: nothing to train for")
    if not 0 <= args.two_share <= 1:
        raise SystemExit(f"--two-share must lie in [0, 1], got {args.two_share}")
    if args.max_steps < 1 or args.batch_size < 1 or args.val_captions < 1:
        raise SystemExit("--max-steps, --batch-size and --val-captions must be ≥ 1")
    if not (args.lr > 0 and args.head_lr > 0 and args.head_scale > 0):
        raise SystemExit("--lr, --head-lr and --head-scale must be > 0")
    return args


def sample_captions(data: str, n: int, rng: np.random.Generator, two_share: float = 0.5) -> list[str]:
    """``n`` training captions of ``data``'s world (specs and wording drawn by ``rng``; nothing is rendered)."""
    if data == "moving_shapes":
        from genmodels.data.moving_shapes import sample_video_spec, video_caption_for

        cats = np.where(rng.random(n) < two_share, "two", "single")
        return [video_caption_for(sample_video_spec(str(c), rng), rng) for c in cats]
    from genmodels.data.shapes import CATEGORIES, sample_scene

    return [sample_scene(CATEGORIES[int(rng.integers(len(CATEGORIES)))], rng)[1] for _ in range(n)]


def swap_pairs(n: int, seed: int = VAL_SEED) -> dict[str, list[tuple[str, str]]]:
    """Per kind in :data:`SWAP_KINDS`: up to ``n`` (caption, swapped twin) pairs of two-object clips, drawn from
    their own stream."""
    from genmodels.data.moving_shapes import sample_video_spec

    rng = np.random.default_rng(seed)
    out: dict[str, list[tuple[str, str]]] = {kind: [] for kind in SWAP_KINDS}
    for _ in range(50 * n):
        if all(len(v) >= n for v in out.values()):
            break
        spec = sample_video_spec("two", rng)
        template_seed = int(rng.integers(2**31))
        for kind in SWAP_KINDS:
            pair = swapped_caption(spec, kind, template_seed)
            if pair is not None and len(out[kind]) < n:
                out[kind].append(pair)
    return out


@torch.no_grad()
def swap_cosines(encoder, pairs: dict[str, list[tuple[str, str]]]) -> dict[str, float]:
    """Mean pooled cosine between each caption and its swapped twin, per kind (1.0: the encoder cannot tell)."""
    out = {}
    for kind, kind_pairs in pairs.items():
        a = encoder.encode([p[0] for p in kind_pairs])[2]
        b = encoder.encode([p[1] for p in kind_pairs])[2]
        out[kind] = round(float((a * b).sum(-1).mean()), 4)
    return out


@torch.no_grad()
def distance_to_init(encoder, init_encoder, prompts: list[str]) -> dict[str, float]:
    """Mean pooled cosine and mean relative token change (‖x − x₀‖ / ‖x₀‖ over valid tokens) to the start."""
    x, mask, pooled = encoder.encode(prompts)
    x0, _, pooled0 = init_encoder.encode(prompts)
    rel = (x - x0).norm(dim=-1) / x0.norm(dim=-1).clamp_min(1e-8)
    return {"pooled_cosine_to_init": round(float((pooled * pooled0).sum(-1).mean()), 4),
            "token_change_to_init": round(float(rel[mask].mean()), 4)}


def losses(encoder, init_encoder, bind_head, word_head, captions: list[str], args) -> dict[str, torch.Tensor]:
    ids = encoder.tokenize(captions)
    x, mask, pooled = encoder(ids)
    with torch.no_grad():
        x0, _, pooled0 = init_encoder(ids)
    out = {"anchor_pooled": (1 - (pooled * pooled0).sum(-1)).mean()}
    change = ((x - x0) ** 2).sum(-1) / (x0 ** 2).sum(-1).clamp_min(1e-8)
    out["anchor_tokens"] = (change * mask).sum() / mask.sum()
    if bind_head is not None:
        logits = bind_head(pooled)
        out["bind"] = F.binary_cross_entropy_with_logits(logits, binding_targets(captions),
                                                         reduction="sum") / len(captions)
    if word_head is not None:
        out["words"] = word_loss(word_head, pooled, ids)
    out["loss"] = (args.anchor_pooled * out["anchor_pooled"] + args.anchor_tokens * out["anchor_tokens"]
                   + args.bind_loss * out.get("bind", 0.0) + args.word_loss * out.get("words", 0.0))
    return out


def main(argv=None) -> dict:
    from genmodels.text.sensitivity import caption_sensitivity

    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    init_encoder = load_text_encoder(args.init)
    encoder = load_text_encoder(args.init)
    encoder.requires_grad_(True)
    dim = encoder.embed_dim
    bind_head = WordHead(dim, len(LABELS), args.head_scale) if args.bind_loss else None
    word_head = WordHead(dim, int(encoder.token_embedding.weight.shape[0]), args.head_scale) \
        if args.word_loss else None
    heads = [h for h in (bind_head, word_head) if h is not None]
    optimizer = torch.optim.AdamW(
        [{"params": list(encoder.parameters()), "lr": args.lr, "peak": args.lr, "weight_decay": 0.0}]
        + [{"params": list(h.parameters()), "lr": args.head_lr, "peak": args.head_lr, "weight_decay": 0.0}
           for h in heads], betas=(0.9, 0.98), eps=1e-6)

    pairs = swap_pairs(args.val_captions)
    prompts = eval_prompts()
    val_captions = sample_captions(args.data, 512, np.random.default_rng(VAL_SEED + 1), args.two_share)
    with torch.no_grad():
        val_before = losses(encoder, init_encoder, bind_head, word_head, val_captions, args)
    before = {"swap_cosine": swap_cosines(encoder, pairs)}
    print(f"before: swapped-binding pooled cosine {before['swap_cosine']}")

    out_dir = Path(args.output_dir)
    log_path = out_dir.with_name(f"{out_dir.name}.log.jsonl")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    start = time.monotonic()
    with log_path.open("w") as log, tqdm(total=args.max_steps, desc="train_text_binding", unit="step") as bar:
        for step in range(args.max_steps):
            for group in optimizer.param_groups:
                group["lr"] = group["peak"] * lr_at(step, args) / args.lr  # train_clip's warm-up + cosine
            parts = losses(encoder, init_encoder, bind_head, word_head,
                           sample_captions(args.data, args.batch_size, rng, args.two_share), args)
            optimizer.zero_grad(set_to_none=True)
            parts["loss"].backward()
            torch.nn.utils.clip_grad_norm_(encoder.parameters(), 1.0)
            optimizer.step()
            bar.update()
            if (step + 1) % args.log_every == 0 or step == 0:
                record = {"step": step + 1, **{k: round(float(v.detach()), 5) for k, v in parts.items()},
                          "minutes": round((time.monotonic() - start) / 60, 3)}
                bar.set_postfix(loss=f"{record['loss']:.3f}")
                log.write(json.dumps(record) + "\n")
                log.flush()

    with torch.no_grad():
        val = losses(encoder, init_encoder, bind_head, word_head, val_captions, args)
    metrics = {"init": str(args.init), "data": args.data, "steps": args.max_steps, "batch_size": args.batch_size,
               "minutes": round((time.monotonic() - start) / 60, 2),
               "weights": {k: getattr(args, k) for k in ("bind_loss", "word_loss", "anchor_pooled", "anchor_tokens")},
               "swap_cosine_before": before["swap_cosine"], "swap_cosine": swap_cosines(encoder, pairs),
               "val_before": {k: round(float(v), 5) for k, v in val_before.items()},
               "val": {k: round(float(v), 5) for k, v in val.items()},
               **distance_to_init(encoder, init_encoder, prompts),
               "caption_sensitivity": caption_sensitivity(encoder)}
    encoder.requires_grad_(False)
    with replace_dir_atomic(out_dir) as tmp:
        encoder.save_pretrained(str(tmp), safe_serialization=True)
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(metrics, indent=2))
    return metrics


if __name__ == "__main__":
    main()
