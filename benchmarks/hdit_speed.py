"""HDiT training-step and inference cost on this machine.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/hdit_speed.py [--threads 2] [--batch 16]

For each configuration: parameter count, median seconds of one EDM training step (forward, backward and
AdamW) at ``--batch``, and of one batch-1 forward (one denoiser call while sampling). ``pianoroll`` is the
shipped ``HDiT.pianoroll_config()``; ``pianoroll-patch2`` is the same model with patch 2 (4× the tokens).
On a shared machine set ``OMP_WAIT_POLICY=PASSIVE``: spinning OpenMP threads that lose their core to
another process make small matmuls tens of times slower.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from genmodels.diffusion import KarrasDenoiser
from genmodels.hdit import HDiT


def configs() -> dict[str, dict]:
    roll = HDiT.pianoroll_config()
    return {
        "tiny": {**HDiT.tiny_config(), "sample_size": [64, 128]},
        "pianoroll": roll,
        "pianoroll-patch2": {**roll, "patch_size": 2},
    }


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(config: dict, batch: int, repeats: int) -> dict:
    torch.manual_seed(0)
    model = HDiT(**config)
    denoiser = KarrasDenoiser(model)
    optimizer = torch.optim.AdamW(model.param_groups(5e-4, 1e-3))
    x = torch.randn(batch, config["in_channels"], *config["sample_size"])
    sigma = torch.rand(batch) * 3 + 0.05

    def train_step():
        loss = denoiser.loss(x, torch.randn_like(x), sigma).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    @torch.no_grad()
    def denoise_one():
        denoiser.denoise(x[:1], sigma[:1])

    model.eval()
    infer = median_time(denoise_one, repeats)
    model.train()
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "train_step_s": round(median_time(train_step, repeats), 4),
        "denoise_batch1_s": round(infer, 4),
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--configs", nargs="*", default=["tiny", "pianoroll", "pianoroll-patch2"])
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    all_configs = configs()
    for name in args.configs:
        result = {"config": name, "threads": args.threads, "batch": args.batch,
                  **measure(all_configs[name], args.batch, args.repeats)}
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
