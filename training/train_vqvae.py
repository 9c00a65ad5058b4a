"""Train the multi-scale residual VQ-VAE on the shapes world:
``python training/train_vqvae.py --output-dir runs/shapes-vqvae``.

Loss: pixel L1 + L2 on [−1, 1] images plus the quantiser's loss (β = 0.25 commitment, straight-through).
AdamW with warm-up and cosine decay, images rendered on the fly (``ShapesDataset``). Dead codes (usage EMA
below 1 % of uniform at every scale) are restarted onto encoder outputs of the current batch every
``--restart-every`` steps until 80 % of training, against the coarse-scale collapse users of VAR's tokenizer
report. Checkpoints (``save_pretrained`` folders, safetensors, written atomically) every ``--checkpoint-every``
steps; ``--resume`` continues from the newest one.

Output: a ``MultiScaleVQVAE`` folder (``config.json``, ``diffusion_pytorch_model.safetensors``) with
``metrics.json`` holding, on held-out (val split) images: the reconstruction MSE / PSNR decoding the scales
1..k for every k (the last is the full tokenizer), codebook usage per scale (fraction of the V codes seen on
the held-out set, and perplexity), and the training figures.
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

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from genmodels.data.shapes import ShapesDataset  # noqa: E402
from genmodels.io import replace_dir_atomic  # noqa: E402
from genmodels.var.vqvae import MultiScaleVQVAE  # noqa: E402
from training.train_clip import lr_at  # noqa: E402  (warm-up, then cosine decay to 10 %)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output-dir", required=True)
    p.add_argument("--config", default="shapes",
                   help="'shapes', 'shapes128', 'shapes256', 'tiny' or a JSON file of MultiScaleVQVAE args")
    p.add_argument("--init", default=None, metavar="FOLDER",
                   help="start from a trained MultiScaleVQVAE of the same network (e.g. the 64² tokenizer for "
                        "--config shapes128: the convolutions and codebook do not depend on the image size)")
    p.add_argument("--max-steps", type=int, default=2000)
    p.add_argument("--max-minutes", type=float, default=None, help="stop after this much training wall time")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup-steps", type=int, default=100)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--restart-every", type=int, default=50, help="dead-code restart period (0: never)")
    p.add_argument("--checkpoint-every", type=int, default=250)
    p.add_argument("--eval-images", type=int, default=512)
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR.ckpt if it exists")
    return p.parse_args(argv)


def model_config(name: str) -> dict:
    named = getattr(MultiScaleVQVAE, f"{name}_config", None)  # shapes, shapes128, shapes256, tiny
    if callable(named):
        return named()
    path = Path(name)
    try:
        cfg = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise SystemExit(f"cannot read the VQ-VAE config {path}: {err}") from err
    if not isinstance(cfg, dict):
        raise SystemExit(f"{path} must hold a JSON object of MultiScaleVQVAE arguments")
    return cfg


@torch.no_grad()
def tokenizer_metrics(vae: MultiScaleVQVAE, n: int, seed: int = 0, batch_size: int = 128) -> dict:
    """Held-out reconstruction per scale prefix and codebook usage per scale (see the module docstring)."""
    vae.eval()
    device = next(vae.parameters()).device
    data = ShapesDataset("val", size=vae.config.sample_size, length=n, seed=seed)
    q = vae.quantize
    k = q.num_scales
    sq_err = torch.zeros(k, dtype=torch.float64)
    counts = torch.zeros(k, q.vocab_size, dtype=torch.float64)
    for start in range(0, n, batch_size):
        images = torch.stack([data[i]["pixel_values"] for i in range(start, min(n, start + batch_size))]).to(device)
        ids = q.encode(vae.encode_latent(images))
        f_hat = None
        for s in range(k):
            h = q.scale_embedding(ids[s], s).float()
            f_hat = h if f_hat is None else f_hat + h
            recon = vae.decode_fhat(f_hat)
            sq_err[s] += F.mse_loss(recon.float(), images, reduction="sum").double().cpu()
            counts[s] += torch.bincount(ids[s].flatten(), minlength=q.vocab_size).double().cpu()
    pixels = n * images[0].numel()
    mse = (sq_err / pixels).tolist()
    probs = counts / counts.sum(1, keepdim=True)
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum(1)
    vae.train()
    return {
        "eval_images": n,
        "patch_nums": list(q.patch_nums),
        "recon_mse_upto_scale": mse,  # images in [-1, 1]
        "recon_psnr_upto_scale": [10 * math.log10(4.0 / max(m, 1e-12)) for m in mse],
        "codebook_usage_per_scale": [float((c > 0).double().mean()) for c in counts],
        "codebook_perplexity_per_scale": [float(e.exp()) for e in entropy],
        "codes_used_any_scale": float((counts.sum(0) > 0).double().mean()),
        "vocab_size": q.vocab_size,
    }


def load_init_weights(vae: MultiScaleVQVAE, folder: str) -> None:
    """Copy a trained tokenizer's weights (safetensors) into ``vae``; every weight must match in shape. The
    per-scale code-usage statistics (``quantize.usage``, one row per scale) start afresh."""
    try:
        trained = MultiScaleVQVAE.from_pretrained(folder, use_safetensors=True)
    except (OSError, ValueError) as err:
        raise SystemExit(f"cannot load the VQ-VAE --init {folder}: {err}") from err
    state, own = trained.state_dict(), vae.state_dict()
    wrong = [k for k in own if k != "quantize.usage" and (k not in state or state[k].shape != own[k].shape)]
    if wrong:
        raise SystemExit(f"--init {folder} does not fit --config: {len(wrong)} tensors differ, e.g. {wrong[:3]}")
    vae.load_state_dict({k: state[k].float() for k in own if k != "quantize.usage"}, strict=False)


def save_checkpoint(vae: MultiScaleVQVAE, optimizer, folder: Path, step: int) -> None:
    """Weights (safetensors), optimizer state and step, replacing ``folder`` atomically."""
    with replace_dir_atomic(folder) as tmp:
        vae.save_pretrained(tmp, safe_serialization=True)
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        (tmp / "trainer_state.json").write_text(json.dumps({"step": step}) + "\n")


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.max_steps < (0 if args.init else 1) or args.batch_size < 1 or args.eval_images < 1:
        raise SystemExit("need --max-steps ≥ 1 (≥ 0 with --init: evaluate and save the initial weights), "
                         "--batch-size ≥ 1 and --eval-images ≥ 1")
    torch.manual_seed(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out_dir = Path(args.output_dir)
    ckpt = out_dir.with_name(f"{out_dir.name}.ckpt")
    step = 0
    if args.resume and (ckpt / "config.json").is_file():
        vae = MultiScaleVQVAE.from_pretrained(ckpt)
        step = json.loads((ckpt / "trainer_state.json").read_text())["step"]
    else:
        vae = MultiScaleVQVAE(**model_config(args.config))
        if args.init:
            load_init_weights(vae, args.init)
    vae.to(device).train()
    decay = [p for n, p in vae.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in vae.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95))
    if args.resume and (ckpt / "optimizer.pt").is_file():
        optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=True))
    data = ShapesDataset("train", size=vae.config.sample_size, seed=args.seed)
    loader = DataLoader(data, batch_size=args.batch_size, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(args.seed + step))
    log_path = out_dir.with_name(f"{out_dir.name}.log.jsonl")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("a" if step else "w")
    start, restarted, last_loss = time.monotonic(), 0, None
    bar = tqdm(total=args.max_steps, initial=step, desc="train_vqvae", unit="step")
    rng = torch.Generator(device=device).manual_seed(args.seed)
    while step < args.max_steps:
        for batch in loader:
            if step >= args.max_steps or (args.max_minutes and time.monotonic() - start > 60 * args.max_minutes):
                break
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, args)
            images = batch["pixel_values"].to(device)
            f = vae.encode_latent(images)
            f_hat, vq_loss, _ = vae.quantize(f)
            recon = vae.decoder(vae.post_quant_conv(f_hat))
            l1, l2 = F.l1_loss(recon, images), F.mse_loss(recon, images)
            loss = l1 + l2 + vq_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
            optimizer.step()
            step += 1
            last_loss = loss.item()
            if args.restart_every and step % args.restart_every == 0 and step <= 0.8 * args.max_steps:
                restarted += vae.quantize.restart_dead_codes(f, generator=rng)
            bar.update()
            if step % args.log_every == 0 or step == 1:
                record = {"step": step, "loss": loss.item(), "l1": l1.item(), "mse": l2.item(),
                          "vq": vq_loss.item(), "usage": vae.quantize.usage_per_scale(), "restarted": restarted,
                          "lr": optimizer.param_groups[0]["lr"], "minutes": (time.monotonic() - start) / 60}
                bar.set_postfix(mse=f"{record['mse']:.4f}", vq=f"{record['vq']:.4f}")
                log.write(json.dumps(record) + "\n")
                log.flush()
            if args.checkpoint_every and step % args.checkpoint_every == 0:
                save_checkpoint(vae, optimizer, ckpt, step)
        else:
            continue
        break
    bar.close()
    log.close()
    metrics = {"steps": step, "batch_size": args.batch_size, "minutes_this_run": (time.monotonic() - start) / 60,
               "final_loss": last_loss, "codes_restarted": restarted,
               "parameters": sum(p.numel() for p in vae.parameters()),
               **tokenizer_metrics(vae, args.eval_images, args.seed)}
    vae.to("cpu")
    with replace_dir_atomic(out_dir) as tmp:
        vae.save_pretrained(tmp, safe_serialization=True)
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(metrics, indent=2))
    return metrics


if __name__ == "__main__":
    main()
