"""Train a tiny CLIP on shapes-world pairs: ``python training/train_clip.py --output-dir runs/clip-shapes``.

An ``open_clip.CLIP`` from a small custom config (``training/recipes/clip_shapes.json``: a ViT over 8×8 patches
of the 64×64 image, a 4-layer causal text transformer on open_clip's tokenizer), open_clip's contrastive
``ClipLoss`` with the learnable temperature, AdamW with warm-up and cosine decay. Pairs are rendered on the fly
(``ShapesDataset``), images fed in [-1, 1] (the saved ``preprocess_cfg`` says mean = std = 0.5, so open_clip's
own transforms reproduce that).

Output (written atomically, loadable by ``open_clip.create_model("local-dir:OUT")`` and by
``genmodels.text.CLIPTextEncoder.from_open_clip(OUT)``): ``open_clip_config.json`` (``model_cfg`` +
``preprocess_cfg``), ``open_clip_model.safetensors`` and ``metrics.json`` with held-out retrieval:

- ``caption_to_image_top1``: for each of N held-out captions, is its own image the nearest of the N images;
- ``caption_to_image_top1_oracle``: is the nearest image one the oracle says the caption is true of (captions
  are partial descriptions: "a circle" fits many of the N images, so this is the figure that matters);
- ``image_to_caption_top1``: the reverse direction, exact pair;
- ``true_vs_false_caption``: how often the image scores its own caption above a minimally changed false one
  (``genmodels.data.shapes.false_spec``: another count, colour, shape, the opposite relation, swapped colours).

``--hard-negatives`` adds, NegCLIP-style (Yuksekgonul et al., ICLR 2023), one such false caption per image to the
text side of the image-to-text loss, so the model must bind colours to shapes, count and read relations instead
of matching bags of words; ``--init FOLDER`` fine-tunes an existing CLIP folder instead of starting from scratch.

``--data moving_shapes`` trains on moving-shapes clips shown as 2×2 filmstrips of four frames
(``genmodels.data.moving_shapes.filmstrip``), so the captions' direction words ("moves to the left") are
rewarded; its held-out figures are exact-pair retrieval and ``true_vs_reversed_direction`` (own caption scored
above the same caption with the direction reversed); with ``--hard-negatives`` each clip's reversed-direction
caption is its hard negative.

``--word-loss W`` adds W × a bag-of-words loss: a head on the normalised text embedding (the pooled vector a
generator's adaLN reads) predicts which word tokens the caption holds (a yes/no question per word of the
tokenizer's vocabulary, binary cross-entropy; the head is a cosine classifier with a fixed scale, so the words
must differ by real angles). The contrastive loss alone leaves words the image tower does not tell apart
(direction of motion, "left of" / "right of") at one pooled vector; this asks the text side for every word.
The head is a training aid and is not saved. ``--lock-image`` freezes the image tower (LiT-style), so the text
embedding stays in the image embedding space the run started from.
``metrics.json`` reports ``caption_sensitivity`` (``genmodels/text/sensitivity.py``: pooled cosine and token
change per kind of one-word caption change) and, with ``--init``, ``pooled_cosine_to_init``: the mean cosine
between the trained and the initial text embedding of the fixed evaluation prompts (how far a generator
conditioned on the initial encoder would have to follow).
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
from safetensors.torch import load_file, save_file  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from genmodels.data.shapes import ShapesDataset, caption_for, false_spec  # noqa: E402
from genmodels.io import replace_dir_atomic  # noqa: E402
from genmodels.text.clip import OPEN_CLIP_CONFIG, OPEN_CLIP_WEIGHTS  # noqa: E402

DEFAULT_CONFIG = Path(__file__).resolve().parent / "recipes" / "clip_shapes.json"
PREPROCESS_CFG = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bicubic",
                  "resize_mode": "shortest"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output-dir", default=None, help="required unless --evaluate-only")
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="open_clip model config (JSON with embed_dim, "
                   "vision_cfg, text_cfg)")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--data", choices=("shapes", "moving_shapes"), default="shapes",
                   help="shapes: still scenes; moving_shapes: clips as 2×2 filmstrips of four frames (image side "
                        "--image-size, clips of half that), so the text tower is rewarded for direction words")
    p.add_argument("--layout-share", type=float, default=0.0, metavar="P",
                   help="--data shapes: caption a share P of the scenes by their layout captions (every object with "
                        "its size, colour and grid cell: genmodels.data.shapes_layout), so place words matter")
    p.add_argument("--max-steps", type=int, default=2000)
    p.add_argument("--max-minutes", type=float, default=None, help="stop after this much training wall time")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup-steps", type=int, default=100)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--eval-pairs", type=int, default=1000, help="held-out pairs for the retrieval figures")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--hard-negatives", action="store_true",
                   help="one minimally changed false caption per image as an extra negative (NegCLIP)")
    p.add_argument("--init", default=None, metavar="FOLDER", help="start from this CLIP folder's weights")
    p.add_argument("--extra-pairs", default=None, metavar="NPZ",
                   help="generator-style pairs (training/make_verifier_data.py) mixed into every batch")
    p.add_argument("--extra-fraction", type=float, default=0.5,
                   help="share of each batch taken from --extra-pairs")
    p.add_argument("--eval-extra", default=None, metavar="NPZ",
                   help="held-out generator-style pairs: true_vs_false_caption on them is reported too")
    p.add_argument("--word-loss", type=float, default=0.0, metavar="W",
                   help="weight of the bag-of-words loss on the text embedding (0: off)")
    p.add_argument("--word-head-lr", type=float, default=3e-2,
                   help="peak LR of the bag-of-words head (a fresh probe, far from a fine-tune's LR)")
    p.add_argument("--word-head-scale", type=float, default=20.0,
                   help="the bag-of-words head's fixed logit scale (cosine classifier; smaller asks the text "
                        "tower for larger angles between words)")
    p.add_argument("--lock-image", action="store_true",
                   help="freeze the image tower (train the text side only, LiT-style); needs --init")
    p.add_argument("--evaluate-only", action="store_true",
                   help="print the held-out figures of the --init CLIP (and --eval-extra) and exit; writes nothing")
    return p.parse_args(argv)


def load_model_cfg(path: str | Path) -> dict:
    try:
        cfg = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise SystemExit(f"cannot read the CLIP config {path}: {err}") from err
    cfg = cfg.get("model_cfg", cfg)
    if not isinstance(cfg, dict) or not {"embed_dim", "vision_cfg", "text_cfg"} <= set(cfg):
        raise SystemExit(f"{path} must hold an open_clip model config with embed_dim, vision_cfg and text_cfg")
    return {k: v for k, v in cfg.items() if not k.startswith("_")}


def lr_at(step: int, args) -> float:
    """Linear warm-up then cosine decay to 10% of --lr at --max-steps."""
    if step < args.warmup_steps:
        return args.lr * (step + 1) / args.warmup_steps
    progress = min(1.0, (step - args.warmup_steps) / max(1, args.max_steps - args.warmup_steps))
    return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


@torch.no_grad()
def retrieval_metrics(model, tokenizer, n: int, image_size: int, seed: int, batch_size: int = 250) -> dict:
    """Held-out (val split) retrieval over ``n`` pairs; see the module docstring."""
    from genmodels.eval.shapes_oracle import score

    model.eval()
    data = ShapesDataset("val", size=image_size, length=n, seed=seed)
    items = [data[i] for i in range(n)]
    image_features, text_features = encode_items(model, tokenizer, items, batch_size)
    sim = text_features @ image_features.T  # [caption, image]
    nearest_image = sim.argmax(1)
    target = torch.arange(n)
    images_uint8 = [((it["pixel_values"] + 1) * 127.5).round().byte().permute(1, 2, 0).numpy() for it in items]
    oracle_hits = [score(images_uint8[j], json.loads(items[i]["spec"])) for i, j in enumerate(nearest_image.tolist())]
    accuracy, total = true_vs_false(model, tokenizer, items, seed, batch_size,
                                    features=(image_features, text_features))
    model.train()
    return {
        "pairs": n,
        "true_vs_false_caption": accuracy,
        "false_captions": total,
        "caption_to_image_top1": float((nearest_image == target).float().mean()),
        "caption_to_image_top1_oracle": float(sum(oracle_hits) / n),
        "image_to_caption_top1": float((sim.argmax(0) == target).float().mean()),
        "chance_top1": 1.0 / n,
    }


@torch.no_grad()
def filmstrip_metrics(model, tokenizer, n: int, image_size: int, seed: int, batch_size: int = 250) -> dict:
    """Held-out (val split) moving-shapes filmstrips: exact-pair retrieval both ways, and
    ``true_vs_reversed_direction``: how often a clip scores its own caption above the same caption with the
    direction reversed, over the clips whose caption names a direction."""
    from genmodels.data.moving_shapes import FilmstripDataset, reverse_direction

    model.eval()
    data = FilmstripDataset("val", image_size, length=n, seed=seed)
    items = [data[i] for i in range(n)]
    image_features, text_features = encode_items(model, tokenizer, items, batch_size)
    sim = text_features @ image_features.T  # [caption, image]
    target = torch.arange(n)
    moving = [i for i, it in enumerate(items) if reverse_direction(it["caption"]) != it["caption"]]
    wins = 0
    if moving:
        reversed_features = model.encode_text(tokenizer([reverse_direction(items[i]["caption"]) for i in moving]),
                                              normalize=True)
        own = sim[moving, moving]
        wins = int(((image_features[moving] * reversed_features).sum(-1) < own).sum())
    model.train()
    return {
        "pairs": n,
        "caption_to_image_top1": float((sim.argmax(1) == target).float().mean()),
        "image_to_caption_top1": float((sim.argmax(0) == target).float().mean()),
        "true_vs_reversed_direction": wins / max(1, len(moving)),
        "reversed_captions": len(moving),
        "chance_top1": 1.0 / n,
    }


def held_out_metrics(model, tokenizer, args, eval_extra: list[dict] | None) -> dict:
    """Retrieval figures on held-out renders, plus true-vs-false on held-out generator-style pairs if given."""
    if args.data == "moving_shapes":
        return filmstrip_metrics(model, tokenizer, args.eval_pairs, args.image_size, args.seed)
    metrics = retrieval_metrics(model, tokenizer, args.eval_pairs, args.image_size, args.seed)
    if eval_extra:
        model.eval()
        metrics["true_vs_false_caption_extra"], metrics["false_captions_extra"] = true_vs_false(
            model, tokenizer, eval_extra, args.seed)
        model.train()
    return metrics


def pairs_as_items(pairs: dict) -> list[dict]:
    """A verifier-pairs file's entries as ``ShapesDataset``-style items (pixel values in [-1, 1])."""
    pixels = torch.from_numpy(pairs["images"]).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return [{"pixel_values": pixels[i], "caption": str(pairs["captions"][i]), "spec": str(pairs["specs"][i])}
            for i in range(len(pixels))]


@torch.no_grad()
def encode_items(model, tokenizer, items: list[dict], batch_size: int = 250) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised image and caption embeddings ``[N, D]`` of ``ShapesDataset``-style items."""
    image_features, text_features = [], []
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        image_features.append(model.encode_image(torch.stack([it["pixel_values"] for it in chunk]), normalize=True))
        text_features.append(model.encode_text(tokenizer([it["caption"] for it in chunk]), normalize=True))
    return torch.cat(image_features), torch.cat(text_features)


@torch.no_grad()
def true_vs_false(model, tokenizer, items: list[dict], seed: int, batch_size: int = 250,
                  features: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[float, int]:
    """How often each image scores its own caption above a minimally changed false one (``false_spec``), and
    over how many images (those with a false caption). ``features``: the items' (image, caption) embeddings
    from :func:`encode_items` when the caller already has them."""
    image_features, text_features = features or encode_items(model, tokenizer, items, batch_size)
    rng = np.random.default_rng(seed)
    wins, total = 0, 0
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        negs = [(start + i, false_spec(json.loads(it["spec"]), rng)) for i, it in enumerate(chunk)]
        negs = [(i, caption_for(spec, rng)) for i, spec in negs if spec is not None]
        if not negs:
            continue
        rows = [i for i, _ in negs]
        img = image_features[rows]
        true = (img * text_features[rows]).sum(-1)
        false = (img * model.encode_text(tokenizer([c for _, c in negs]), normalize=True)).sum(-1)
        wins += int((true > false).sum())
        total += len(negs)
    return wins / max(total, 1), total


def mix_in(batch: dict, extra: list[dict], fraction: float, rng: np.random.Generator) -> dict:
    """Replace the last ``round(fraction · B)`` items of a collated batch by random ``extra`` items."""
    n = len(batch["caption"])
    k = min(n, round(fraction * n))
    if k == 0:
        return batch
    picks = [extra[i] for i in rng.integers(0, len(extra), size=k)]
    return {"pixel_values": torch.cat([batch["pixel_values"][:n - k], torch.stack([p["pixel_values"] for p in picks])]),
            "caption": list(batch["caption"][:n - k]) + [p["caption"] for p in picks],
            "spec": list(batch["spec"][:n - k]) + [p["spec"] for p in picks]}


def false_captions(batch: dict, data: str, rng: np.random.Generator) -> list[str]:
    """One minimally changed false caption per item where one exists: for still scenes a ``false_spec`` of the
    item's spec (another count, colour, shape, relation), for filmstrips the caption with its direction
    reversed (only captions that name a direction)."""
    if data == "moving_shapes":
        from genmodels.data.moving_shapes import reverse_direction

        return [r for c in batch["caption"] if (r := reverse_direction(c)) != c]
    negatives = [false_spec(json.loads(spec), rng) for spec in batch["spec"]]
    return [caption_for(spec, rng) for spec in negatives if spec is not None]


def hard_negative_loss(model, tokenizer, image_features, text_features, captions: list[str]) -> torch.Tensor:
    """CLIP's symmetric contrastive loss, with the false ``captions`` (:func:`false_captions`) added to the texts
    the images are contrasted against; the text-to-image side is the usual one over the batch's images."""
    from torch.nn import functional as F

    scale = model.logit_scale.exp()
    texts = text_features
    if captions:
        texts = torch.cat([text_features, model.encode_text(tokenizer(captions), normalize=True)])
    target = torch.arange(len(image_features))
    return 0.5 * (F.cross_entropy(scale * image_features @ texts.T, target)
                  + F.cross_entropy(scale * text_features @ image_features.T, target))


def word_targets(ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Which word tokens (not ``<start>``, ``<end>`` or padding) each caption holds: ``[B, vocab_size]`` of 0/1."""
    eot = ids.argmax(dim=-1)  # <end> has the largest id
    positions = torch.arange(ids.shape[1], device=ids.device)[None, :]
    words = ((positions > 0) & (positions < eot[:, None])).float()
    counts = torch.zeros(ids.shape[0], vocab_size, device=ids.device).scatter_add_(1, ids, words)
    return (counts > 0).float()


class WordHead(torch.nn.Module):
    """A cosine classifier for the bag-of-words loss: logit_w = scale · cos(f, u_w) + b_w for every word w of
    the vocabulary. The fixed scale bounds how much a small feature change can move a logit, so the text tower
    must separate words by a real angle; an unconstrained linear probe reads a 0.999-cosine difference by
    growing its weights, and the tower then keeps "left" and "right" at one vector (measured)."""

    def __init__(self, dim: int, vocab_size: int, scale: float):
        super().__init__()
        self.scale = scale
        self.directions = torch.nn.Parameter(torch.randn(vocab_size, dim) * 0.01)
        self.bias = torch.nn.Parameter(torch.full((vocab_size,), -math.log(vocab_size)))  # ~one word per caption

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.scale * torch.nn.functional.normalize(features, dim=-1) \
            @ torch.nn.functional.normalize(self.directions, dim=-1).T + self.bias


def word_loss(head: WordHead, text_features: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Bag-of-words loss: binary cross-entropy of ``head(text_features)`` against :func:`word_targets`, summed
    over the vocabulary and averaged over captions. Every word is its own yes/no question, so two words the
    text tower maps to one vector cost ~ln 2 nats on every caption holding either, however long the caption
    and however rare the word (a softmax over the caption's words was tried first: it dilutes a rare word's
    share by the caption's length and left "left" / "right" merged)."""
    logits = head(text_features)
    targets = word_targets(ids, logits.shape[-1])
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="sum") / len(ids)


def eval_prompts() -> list[str]:
    """The fixed evaluation prompts of the shapes and moving-shapes worlds (what the generators are scored on)."""
    from genmodels.eval.shapes_oracle import load_eval_set
    from genmodels.eval.video_oracle import load_video_eval_set

    return [item["prompt"] for item in load_eval_set() + load_video_eval_set()]


@torch.no_grad()
def text_metrics(model, model_cfg: dict, init_encoder=None) -> dict:
    """``caption_sensitivity`` of the trained text tower and, given the initial one, ``pooled_cosine_to_init``."""
    from genmodels.text import CLIPTextEncoder
    from genmodels.text.sensitivity import caption_sensitivity

    encoder = CLIPTextEncoder.from_clip(model, model_cfg)
    out = {"caption_sensitivity": caption_sensitivity(encoder)}
    if init_encoder is not None:
        prompts = eval_prompts()
        cosine = (encoder.encode(prompts)[2] * init_encoder.encode(prompts)[2]).sum(-1)
        out["pooled_cosine_to_init"] = round(float(cosine.mean()), 4)
    return out


def save_open_clip_folder(model, model_cfg: dict, metrics: dict, out_dir: Path) -> Path:
    """Write open_clip's local-folder layout; the folder appears complete or not at all."""
    with replace_dir_atomic(out_dir) as tmp:
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / OPEN_CLIP_WEIGHTS))
        preprocess = {**PREPROCESS_CFG, "size": model_cfg["vision_cfg"]["image_size"]}
        (tmp / OPEN_CLIP_CONFIG).write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess},
                                                       indent=2) + "\n")
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return Path(out_dir)


def main(argv=None) -> dict:
    import open_clip

    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.evaluate_only and not args.init:
        raise SystemExit("--evaluate-only needs --init FOLDER (the CLIP to evaluate)")
    if not args.evaluate_only and not args.output_dir:
        raise SystemExit("--output-dir is required (unless --evaluate-only)")
    if args.max_steps < 1 or args.batch_size < 2 or args.eval_pairs < 2:
        raise SystemExit("need --max-steps ≥ 1, --batch-size ≥ 2 (contrastive) and --eval-pairs ≥ 2")
    model_cfg = load_model_cfg(args.config)
    if model_cfg["vision_cfg"].get("image_size") != args.image_size:
        raise SystemExit(f"vision_cfg.image_size {model_cfg['vision_cfg'].get('image_size')} differs from "
                         f"--image-size {args.image_size}")
    if not 0 <= args.extra_fraction <= 1:
        raise SystemExit(f"--extra-fraction must lie in [0, 1], got {args.extra_fraction}")
    if args.word_loss < 0 or not math.isfinite(args.word_loss):
        raise SystemExit(f"--word-loss must be a finite number ≥ 0, got {args.word_loss}")
    if not args.word_head_scale > 0:
        raise SystemExit(f"--word-head-scale must be > 0, got {args.word_head_scale}")
    if not args.word_head_lr > 0:
        raise SystemExit(f"--word-head-lr must be > 0, got {args.word_head_lr}")
    if args.lock_image and not args.init:
        raise SystemExit("--lock-image needs --init FOLDER (a trained image tower to keep)")
    if args.data == "moving_shapes" and (args.extra_pairs or args.eval_extra or args.layout_share):
        raise SystemExit("--extra-pairs, --eval-extra and --layout-share are for --data shapes")
    extra, eval_extra = None, None
    try:
        from training.make_verifier_data import load_pairs
        if args.extra_pairs:
            extra = pairs_as_items(load_pairs(args.extra_pairs))
        if args.eval_extra:
            eval_extra = pairs_as_items(load_pairs(args.eval_extra))
    except ValueError as err:
        raise SystemExit(str(err)) from err
    for name, items in (("--extra-pairs", extra), ("--eval-extra", eval_extra)):
        if items and items[0]["pixel_values"].shape[-1] != args.image_size:
            raise SystemExit(f"{name}: images are {items[0]['pixel_values'].shape[-1]} px, "
                             f"--image-size is {args.image_size}")
    torch.manual_seed(args.seed)
    model = open_clip.CLIP(**model_cfg)
    if args.init:
        init = Path(args.init)
        try:
            init_cfg = load_model_cfg(init / OPEN_CLIP_CONFIG)
            if init_cfg != model_cfg:
                raise SystemExit(f"--init {init}: its model config differs from --config {args.config}")
            model.load_state_dict(load_file(str(init / OPEN_CLIP_WEIGHTS)))
        except OSError as err:
            raise SystemExit(f"--init {init}: not a CLIP folder ({err})") from err
    tokenizer = open_clip.SimpleTokenizer(context_length=model.context_length)
    if args.evaluate_only:
        metrics = {"evaluated": str(args.init), **held_out_metrics(model, tokenizer, args, eval_extra),
                   **text_metrics(model, model_cfg)}
        print(json.dumps(metrics, indent=2))
        return metrics
    init_encoder = None
    if args.init:
        from genmodels.text import CLIPTextEncoder

        init_encoder = CLIPTextEncoder.from_clip(model, model_cfg)
    if args.lock_image:
        model.visual.requires_grad_(False)
    loss_fn = open_clip.ClipLoss()
    trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = [p for n, p in trained if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in trained if not (p.ndim >= 2 and "embedding" not in n)]
    head = None
    if args.word_loss:
        head = WordHead(model_cfg["embed_dim"], model.vocab_size, args.word_head_scale)
    groups = [{"params": decay, "weight_decay": args.weight_decay, "lr_scale": 1.0},
              {"params": no_decay, "weight_decay": 0.0, "lr_scale": 1.0}]
    if head is not None:
        groups.append({"params": list(head.parameters()), "weight_decay": 0.0,
                       "lr_scale": args.word_head_lr / args.lr})
    optimizer = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.98), eps=1e-6)
    if args.data == "moving_shapes":
        from genmodels.data.moving_shapes import FilmstripDataset

        try:
            data = FilmstripDataset("train", args.image_size, seed=args.seed)
        except ValueError as err:
            raise SystemExit(f"--data moving_shapes: {err}") from err
    else:
        try:
            data = ShapesDataset("train", size=args.image_size, seed=args.seed, layout_share=args.layout_share)
        except ValueError as err:
            raise SystemExit(f"--layout-share: {err}") from err
    loader = DataLoader(data, batch_size=args.batch_size, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(args.seed))
    out_dir = Path(args.output_dir)
    log_path = out_dir.with_name(f"{out_dir.name}.log.jsonl")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("w")
    start, step, epoch = time.monotonic(), 0, 0
    bar = tqdm(total=args.max_steps, desc="train_clip", unit="step")
    model.train()
    while step < args.max_steps:
        for batch in loader:
            if step >= args.max_steps or (args.max_minutes and time.monotonic() - start > 60 * args.max_minutes):
                break
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, args) * group["lr_scale"]
            if extra:
                batch = mix_in(batch, extra, args.extra_fraction, np.random.default_rng((args.seed, step, 1)))
            if args.lock_image:
                model.visual.eval()  # the held-out metrics put the whole model back in train mode
            with torch.set_grad_enabled(not args.lock_image):
                image_features = model.encode_image(batch["pixel_values"], normalize=True)
            ids = tokenizer(batch["caption"])
            text_features = model.encode_text(ids, normalize=True)
            if args.hard_negatives:
                negatives = false_captions(batch, args.data, np.random.default_rng((args.seed, step)))
                loss = hard_negative_loss(model, tokenizer, image_features, text_features, negatives)
            else:
                loss = loss_fn(image_features, text_features, model.logit_scale.exp())
            contrastive = loss
            if head is not None:
                words = word_loss(head, text_features, ids)
                loss = contrastive + args.word_loss * words
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            with torch.no_grad():  # CLIP's temperature clamp: logit scale ≤ 100
                model.logit_scale.clamp_(0, math.log(100))
            step += 1
            bar.update()
            if step % args.log_every == 0 or step == 1:
                record = {"step": step, "loss": loss.item(), "contrastive_loss": contrastive.item(),
                          **({"word_loss": words.item()} if head is not None else {}),
                          "logit_scale": model.logit_scale.exp().item(),
                          "lr": optimizer.param_groups[0]["lr"], "minutes": (time.monotonic() - start) / 60}
                bar.set_postfix(loss=f"{record['loss']:.3f}")
                log.write(json.dumps(record) + "\n")
                log.flush()
        else:
            epoch += 1
            continue
        break
    bar.close()
    log.close()
    metrics = {"steps": step, "batch_size": args.batch_size, "minutes": (time.monotonic() - start) / 60,
               "final_loss": loss.item(), "parameters": sum(p.numel() for p in model.parameters()),
               **held_out_metrics(model, tokenizer, args, eval_extra), **text_metrics(model, model_cfg, init_encoder)}
    if head is not None:
        metrics.update(word_loss_weight=args.word_loss, final_word_loss=words.item())
    if args.lock_image:
        metrics["lock_image"] = True
    if extra:
        metrics.update(extra_pairs=args.extra_pairs, extra_fraction=args.extra_fraction)
    save_open_clip_folder(model, model_cfg, metrics, out_dir)
    print(json.dumps(metrics, indent=2))
    return metrics


if __name__ == "__main__":
    main()
