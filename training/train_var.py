"""Train a VAR next-scale transformer on a frozen multi-scale VQ-VAE:
``accelerate launch training/train_var.py --vqvae runs/shapes-vqvae --text-encoder assets/clip-shapes
--output-dir runs/shapes-var`` (plain ``python`` works too).

Teacher forcing (:class:`~genmodels.var.objective.VARObjective`): the tokenizer turns each shapes-world image into
its token pyramid, the transformer sees the coarser scales' reconstruction and predicts every scale's ids with a
uniform per-token cross-entropy; 10 % caption dropout trains the null text for CFG. The shared training loop
(:func:`training.loop.train`) brings AdamW (β = 0.9, 0.95), warm-up, gradient clipping, the EMA, atomic
checkpoints with ``--resume latest``, logs and periodic sample grids. The final EMA weights are saved as a
:class:`~genmodels.pipelines.var.VARPipeline` in ``OUTPUT_DIR/pipeline`` (transformer + tokenizer + text encoder).

``--init FOLDER`` starts from a trained transformer, also one trained on a shorter scale schedule: the 128² model
(``--config shapes128``, ``training/recipes/shapes_var_large.sh``) starts from the shipped 64² one, the 256² model
from the 128² one.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from genmodels.data.shapes import ShapesDataset  # noqa: E402
from genmodels.var.objective import VARObjective  # noqa: E402
from genmodels.var.var import VARTransformer, adapt_scale_schedule  # noqa: E402
from genmodels.var.vqvae import MultiScaleVQVAE  # noqa: E402
from training.loop import TrainConfig, Training, start_script, train  # noqa: E402
from training.train_dit import load_text_encoder  # noqa: E402

SAMPLE_PROMPTS = ("a red circle", "a blue square to the left of a green triangle", "two yellow circles",
                  "a small purple triangle at the top")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vqvae", required=True, help="a MultiScaleVQVAE folder (training/train_vqvae.py)")
    p.add_argument("--text-encoder", required=True, help="open_clip folder (assets/clip-shapes) or diffusers folder")
    p.add_argument("--config", default="shapes",
                   help="'shapes', 'shapes128', 'shapes256', 'tiny' or a JSON file of VARTransformer args")
    p.add_argument("--init", default=None, metavar="FOLDER",
                   help="start from a trained transformer (a VARPipeline folder or its transformer/ folder); its "
                        "position and level tables are adapted when --config has another scale schedule")
    p.add_argument("--attention", choices=["softmax", "linear"], default=None, help="override the config's")
    p.add_argument("--cross-attn", choices=["crosswkv", "softmax", "none"], default=None)
    p.add_argument("--output-dir", required=True)
    p.add_argument("--max-steps", type=int, default=3000)
    p.add_argument("--max-minutes", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=6e-4)
    p.add_argument("--warmup-steps", type=int, default=100)
    p.add_argument("--lr-decay", choices=["none", "cosine", "cooldown"], default="cosine",
                   help="after the warm-up: constant; cosine to 10%% of --lr at --max-steps; or cooldown: constant "
                        "until --decay-start, then linear to 10%% at --max-steps")
    p.add_argument("--decay-start", type=int, default=None, help="first step of the cooldown")
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--grad-clip", type=float, default=2.0)
    p.add_argument("--text-drop-prob", type=float, default=0.1)
    p.add_argument("--ema-power", type=float, default=0.75)
    p.add_argument("--checkpoint-every", type=int, default=250)
    p.add_argument("--checkpoints-total-limit", type=int, default=2)
    p.add_argument("--sample-every", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=0)
    p.add_argument("--eval-samples", type=int, default=0,
                   help="held-out loss on this many items with fixed noise (0: 4 batches of --batch-size)")
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", default=None, help="'latest' or a checkpoint folder")
    p.add_argument("--threads", type=int, default=0)
    return p.parse_args(argv)


def model_config(args) -> dict:
    named = getattr(VARTransformer, f"{args.config}_config", None)  # shapes, shapes128, shapes256, tiny
    if callable(named):
        cfg = named()
    else:
        try:
            cfg = json.loads(Path(args.config).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise SystemExit(f"cannot read the VAR config {args.config}: {err}") from err
    if args.attention:
        cfg["attention"] = args.attention
    if args.cross_attn:
        cfg["cross_attn"] = args.cross_attn
    return cfg


def load_init_weights(model: VARTransformer, folder: str) -> None:
    """Copy a trained transformer's weights (safetensors) into ``model``; widths must match, the scale schedule
    may differ (:func:`~genmodels.var.var.adapt_scale_schedule`)."""
    root = Path(folder)
    sub = root / "transformer" if (root / "transformer" / "config.json").is_file() else root
    if not (sub / "config.json").is_file():
        raise SystemExit(f"--init {folder}: no transformer config.json there")
    try:
        trained = VARTransformer.from_pretrained(str(sub), use_safetensors=True)
    except (OSError, ValueError) as err:
        raise SystemExit(f"cannot load the transformer {sub}: {err}") from err
    copy_weights(model, trained, f"--init {folder}")


def copy_weights(model: VARTransformer, trained: VARTransformer, source: str) -> None:
    """``trained``'s weights into ``model`` (float32), the position / level tables adapted when the scale
    schedules differ; SystemExit naming ``source`` when any other tensor does not fit."""
    state = trained.state_dict()
    if tuple(trained.patch_nums) != tuple(model.patch_nums):
        state = adapt_scale_schedule(state, trained.patch_nums, model.patch_nums)
    own = model.state_dict()
    wrong = [k for k in own if k not in state or state[k].shape != own[k].shape]
    if wrong:
        raise SystemExit(f"{source} does not fit --config: {len(wrong)} tensors differ, e.g. {wrong[:3]}")
    model.load_state_dict({k: state[k].float() for k in own})


def make_sample_fn(vqvae, text_encoder):
    from PIL import Image

    from genmodels.pipelines.var import VARPipeline

    def sample_fn(model, step: int):
        pipe = VARPipeline(transformer=model, vqvae=vqvae, text_encoder=text_encoder)
        pipe.set_progress_bar_config(disable=True)
        images = pipe(list(SAMPLE_PROMPTS), guidance_scale=3.0, top_k=0, top_p=0.95,
                      generator=torch.Generator().manual_seed(0)).images
        side = images[0].size[0]
        grid = Image.new("RGB", (side * len(images), side))
        for i, image in enumerate(images):
            grid.paste(image, (i * side, 0))
        return grid

    return sample_fn


def make_save_fn(vqvae, text_encoder):
    from genmodels.pipelines.var import VARPipeline

    def save_fn(ema_model, out_dir: Path) -> None:
        pipe = VARPipeline(transformer=ema_model, vqvae=vqvae.to("cpu"), text_encoder=text_encoder.to("cpu"))
        pipe.save_pretrained(Path(out_dir) / "pipeline")

    return save_fn


def build(args: argparse.Namespace) -> Training:
    """Tokenizer, text encoder, transformer, datasets and loop config; bad arguments raise SystemExit."""
    if not (Path(args.vqvae) / "config.json").is_file():
        raise SystemExit(f"--vqvae {args.vqvae}: not a MultiScaleVQVAE folder (no config.json)")
    try:
        vqvae = MultiScaleVQVAE.from_pretrained(args.vqvae, use_safetensors=True)
    except (OSError, ValueError) as err:
        raise SystemExit(f"cannot load the VQ-VAE {args.vqvae}: {err}") from err
    text_encoder = load_text_encoder(args.text_encoder).eval().requires_grad_(False)
    torch.manual_seed(args.seed)
    model = VARTransformer(**model_config(args))
    if args.init:
        load_init_weights(model, args.init)
    if model.config.text_dim != text_encoder.width or model.pooled_dim != text_encoder.embed_dim:
        raise SystemExit(f"the text encoder gives {text_encoder.width}-wide tokens and a {text_encoder.embed_dim}-wide "
                         f"pooled vector; the model expects {model.config.text_dim} and {model.pooled_dim}")
    objective = VARObjective(vqvae, text_encoder, args.text_drop_prob)
    try:
        objective.check_model(model)
    except ValueError as err:
        raise SystemExit(str(err)) from err
    size = vqvae.config.sample_size
    train_ds = ShapesDataset("train", size=size, seed=args.seed)
    val_ds = ShapesDataset("val", size=size)
    cfg = TrainConfig(output_dir=args.output_dir, max_steps=args.max_steps, max_minutes=args.max_minutes,
                      batch_size=args.batch_size, lr=args.lr, base_batch_size=args.batch_size,
                      warmup_steps=args.warmup_steps, lr_decay=args.lr_decay, decay_start=args.decay_start,
                      weight_decay=args.weight_decay,
                      grad_clip=args.grad_clip,
                      ema_power=args.ema_power, checkpoint_every=args.checkpoint_every,
                      checkpoints_total_limit=args.checkpoints_total_limit, sample_every=args.sample_every,
                      eval_every=args.eval_every, eval_samples=args.eval_samples, log_every=args.log_every,
                      seed=args.seed, resume=args.resume)
    return Training(cfg, model, objective, train_ds, val_ds, text_encoder=text_encoder, vqvae=vqvae)


def main(argv=None) -> dict:
    args = parse_args(argv)
    start_script(args.output_dir, args.threads)
    t = build(args)
    sample_fn = make_sample_fn(t.vqvae, t.text_encoder) if args.sample_every else None
    return train(t.cfg, t.model, t.objective, t.train_ds, val_dataset=t.val_ds, sample_fn=sample_fn,
                 save_fn=make_save_fn(t.vqvae, t.text_encoder))


if __name__ == "__main__":
    main()
