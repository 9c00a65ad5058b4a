"""The training-science experiments of issue 10, measured here rather than assumed.

    python benchmarks/training_science.py lr-batch --recipe pianoroll --json benchmarks/results/science_lr_pr.json
    python benchmarks/training_science.py lr-batch --recipe shapes --json benchmarks/results/science_lr_shapes.json
    python benchmarks/training_science.py immiscible --json benchmarks/results/science_immiscible.json
    python benchmarks/training_science.py throughput --json benchmarks/results/science_throughput.json

* ``lr-batch``: the batch grows ×F (default 4) at an equal number of samples seen (F× fewer steps) with the
  learning rate left alone, scaled by √F or by F (``--lr-scaling none|sqrt|linear``, with the loop's warm-up
  starting from the base rate, Goyal et al.), next to the base batch, for AdamW on a shipped recipe's model:
  HDiT on piano rolls or the SANA-style DiT on the shapes world. Reported: the held-out loss curve against
  samples seen (the loop's ``--eval-samples``: the same items, noise and noise levels in every run) and the
  final model's task metric (piano rolls: pitch-class and duration histogram overlap of an inpainted region with
  the held-out truth; shapes: the oracle on 48 prompts).
* ``immiscible``: plain noise vs immiscible noise (nearest of k = 4 and 8, batch linear assignment) on the
  piano-roll HDiT: the steps each run needs to reach the plain run's final held-out loss (held-out losses use
  plain noise for every run) and the speed-up that implies.
* ``throughput``: one training step of each family at its recipe's batch: samples/s and the share of this
  CPU's matmul peak (measured in the same run), with FLOPs counted by ``torch.utils.flop_counter`` (matmuls,
  convolutions and attention, forward and backward; elementwise work is not counted).

Every run trains with the real ``training/train_dit.py`` in a subprocess, ≥ 2 seeds, under ``--runs-dir``;
a run whose ``summary.json`` exists is reused, so an interrupted experiment continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from genmodels.io import write_text_atomic  # noqa: E402

RECIPES = {
    # the shipped recipes' models and optimiser settings (training/recipes/pianoroll_hdit.sh, shapes_sana.sh)
    "pianoroll": {"args": ["--model", "hdit", "--config", "training/recipes/pianoroll_hdit.json",
                           "--dataset", "pianoroll", "--dataset-args", '{"width": 128}', "--weight-decay", "1e-3"],
                  "lr": 5e-4},
    "shapes": {"args": ["--model", "sana", "--config", "{sana_config}", "--dataset", "shapes",
                        "--text-encoder", "assets/clip-shapes", "--weight-decay", "0"],
               "lr": 6e-4},
}


# --------------------------------------------------------------------------------------------------------------
# runs

def sana_config(runs_dir: Path) -> Path:
    from genmodels.sana import SanaDiT

    path = runs_dir / "sana_shapes_crosswkv.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    # velocity prediction: the model the recorded figures (BENCHMARKS.md, 2026-11-29) were measured on
    path.write_text(json.dumps({**SanaDiT.shapes_config(), "cross_attn": "crosswkv", "prediction": "velocity"}))
    return path


def train_run(out: Path, recipe: str, *, batch: int, steps: int, lr: float, base_batch: int, scaling: str,
              seed: int, eval_every: int, eval_samples: int, threads: int, runs_dir: Path,
              extra: tuple[str, ...] = ()) -> dict:
    """One real training run (reused when its summary exists with the same settings); returns its curve."""
    spec = {"recipe": recipe, "batch": batch, "steps": steps, "lr": lr, "base_batch": base_batch,
            "scaling": scaling, "seed": seed, "eval_every": eval_every, "eval_samples": eval_samples,
            "extra": list(extra)}
    spec_path, wall_path = out / "science_spec.json", out / "science_wall.json"
    done = (out / "summary.json").is_file() and spec_path.is_file() and json.loads(spec_path.read_text()) == spec
    if not done:
        shutil.rmtree(out, ignore_errors=True)
        args = RECIPES[recipe]["args"]
        if "{sana_config}" in args:  # written once per run, only for the recipe that needs it
            args = [a.replace("{sana_config}", str(sana_config(runs_dir))) for a in args]
        warmup = max(1, round(0.05 * steps))  # 5 % of the steps (training.md), the same share for every run
        cmd = [sys.executable, str(ROOT / "training" / "train_dit.py"), *args, "--output-dir", str(out),
               "--batch-size", str(batch), "--base-batch-size", str(base_batch), "--lr", str(lr),
               "--lr-scaling", scaling, "--warmup-steps", str(warmup), "--max-steps", str(steps),
               "--eval-every", str(eval_every), "--eval-samples", str(eval_samples), "--log-every", str(eval_every),
               "--checkpoint-every", str(steps), "--checkpoints-total-limit", "1", "--sample-every", "0",
               "--seed", str(seed), "--threads", str(threads), *extra]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"training run {out} failed:\n{proc.stderr[-3000:]}")
        wall_path.write_text(json.dumps({"wall_s": round(time.perf_counter() - t0, 1)}))
        spec_path.write_text(json.dumps(spec))  # last: marks the run complete
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    curve = [(r["step"], r["val_loss_ema"]) for r in rows if "val_loss_ema" in r]
    train_loss = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    lr_used = [r["lr"] for r in rows if "lr" in r]
    summary = json.loads((out / "summary.json").read_text())
    wall = json.loads(wall_path.read_text())["wall_s"] if wall_path.is_file() else None
    return {"dir": str(out), "curve": curve, "train_loss": train_loss, "peak_lr": max(lr_used) if lr_used else None,
            "final_val": summary.get("val_loss_ema"), "train_seconds": round(summary["seconds"], 1),
            "wall_s": wall}


# --------------------------------------------------------------------------------------------------------------
# task metrics of a trained run's pipeline

def pianoroll_metric(run_dir: str, windows: int = 12, steps: int = 24) -> dict:
    from benchmarks import pianoroll_eval as pe
    from genmodels.loading import load_pipeline
    from genmodels.pipelines import PianoRollInpaintPipeline

    pipe = load_pipeline(PianoRollInpaintPipeline, str(Path(run_dir) / "pipeline"))
    pipe.set_progress_bar_config(disable=True)
    rolls, _ = pe.heldout_windows(windows, seed=0)
    mask = np.zeros(rolls.shape[2:], dtype=bool)
    mask[:, 2 * pe.STEPS_PER_BAR: 6 * pe.STEPS_PER_BAR] = True
    out = pe.run_model(pipe, rolls, mask, steps, 1, 0, windows)
    scores = pe.mean_scores([pe.region_scores(o, t, mask) for o, t in zip(out, rolls)])
    return {"pitch_class_overlap": scores["pitch_class_overlap"], "duration_overlap": scores["duration_overlap"],
            "notes_in_mask": scores["notes"]}


def shapes_metric(run_dir: str, per_category: int = 8) -> dict:
    from benchmarks import shapes_t2i_eval as se

    pipe = se.load_t2i_pipeline(Path(run_dir) / "pipeline")
    result = se.evaluate_pipeline(pipe, steps=20, guidance=4.0, per_category=per_category, progress=False)
    return {"oracle": round(result["overall"], 4), "prompts": result["n"]}


# --------------------------------------------------------------------------------------------------------------
# experiments

def first_reaching(curve: list[tuple[int, float]], target: float) -> int | None:
    for step, value in curve:
        if value <= target:
            return step
    return None


def lr_batch(args) -> dict:
    recipe, base, factor = args.recipe, args.base_batch, args.factor
    base_steps = args.samples // base
    big_steps = args.samples // (base * factor)
    lr = args.lr or RECIPES[recipe]["lr"]
    configs = [("base", base, base_steps, "none")] + [(f"x{factor}-{rule}", base * factor, big_steps, rule)
                                                     for rule in ("none", "sqrt", "linear")]
    if args.configs:
        unknown = set(args.configs) - {name for name, *_ in configs}
        if unknown:
            raise SystemExit(f"--configs: unknown {sorted(unknown)}; known: {[name for name, *_ in configs]}")
        configs = [c for c in configs if c[0] in args.configs]
    eval_every_samples = args.samples // args.evals
    report = {"experiment": "lr-batch", "recipe": recipe, "samples_seen": args.samples, "base_batch": base,
              "factor": factor, "base_lr": lr, "seeds": args.seeds, "eval_samples": args.eval_samples,
              "threads": args.threads, "configs": {}}
    metric = pianoroll_metric if recipe == "pianoroll" else shapes_metric
    for name, batch, steps, rule in configs:
        runs = []
        for seed in args.seeds:
            out = Path(args.runs_dir) / "lr-batch" / recipe / f"{name}-seed{seed}"
            run = train_run(out, recipe, batch=batch, steps=steps, lr=lr, base_batch=base, scaling=rule, seed=seed,
                            eval_every=max(1, eval_every_samples // batch), eval_samples=args.eval_samples,
                            threads=args.threads, runs_dir=Path(args.runs_dir))
            run["curve_samples"] = [(s * batch, v) for s, v in run["curve"]]
            run["metric"] = metric(run["dir"])
            print(f"{recipe} {name} seed {seed}: held-out {run['final_val']:.4f}, {run['metric']}", flush=True)
            runs.append(run)
        report["configs"][name] = {
            "batch": batch, "steps": steps, "scaling": rule, "peak_lr": runs[0]["peak_lr"], "runs": runs,
            "final_val_mean": statistics.fmean(r["final_val"] for r in runs),
            "final_val_sd": statistics.pstdev(r["final_val"] for r in runs),
            "metric_mean": {k: round(statistics.fmean(r["metric"][k] for r in runs), 4) for k in runs[0]["metric"]},
            "train_seconds_mean": statistics.fmean(r["train_seconds"] for r in runs),
        }
    for cfg in report["configs"].values() if "base" in report["configs"] else ():
        # samples each run needs to reach the base run's final held-out loss (same seed)
        cfg["samples_to_base_final"] = [
            first_reaching(run["curve_samples"], base_run["curve"][-1][1])
            for run, base_run in zip(cfg["runs"], report["configs"]["base"]["runs"], strict=True)]
    return report


IMMISCIBLE = {"plain": (), "knn4": ("--immiscible", "knn", "--immiscible-k", "4"),
              "knn8": ("--immiscible", "knn", "--immiscible-k", "8"), "assign": ("--immiscible", "assign")}


def immiscible(args) -> dict:
    lr = RECIPES["pianoroll"]["lr"]
    report = {"experiment": "immiscible", "recipe": "pianoroll", "batch": args.batch, "steps": args.steps,
              "seeds": args.seeds, "eval_every": args.eval_every, "eval_samples": args.eval_samples,
              "threads": args.threads, "variants": {}}
    runs = {}
    for name in args.variants:
        runs[name] = []
        for seed in args.seeds:
            out = Path(args.runs_dir) / "immiscible" / f"{name}-seed{seed}"
            run = train_run(out, "pianoroll", batch=args.batch, steps=args.steps, lr=lr, base_batch=args.batch,
                            scaling="none", seed=seed, eval_every=args.eval_every, eval_samples=args.eval_samples,
                            threads=args.threads, runs_dir=Path(args.runs_dir), extra=IMMISCIBLE[name])
            print(f"immiscible {name} seed {seed}: held-out {run['final_val']:.4f} ({run['train_seconds']} s)",
                  flush=True)
            runs[name].append(run)
    for name, rs in runs.items():
        reach, speedups = [], []
        for seed_i, run in enumerate(rs):
            target = runs["plain"][seed_i]["curve"][-1][1]  # the plain run's final held-out loss, same seed
            step = first_reaching(run["curve"], target)
            reach.append(step)
            speedups.append(args.steps / step if step else None)
        report["variants"][name] = {
            "runs": rs, "steps_to_plain_final": reach, "speedup": speedups,
            "speedup_mean": statistics.fmean(s for s in speedups) if all(speedups) else None,
            "final_val_mean": statistics.fmean(r["final_val"] for r in rs),
            "final_val_sd": statistics.pstdev(r["final_val"] for r in rs),
            "seconds_per_step": statistics.fmean(r["train_seconds"] / args.steps for r in rs),
        }
    return report


# --------------------------------------------------------------------------------------------------------------
# throughput

def matmul_peak(threads: int, n: int = 2048, repeats: int = 5) -> float:
    """Best fp32 GFLOP/s of an n×n matmul on this machine (the denominator of the share)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


FAMILIES = {
    "hdit (piano roll)": ("dit", ["--model", "hdit", "--config", "training/recipes/pianoroll_hdit.json",
                                  "--dataset", "pianoroll", "--dataset-args", '{"width": 128}'], 16),
    "sana (shapes)": ("dit", ["--model", "sana", "--config", "{sana_config}", "--dataset", "shapes",
                              "--text-encoder", "assets/clip-shapes"], 32),
    "dim (moving shapes)": ("dit", ["--model", "dim", "--config", "{dim_config}", "--dataset", "moving_shapes",
                                    "--text-encoder", "assets/clip-shapes", "--flow-shift", "1"], 8),
    "var (shapes)": ("var", ["--vqvae", "assets/shapes-vqvae", "--text-encoder", "assets/clip-shapes",
                             "--config", "shapes"], 32),
}


def build_family(kind: str, argv: list[str], batch: int, runs_dir: Path):
    from training import train_dit, train_var

    if kind == "dit":
        from genmodels.dim import DiffusionMamba

        dim_cfg = runs_dir / "dim_moving_shapes.json"
        dim_cfg.parent.mkdir(parents=True, exist_ok=True)
        dim_cfg.write_text(json.dumps({**DiffusionMamba.moving_shapes_config(), "scan": "zigzag"}))
        sana_cfg = sana_config(runs_dir) if "{sana_config}" in argv else None
        argv = [a.replace("{sana_config}", str(sana_cfg)).replace("{dim_config}", str(dim_cfg)) for a in argv]
        return train_dit.build(train_dit.parse_args([*argv, "--output-dir", str(runs_dir / "tp"),
                                                     "--batch-size", str(batch)]))
    return train_var.build(train_var.parse_args([*argv, "--output-dir", str(runs_dir / "tp"),
                                                 "--batch-size", str(batch)]))


def _conv_backward_flop(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                        _output_padding, _groups, output_mask, out_shape=None, **kwargs) -> int:
    """Convolution backward: grad-input and grad-weight each cost what the forward does. (torch's own formula
    ignores ``groups`` for the weight gradient and counts a depthwise conv's backward ~1,000× too high.)"""
    from torch.utils.flop_counter import conv_flop_count

    return conv_flop_count(x_shape, w_shape, grad_out_shape, transposed) * (int(output_mask[0]) + int(output_mask[1]))


def count_flops(fn, *args) -> int:
    """FLOPs of ``fn(*args)`` (matmuls, convolutions, attention; forward and backward), 2 per multiply-add."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False, custom_mapping={torch.ops.aten.convolution_backward: _conv_backward_flop}) \
            as counter:
        fn(*args)
    return counter.get_total_flops()


def training_step(t, batch: dict, optimizer, generator) -> None:
    loss = t.objective(t.model, batch, generator).mean()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def throughput(args) -> dict:
    torch.set_num_threads(args.threads)
    peak = matmul_peak(args.threads)
    report = {"experiment": "throughput", "threads": args.threads, "matmul_peak_gflops": round(peak, 1),
              "families": {}}
    for name, (kind, argv, batch) in FAMILIES.items():
        if args.families and not any(f in name for f in args.families):
            continue
        t = build_family(kind, argv, batch, Path(args.runs_dir))
        t.model.train()
        items = [t.train_ds[i] for i in range(batch)]
        batch_dict = torch.utils.data.default_collate(items)
        optimizer = torch.optim.AdamW(t.model.parameters(), lr=1e-4)
        gen = torch.Generator().manual_seed(0)
        training_step(t, batch_dict, optimizer, gen)  # warm-up
        flops = count_flops(training_step, t, batch_dict, optimizer, gen)
        times = []
        deadline = time.perf_counter() + args.seconds
        while len(times) < args.min_steps or (time.perf_counter() < deadline and len(times) < 50):
            s = time.perf_counter()
            training_step(t, batch_dict, optimizer, gen)
            times.append(time.perf_counter() - s)
        step_s = statistics.median(times)
        achieved = flops / step_s / 1e9
        report["families"][name] = {
            "batch": batch, "parameters_m": round(sum(p.numel() for p in t.model.parameters()) / 1e6, 2),
            "step_s": round(step_s, 3), "samples_per_s": round(batch / step_s, 2),
            "gflop_per_sample": round(flops / batch / 1e9, 3), "achieved_gflops": round(achieved, 1),
            "share_of_peak": round(achieved / peak, 3), "steps_timed": len(times),
        }
        print(f"{name}: {report['families'][name]}", flush=True)
    return report


# --------------------------------------------------------------------------------------------------------------
# plots

def plot(report: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    if report["experiment"] == "lr-batch":
        for name, cfg in report["configs"].items():
            xs = [s for s, _ in cfg["runs"][0]["curve_samples"]]
            ys = [statistics.fmean(r["curve_samples"][i][1] for r in cfg["runs"]) for i in range(len(xs))]
            ax.plot(xs, ys, marker=".", label=f"{name} (batch {cfg['batch']}, lr {cfg['peak_lr']:.2g})")
        ax.set_xlabel("samples seen")
        ax.set_title(f"{report['recipe']}: batch ×{report['factor']} at equal samples (mean of "
                     f"{len(report['seeds'])} seeds)")
    else:
        for name, var in report["variants"].items():
            xs = [s for s, _ in var["runs"][0]["curve"]]
            ys = [statistics.fmean(r["curve"][i][1] for r in var["runs"]) for i in range(len(xs))]
            ax.plot(xs, ys, marker=".", label=name)
        ax.set_xlabel("optimizer steps")
        ax.set_title(f"immiscible noise, piano-roll HDiT (mean of {len(report['seeds'])} seeds)")
    ax.set_ylabel("held-out loss (EMA weights, plain noise)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="experiment", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    common.add_argument("--threads", type=int, default=1, help="torch threads per run")
    common.add_argument("--runs-dir", default="runs/science")
    common.add_argument("--eval-samples", type=int, default=256)
    common.add_argument("--json")
    common.add_argument("--plot", help="PNG of the held-out curves")
    lb = sub.add_parser("lr-batch", parents=[common])
    lb.add_argument("--recipe", choices=sorted(RECIPES), default="pianoroll")
    lb.add_argument("--samples", type=int, default=4000, help="samples seen by every run")
    lb.add_argument("--base-batch", type=int, default=8)
    lb.add_argument("--factor", type=int, default=4)
    lb.add_argument("--lr", type=float, default=None, help="base learning rate (default: the recipe's)")
    lb.add_argument("--evals", type=int, default=10, help="held-out evaluations per run")
    lb.add_argument("--configs", nargs="+", default=None, metavar="NAME",
                    help="run only these configurations (base, xF-none, xF-sqrt, xF-linear), e.g. to split the work "
                         "over processes; a later run over all of them reuses the finished runs")
    im = sub.add_parser("immiscible", parents=[common])
    im.add_argument("--batch", type=int, default=16)
    im.add_argument("--steps", type=int, default=500)
    im.add_argument("--eval-every", type=int, default=25)
    im.add_argument("--variants", nargs="+", default=list(IMMISCIBLE), choices=list(IMMISCIBLE))
    tp = sub.add_parser("throughput", parents=[common])
    tp.add_argument("--seconds", type=float, default=20.0, help="time budget per family")
    tp.add_argument("--min-steps", type=int, default=3)
    tp.add_argument("--families", nargs="*", help="substrings of the families to run (default: all)")
    args = p.parse_args(argv)
    if args.experiment != "throughput" and len(args.seeds) < 1:
        p.error("--seeds needs at least one seed")
    if args.experiment == "immiscible" and "plain" not in args.variants:
        p.error("the immiscible experiment needs the 'plain' variant (its final loss is the target)")
    report = {"lr-batch": lr_batch, "immiscible": immiscible, "throughput": throughput}[args.experiment](args)
    report["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    if args.json:
        write_text_atomic(args.json, json.dumps(report, indent=1))
    if args.plot and args.experiment != "throughput":
        plot(report, args.plot)
    return report


if __name__ == "__main__":
    main()
