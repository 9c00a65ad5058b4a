"""The shared training loop on accelerate: one loop for every backbone, objective and dataset.

What it guarantees (and the tests check): gradient accumulation through ``accelerator.accumulate``; the LR
schedule and the EMA advance on real optimizer steps only; a deterministic data order and per-step noise
(seeded by seed, epoch, micro-step and process), so a resumed run continues exactly where the checkpoint
was taken; atomic ``checkpoint-N`` folders with a total limit; ``--resume latest``; tqdm progress, a
``metrics.jsonl`` log and periodic sample grids.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from .checkpoint import load_checkpoint, resolve_resume, save_checkpoint
from .ema import InversePowerEMA
from .lr_scaling import LAMB, GradientNoiseScale, grad_sq_norm, scaled_lr, warmup_factor


@dataclass
class TrainConfig:
    output_dir: str
    max_steps: int = 1000
    max_minutes: float | None = None  # stop (and save) after this much training wall time
    batch_size: int = 16  # per process, per micro-step
    grad_accum: int = 1
    lr: float = 5e-4  # at base_batch_size; scaled by lr_scaling to the real total batch
    base_batch_size: int = 16
    lr_scaling: str = "none"  # none | sqrt | linear
    warmup_steps: int = 0  # linear warm-up; with a scaling rule it starts at the base rate (Goyal et al.)
    optimizer: str = "adamw"  # adamw | lamb (layer-wise trust ratio)
    log_noise_scale: bool = False  # estimate B_noise from micro-batch vs accumulated gradients (grad_accum ≥ 2)
    weight_decay: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    grad_clip: float = 1.0
    ema_power: float = 0.75
    ema_max_decay: float = 0.9999
    checkpoint_every: int = 500
    checkpoints_total_limit: int | None = 3
    sample_every: int = 0
    eval_every: int = 0
    eval_batches: int = 4
    log_every: int = 10
    seed: int = 0
    resume: str | None = None
    mixed_precision: str = "no"
    num_workers: int = 0


class EpochSampler(Sampler[int]):
    """A fresh permutation of the dataset every epoch, fixed by (seed, epoch)."""

    def __init__(self, n: int, seed: int = 0):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


class SeededItems(Dataset):
    """Adds ``noise_seed`` to every item, a function of (seed, epoch, index): each item's noise and σ are then
    the same whatever the batch size, process count or position in a batch (needed for exact multi-process
    equivalence and resume)."""

    def __init__(self, dataset, seed: int):
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        item = dict(self.dataset[index])
        item["noise_seed"] = torch.tensor(((self.seed * 1_000_003 + self.epoch) * 10_000_019 + index) % (2**62))
        return item


def _noise_generator(seed: int, micro_step: int, process: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + micro_step) * 1_009 + process)


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


@torch.no_grad()
def evaluate(model, objective, dataset, *, batches: int, batch_size: int, seed: int, device) -> float:
    """Mean loss over the first ``batches`` batches of ``dataset`` with fixed noise (comparable across runs)."""
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    total, count = 0.0, 0
    for i, batch in enumerate(loader):
        if i >= batches:
            break
        loss = objective(model, _to_device(batch, device), _noise_generator(seed, 10**9 + i, 0))
        total += loss.sum().item()
        count += loss.numel()
    model.train()
    return total / max(count, 1)


def train(cfg: TrainConfig, model: torch.nn.Module, objective: Callable, train_dataset, *,
          val_dataset=None, sample_fn: Callable | None = None, save_fn: Callable | None = None) -> dict:
    """Train ``model`` with ``objective`` on ``train_dataset``; returns a summary dict.

    ``sample_fn(ema_model, step) -> PIL.Image`` draws the periodic sample grid; ``save_fn(ema_model, dir)``
    writes the final model (defaults to ``ema_model.save_pretrained(dir / "model")``).
    """
    out = Path(cfg.output_dir)
    # cpu=True on a machine without CUDA makes a torchrun-launched job use gloo across CPU processes
    accelerator = Accelerator(gradient_accumulation_steps=cfg.grad_accum, mixed_precision=cfg.mixed_precision,
                              cpu=not torch.cuda.is_available())
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2))
    total_batch = cfg.batch_size * accelerator.num_processes * cfg.grad_accum
    lr = scaled_lr(cfg.lr, total_batch, cfg.base_batch_size, cfg.lr_scaling)
    if hasattr(model, "param_groups"):
        groups = model.param_groups(lr, cfg.weight_decay)
    else:
        groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr}]
    if cfg.optimizer == "adamw":
        optimizer = torch.optim.AdamW(groups, lr=lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
    elif cfg.optimizer == "lamb":
        optimizer = LAMB(groups, lr=lr, betas=cfg.betas, eps=max(cfg.eps, 1e-6), weight_decay=cfg.weight_decay)
    else:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}; expected adamw or lamb")
    if cfg.log_noise_scale and cfg.grad_accum < 2:
        raise ValueError("log_noise_scale needs grad_accum ≥ 2 (it compares a micro-batch with the full batch)")
    # The LR schedule is a pure function of the optimizer step, so nothing about it needs checkpointing
    # (accelerate would pickle a scheduler object and unpickle it on resume).
    base_lrs = [g["lr"] for g in optimizer.param_groups]

    start_ratio = cfg.lr / lr if cfg.lr_scaling != "none" else 0.0

    def set_lr(step: int) -> float:
        factor = warmup_factor(step, cfg.warmup_steps, start_ratio)
        for group, base in zip(optimizer.param_groups, base_lrs):
            group["lr"] = base * factor
        return base_lrs[0] * factor

    ema = InversePowerEMA(model, power=cfg.ema_power, max_decay=cfg.ema_max_decay)

    if len(train_dataset) < cfg.batch_size * accelerator.num_processes:
        raise ValueError(f"the training set has {len(train_dataset)} items, fewer than one global batch "
                         f"({cfg.batch_size} × {accelerator.num_processes} processes)")
    train_dataset = SeededItems(train_dataset, cfg.seed)
    sampler = EpochSampler(len(train_dataset), cfg.seed)
    loader = DataLoader(train_dataset, batch_size=cfg.batch_size, sampler=sampler, drop_last=True,
                        num_workers=cfg.num_workers)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)

    state = {"step": 0, "epoch": 0, "samples_in_epoch": 0, "micro_step": 0}
    resume_path = resolve_resume(out, cfg.resume)
    if resume_path is not None:
        state.update(load_checkpoint(accelerator, resume_path, ema))
        accelerator.print(f"resumed from {resume_path} at step {state['step']}")
    ema.model.to(accelerator.device)

    global_micro_batch = cfg.batch_size * accelerator.num_processes
    metrics_path = out / "metrics.jsonl"
    pbar = tqdm(total=cfg.max_steps, initial=state["step"], desc="train", disable=not accelerator.is_main_process,
                dynamic_ncols=True)
    t_start, running, last_log = time.perf_counter(), [], None
    noise_scale, small_sq = GradientNoiseScale(), None
    model.train()
    out_of_time = False
    while state["step"] < cfg.max_steps and not out_of_time:
        skip = state["samples_in_epoch"] // global_micro_batch
        epoch_iter = accelerator.skip_first_batches(loader, skip) if skip else loader
        # accelerate's loaders push their own epoch counter into the sampler when iterated: set theirs.
        epoch_iter.set_epoch(state["epoch"])
        sampler.set_epoch(state["epoch"])
        train_dataset.set_epoch(state["epoch"])
        for batch in epoch_iter:
            gen = _noise_generator(cfg.seed, state["micro_step"], accelerator.process_index)
            current_lr = set_lr(state["step"])
            with accelerator.accumulate(model):
                loss = objective(model, batch, gen).mean()
                accelerator.backward(loss)
                if cfg.log_noise_scale and state["micro_step"] % cfg.grad_accum == 0:
                    # first micro-batch of the cycle: its gradient is g_small / grad_accum (accelerate's scaling)
                    small_sq = grad_sq_norm(model.parameters()) * cfg.grad_accum**2
                if cfg.log_noise_scale and accelerator.sync_gradients and small_sq is not None:
                    noise_scale.update(small_sq, cfg.batch_size, grad_sq_norm(model.parameters()),
                                       cfg.batch_size * cfg.grad_accum * accelerator.num_processes)
                if accelerator.sync_gradients and cfg.grad_clip:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            state["micro_step"] += 1
            state["samples_in_epoch"] += global_micro_batch
            running.append(loss.detach().float())
            if not accelerator.sync_gradients:
                continue
            state["step"] += 1
            ema.step(accelerator.unwrap_model(model))
            step = state["step"]
            pbar.update(1)
            if step % cfg.log_every == 0 or step == cfg.max_steps:
                mean_loss = accelerator.gather(torch.stack(running).mean()[None]).mean().item()
                running = []
                last_log = {"step": step, "loss": mean_loss, "lr": current_lr,
                            "ema_decay": ema.decay(), "elapsed_s": time.perf_counter() - t_start}
                if cfg.log_noise_scale:
                    last_log["b_noise"] = noise_scale.value
                pbar.set_postfix(loss=f"{mean_loss:.4f}")
                if accelerator.is_main_process:
                    with open(metrics_path, "a") as f:
                        f.write(json.dumps(last_log) + "\n")
            if cfg.eval_every and val_dataset is not None and step % cfg.eval_every == 0 \
                    and accelerator.is_main_process:
                val = evaluate(ema.model, objective, val_dataset, batches=cfg.eval_batches,
                               batch_size=cfg.batch_size, seed=cfg.seed, device=accelerator.device)
                with open(metrics_path, "a") as f:
                    f.write(json.dumps({"step": step, "val_loss_ema": val}) + "\n")
            if cfg.sample_every and sample_fn is not None and step % cfg.sample_every == 0 \
                    and accelerator.is_main_process:
                (out / "samples").mkdir(exist_ok=True)
                sample_fn(ema.model, step).save(out / "samples" / f"step-{step:07d}.png")
            out_of_time = cfg.max_minutes is not None and accelerator.reduce(
                torch.tensor(float(time.perf_counter() - t_start > 60 * cfg.max_minutes),
                             device=accelerator.device), "max").item() > 0
            if step % cfg.checkpoint_every == 0 or step == cfg.max_steps or out_of_time:
                save_checkpoint(accelerator, out, step, dict(state), ema, cfg.checkpoints_total_limit)
            if step >= cfg.max_steps or out_of_time:
                break
        else:
            state["epoch"] += 1
            state["samples_in_epoch"] = 0
    pbar.close()
    accelerator.wait_for_everyone()
    summary = {"step": state["step"], "last": last_log, "seconds": time.perf_counter() - t_start}
    if accelerator.is_main_process:
        if val_dataset is not None:
            summary["val_loss_ema"] = evaluate(ema.model, objective, val_dataset, batches=cfg.eval_batches,
                                               batch_size=cfg.batch_size, seed=cfg.seed,
                                               device=accelerator.device)
        final = copy.deepcopy(ema.model).to("cpu")
        if save_fn is not None:
            save_fn(final, out)
        else:
            final.save_pretrained(out / "model")
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    accelerator.end_training()
    return summary
