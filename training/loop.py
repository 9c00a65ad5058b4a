"""The shared training loop on accelerate: one loop for every backbone, objective and dataset.

What it guarantees (and the tests check): gradient accumulation through ``accelerator.accumulate``; the LR
schedule and the EMA advance on real optimizer steps only; a deterministic data order and per-step noise
(seeded by seed, epoch, micro-step and process), so a resumed run continues exactly where the checkpoint
was taken; atomic ``checkpoint-N`` folders with a total limit; ``--resume latest``; tqdm progress, a
``metrics.jsonl`` log and periodic sample grids.

Distribution comes from the accelerate config it is launched with (``training/configs/``): DDP, FSDP or a
single process, with the mixed precision of the config unless ``mixed_precision`` overrides it. Under DDP every
process holds the whole model and the EMA. Under FSDP the training weights are sharded, but the EMA is kept
whole (unsharded, fp32) on every process: each optimizer step gathers the full parameters once
(``summon_full_params``; FSDP2: ``DTensor.full_tensor``) to update it. That costs one all-gather of the model
per step and one full copy per process; it keeps checkpoints, sampling and the final save identical to DDP.
Checkpoints use accelerate's FSDP save (``fsdp_state_dict_type`` of the config; FULL_STATE_DICT gathers on
rank 0). accelerate enables FSDP only on GPU-type backends; on a CPU-only machine the loop turns an FSDP launch
into FSDP over gloo itself (:func:`make_accelerator`), so the same config is tested without GPUs.
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from genmodels.diffusion.noise import GlobalBatch

from .checkpoint import check_output_dir, load_checkpoint, resolve_resume, rewind_metrics, save_checkpoint
from .ema import InversePowerEMA
from .lr_scaling import LAMB, GradientNoiseScale, decay_factor, grad_sq_norm, scaled_lr, warmup_factor


@dataclass
class TrainConfig:
    output_dir: str
    max_steps: int = 1000
    max_minutes: float | None = None  # stop (and save) after this much training wall time
    stop_at_step: int | None = None  # stop (and save) at this step; the LR schedule still runs to max_steps
    batch_size: int = 16  # per process, per micro-step
    grad_accum: int = 1
    lr: float = 5e-4  # at base_batch_size; scaled by lr_scaling to the real total batch
    base_batch_size: int = 16
    lr_scaling: str = "none"  # none | sqrt | linear
    warmup_steps: int = 0  # linear warm-up; with a scaling rule it starts at the base rate (Goyal et al.)
    lr_decay: str = "none"  # none | cosine | cooldown, each to 10 % at max_steps (lr_scaling.decay_factor)
    decay_start: int | None = None  # cooldown: the LR is constant until this step, then falls linearly
    optimizer: str = "adamw"  # adamw | lamb (layer-wise trust ratio)
    log_noise_scale: bool = False  # estimate B_noise from micro-batch vs accumulated gradients (grad_accum ≥ 2)
    weight_decay: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    grad_clip: float = 1.0
    ema_power: float = 0.75
    ema_max_decay: float = 0.9999
    checkpoint_every: int = 500  # 0: only at max_steps and when stopped early (max_minutes, stop_at_step)
    checkpoints_total_limit: int | None = 3
    sample_every: int = 0
    eval_every: int = 0
    eval_batches: int = 4  # held-out batches of batch_size (when eval_samples is 0)
    eval_samples: int = 0  # > 0: that many held-out items in batches of 16 with seed-0 noise, the same for any
    #                        batch size and seed, so held-out losses compare across runs
    log_every: int = 10  # 0: only the last step
    seed: int = 0
    resume: str | None = None
    mixed_precision: str | None = None  # no | fp16 | bf16; None: the accelerate config's (else no)
    num_workers: int = 0


@dataclass
class Training:
    """Everything :func:`train` needs, as the training scripts' ``build(args)`` make it from their command line
    (benchmarks reuse it): the loop config, model, objective and datasets, plus what the scripts' sample / save
    functions need (the text encoder; the item shape for ``train_dit.py``, the tokenizer for ``train_var.py``)."""

    cfg: TrainConfig
    model: torch.nn.Module
    objective: Callable
    train_ds: Any
    val_ds: Any
    text_encoder: torch.nn.Module | None = None
    shape: tuple[int, ...] | None = None
    vqvae: torch.nn.Module | None = None


def start_script(output_dir: str, threads: int = 0) -> None:
    """The training scripts' first step: refuse an unwritable output folder before any work (it would otherwise
    fail at the first checkpoint), then set torch's CPU threads (0: torch's default)."""
    try:
        check_output_dir(output_dir)
    except OSError as err:
        raise SystemExit(f"--output-dir: {err.strerror or err}") from err
    if threads:
        torch.set_num_threads(threads)


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


def make_accelerator(grad_accum: int = 1, mixed_precision: str | None = None) -> Accelerator:
    """The loop's ``Accelerator``: CPU processes over gloo when CUDA is absent, else GPUs.

    An FSDP launch (``ACCELERATE_USE_FSDP=true``, set by ``accelerate launch`` with ``distributed_type: FSDP``)
    on a machine without CUDA would silently run as plain DDP (MULTI_CPU): accelerate 1.x switches to FSDP
    only for GPU-type backends. torch's FSDP itself runs on CPU/gloo, so here the state is switched to FSDP
    with the plugin read from the launch environment (the same plugin accelerate would build on GPUs).
    """
    accelerator = Accelerator(gradient_accumulation_steps=grad_accum, mixed_precision=mixed_precision,
                              cpu=not torch.cuda.is_available())
    fsdp_env = accelerator.distributed_type == DistributedType.MULTI_CPU and \
        getattr(accelerator.state, "fsdp_plugin", None) is None and \
        os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    if fsdp_env:
        plugin = FullyShardedDataParallelPlugin()
        if plugin.fsdp_version != 1:
            raise ValueError("FSDP on CPU processes is wired for fsdp_version 1 (the configs' default)")
        if accelerator.mixed_precision != "no":
            plugin.set_mixed_precision(accelerator.mixed_precision)
        accelerator.state.fsdp_plugin = plugin
        _fix_fsdp_cpu_optimizer_state_dict()
        # FSDP wants its device_id to equal its compute device, torch.device("cpu"); accelerate's CPU processes
        # use "cpu:<local rank>" (the same memory, a different torch.device)
        for shared in (accelerator.state._shared_state, PartialState._shared_state):
            shared["distributed_type"] = DistributedType.FSDP
            shared["device"] = torch.device("cpu")
    return accelerator


def _fix_fsdp_cpu_optimizer_state_dict() -> None:
    """Work around a torch FSDP1 bug that only bites when FSDP computes on CPU.

    ``FSDP.optim_state_dict`` (``use_orig_params=True``) all-gathers each optimizer state (exp_avg, then
    exp_avg_sq) into one buffer per flat parameter and hands out views of it; the "offload to CPU" that follows
    is what copies them on GPUs, but on CPU it is a no-op, so the next state overwrites the previous one and a
    saved AdamW state has exp_avg == exp_avg_sq for every parameter (resume then diverges). Cloning each
    state before it is unflattened makes the views own their memory. Applied only for FSDP on CPU processes.
    """
    from torch.distributed.fsdp import _optim_utils

    original = _optim_utils._unflatten_orig_param_states
    if getattr(original, "_lingen_cpu_fix", False):
        return

    def unflatten(fsdp_param_info, output_states, state_name, *args, **kwargs):
        for states in output_states.values():
            value = states.get(state_name)
            if isinstance(value, torch.Tensor) and value.device.type == "cpu":
                states[state_name] = value.clone()
        return original(fsdp_param_info, output_states, state_name, *args, **kwargs)

    unflatten._lingen_cpu_fix = True
    _optim_utils._unflatten_orig_param_states = unflatten


_WRAPPER_NAMES = {"_fsdp_wrapped_module", "_checkpoint_wrapped_module", "_orig_mod"}


def _clean_name(name: str) -> str:
    """A parameter name without the segments FSDP, activation checkpointing and torch.compile insert."""
    return ".".join(part for part in name.split(".") if part not in _WRAPPER_NAMES)


class _FullWeights:
    """The model's full (unsharded) parameters and buffers, ordered like ``reference``'s: what
    :meth:`InversePowerEMA.step` reads (``parameters()``, ``buffers()``)."""

    def __init__(self, model: torch.nn.Module, reference: torch.nn.Module):
        def full(t):
            return t.full_tensor() if hasattr(t, "full_tensor") else t  # FSDP2 DTensor → whole tensor

        params = {_clean_name(n): full(p) for n, p in model.named_parameters()}
        buffers = {_clean_name(n): full(b) for n, b in model.named_buffers()}
        self._params = [params[n] for n, _ in reference.named_parameters()]
        self._buffers = [buffers[n] for n, _ in reference.named_buffers()]

    def parameters(self):
        return iter(self._params)

    def buffers(self):
        return iter(self._buffers)


@torch.no_grad()
def ema_step(accelerator: Accelerator, model: torch.nn.Module, ema: InversePowerEMA) -> None:
    """One EMA update from the prepared ``model``. DDP / single process: its parameters directly. FSDP: the
    full parameters, gathered for the update (every process updates its whole EMA copy identically)."""
    if accelerator.distributed_type != DistributedType.FSDP:
        ema.step(accelerator.unwrap_model(model))
        return
    if getattr(accelerator, "is_fsdp2", False):
        ema.step(_FullWeights(model, ema.model))
        return
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    with FSDP.summon_full_params(model, writeback=False, with_grads=False):
        ema.step(_FullWeights(model, ema.model))


def _check_checkpoint_kind(path: Path, fsdp: bool) -> None:
    """accelerate writes FSDP checkpoints (``pytorch_model_fsdp*``) and the others (``model.safetensors``)
    differently and reads each back only under the same kind of launch: say so instead of a missing file."""
    written_by_fsdp = any(Path(path).glob("pytorch_model_fsdp*"))
    if written_by_fsdp != fsdp:
        raise ValueError(f"{path} was written by {'an FSDP' if written_by_fsdp else 'a DDP / single-process'} run "
                         f"and this run is {'FSDP' if fsdp else 'not FSDP'}: resume it with the same kind of "
                         "accelerate config (training/configs/fsdp.yaml or ddp.yaml); the final EMA model folder "
                         "is the same either way")


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


@torch.no_grad()
def evaluate(model, objective, dataset, *, batches: int, batch_size: int, seed: int, device) -> float:
    """Mean loss over the first ``batches`` batches of ``dataset`` with fixed noise (comparable across runs
    with the same ``batch_size`` and ``seed``)."""
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


EVAL_BATCH = 16


def held_out_loss(model, objective, dataset, cfg: TrainConfig, device) -> float:
    """The held-out loss the loop logs: ``cfg.eval_samples`` items (batches of 16, seed-0 noise) when set, so
    runs with different batch sizes or seeds are scored on identical items, noise and noise levels; else
    ``cfg.eval_batches`` batches of the training batch size with the run's seed. Objectives with a
    ``for_evaluation()`` (immiscible EDM) are scored with plain noise."""
    if hasattr(objective, "for_evaluation"):
        objective = objective.for_evaluation()
    if cfg.eval_samples:
        n = min(cfg.eval_samples, len(dataset))
        subset = torch.utils.data.Subset(dataset, range(n))
        return evaluate(model, objective, subset, batches=-(-n // EVAL_BATCH), batch_size=EVAL_BATCH, seed=0,
                        device=device)
    return evaluate(model, objective, dataset, batches=cfg.eval_batches, batch_size=cfg.batch_size, seed=cfg.seed,
                    device=device)


def train(cfg: TrainConfig, model: torch.nn.Module, objective: Callable, train_dataset, *,
          val_dataset=None, sample_fn: Callable | None = None, save_fn: Callable | None = None) -> dict:
    """Train ``model`` with ``objective`` on ``train_dataset``; returns a summary dict.

    ``sample_fn(ema_model, step) -> PIL.Image`` draws the periodic sample grid; ``save_fn(ema_model, dir)``
    writes the final model (defaults to ``ema_model.save_pretrained(dir / "model")``).
    """
    out = Path(cfg.output_dir)
    # cpu=True on a machine without CUDA makes a torchrun-launched job use gloo across CPU processes
    accelerator = make_accelerator(cfg.grad_accum, cfg.mixed_precision)
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
    if accelerator.distributed_type == DistributedType.FSDP and (cfg.log_noise_scale or cfg.optimizer == "lamb"):
        # both read per-tensor norms of whole parameters / gradients, which FSDP shards over the processes
        raise ValueError("log_noise_scale and the lamb optimizer need whole tensors; under FSDP they are sharded "
                         "(use DDP: training/configs/ddp.yaml)")
    # The LR schedule is a pure function of the optimizer step, so nothing about it needs checkpointing
    # (accelerate would pickle a scheduler object and unpickle it on resume).
    base_lrs = [g["lr"] for g in optimizer.param_groups]

    start_ratio = cfg.lr / lr if cfg.lr_scaling != "none" else 0.0

    def set_lr(step: int) -> float:
        factor = warmup_factor(step, cfg.warmup_steps, start_ratio) \
            * decay_factor(step, cfg.max_steps, cfg.warmup_steps, cfg.lr_decay,
                           decay_start=cfg.decay_start)
        for group, base in zip(optimizer.param_groups, base_lrs):
            group["lr"] = base * factor
        return base_lrs[0] * factor

    decay_factor(0, cfg.max_steps, cfg.warmup_steps, cfg.lr_decay, decay_start=cfg.decay_start)  # bad config: fail now
    if cfg.stop_at_step is not None and not 1 <= cfg.stop_at_step <= cfg.max_steps:
        raise ValueError(f"stop_at_step must be in 1..max_steps ({cfg.max_steps}), got {cfg.stop_at_step}")
    for name in ("checkpoint_every", "log_every", "eval_every", "sample_every"):
        if getattr(cfg, name) < 0:
            raise ValueError(f"{name} must be ≥ 0 (0: off / only at the end), got {getattr(cfg, name)}")
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
        _check_checkpoint_kind(resume_path, accelerator.distributed_type == DistributedType.FSDP)
        state.update(load_checkpoint(accelerator, resume_path, ema))
        accelerator.print(f"resumed from {resume_path} at step {state['step']}")
    if cfg.resume and accelerator.is_main_process:  # steps a killed run logged after its checkpoint are redone
        rewind_metrics(out / "metrics.jsonl", state["step"])
    ema.model.to(accelerator.device)

    global_micro_batch = cfg.batch_size * accelerator.num_processes
    # objectives that couple the items of a batch (immiscible "assign") solve over the batch of all processes
    global_batch = GlobalBatch(accelerator.gather, accelerator.process_index) if accelerator.num_processes > 1 \
        else None
    metrics_path = out / "metrics.jsonl"
    pbar = tqdm(total=cfg.max_steps, initial=state["step"], desc="train", disable=not accelerator.is_main_process,
                dynamic_ncols=True)
    t_start, running, last_log = time.perf_counter(), [], None
    noise_scale, small_sq = GradientNoiseScale(), None
    model.train()
    out_of_time = False
    last_step = cfg.max_steps if cfg.stop_at_step is None else cfg.stop_at_step
    while state["step"] < last_step and not out_of_time:
        skip = state["samples_in_epoch"] // global_micro_batch
        epoch_iter = accelerator.skip_first_batches(loader, skip) if skip else loader
        # accelerate's loaders push their own epoch counter into the sampler when iterated: set theirs.
        epoch_iter.set_epoch(state["epoch"])
        sampler.set_epoch(state["epoch"])
        train_dataset.set_epoch(state["epoch"])
        for batch in epoch_iter:
            gen = _noise_generator(cfg.seed, state["micro_step"], accelerator.process_index)
            current_lr = set_lr(state["step"])
            if global_batch is not None:
                batch = {**batch, "global_batch": global_batch}
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
            ema_step(accelerator, model, ema)
            step = state["step"]
            pbar.update(1)
            if (cfg.log_every and step % cfg.log_every == 0) or step == cfg.max_steps:
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
                val = held_out_loss(ema.model, objective, val_dataset, cfg, accelerator.device)
                with open(metrics_path, "a") as f:
                    f.write(json.dumps({"step": step, "val_loss_ema": val}) + "\n")
            if cfg.sample_every and sample_fn is not None and step % cfg.sample_every == 0 \
                    and accelerator.is_main_process:
                (out / "samples").mkdir(exist_ok=True)
                sample_fn(ema.model, step).save(out / "samples" / f"step-{step:07d}.png")
            out_of_time = cfg.max_minutes is not None and accelerator.reduce(
                torch.tensor(float(time.perf_counter() - t_start > 60 * cfg.max_minutes),
                             device=accelerator.device), "max").item() > 0
            stop_here = out_of_time or (cfg.stop_at_step is not None and step >= cfg.stop_at_step)
            if (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or step == cfg.max_steps or stop_here:
                save_checkpoint(accelerator, out, step, dict(state), ema, cfg.checkpoints_total_limit)
            if step >= cfg.max_steps or stop_here:
                break
        else:
            state["epoch"] += 1
            state["samples_in_epoch"] = 0
    pbar.close()
    accelerator.wait_for_everyone()
    summary = {"step": state["step"], "last": last_log, "seconds": time.perf_counter() - t_start,
               "distributed_type": str(accelerator.distributed_type).split(".")[-1],
               "num_processes": accelerator.num_processes, "mixed_precision": accelerator.mixed_precision}
    if accelerator.distributed_type == DistributedType.FSDP and not getattr(accelerator, "is_fsdp2", False):
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        summary["fsdp_units"] = len(FSDP.fsdp_modules(model))  # the root plus one per auto-wrapped block
    if accelerator.is_main_process:
        if val_dataset is not None:
            summary["val_loss_ema"] = held_out_loss(ema.model, objective, val_dataset, cfg, accelerator.device)
        final = copy.deepcopy(ema.model).to("cpu")
        if save_fn is not None:
            save_fn(final, out)
        else:
            final.save_pretrained(out / "model")
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    accelerator.end_training()
    return summary
