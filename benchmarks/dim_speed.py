"""Diffusion Mamba: sampling time of one clip, and forward time and peak memory vs token count against a
softmax-attention DiT of the same width.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/dim_speed.py --json benchmarks/results/dim_speed.json
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/dim_speed.py --quick

Part 1, sampling: one 16-frame 32×32 clip at the pipeline's defaults (20 steps, guidance 4.0, the null and the
prompt branch in one batched call per step) through ``TextToVideoPipeline`` loaded from ``--model`` (default
``assets/moving-shapes-dim``), prompt encoding and decoding included. Without that folder a pipeline with
random weights of the same architecture (``DiffusionMamba.moving_shapes_config()`` + the tiny CLIP text tower
of ``training/recipes/clip_shapes.json``) stands in, and the output says so: the time does not depend on the
weights. One warm-up call, then the median of ``--sample-repeats`` calls; target ≤ 20 s per clip.

Part 2, scaling: a no-grad batch-1 forward of the transformer (``moving_shapes_config()``: width 128, depth 8,
patch 4) on random clips of F frames at 64×64 (16×16 = 256 tokens per frame), F = 16…256, i.e. 4k…64k tokens,
for the SSM model and its softmax twin (``mixer="softmax"``: the same DiT, every other weight shared, the
token mixer replaced by multi-head softmax attention through ``F.scaled_dot_product_attention``). Every
(model, tokens) point runs in a fresh subprocess: one warm-up, then the median of ``--repeats`` forwards, and
the peak resident memory of that process above its level just before the first forward (RSS sampled every
5 ms). A
softmax point whose predicted time (4 × the previous one) exceeds ``--max-seconds`` is skipped and reported
as such. Reported: times, ratios, peak memory and the log-log slope of time vs tokens; target: SSM ≤ 1.15.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from genmodels.dim import DiffusionMamba  # noqa: E402
from genmodels.io import write_text_atomic  # noqa: E402
from kernels.bench import loglog_slope  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = "assets/moving-shapes-dim"
CLIP_RECIPE = ROOT / "training" / "recipes" / "clip_shapes.json"
PROMPT = "a red circle moves to the right and a blue square moves up"
SAMPLE_TARGET_S = 20.0
SLOPE_TARGET = 1.15
SCALING_SIDE = 64


# Part 1: sampling


def load_or_build(model: str | Path) -> tuple[object, str, bool]:
    """(pipeline, where it came from, random weights?): the folder ``model`` if it exists, else a random-weight
    stand-in of the shipped architecture."""
    from genmodels.diffusion.flow import make_flow_scheduler
    from genmodels.pipelines.text_to_video import TextToVideoPipeline
    from genmodels.text.clip import CLIPTextEncoder

    folder = Path(model)
    if not folder.exists() and not folder.is_absolute() and (ROOT / folder).exists():
        folder = ROOT / folder
    if folder.exists():
        from genmodels.loading import load_pipeline

        return load_pipeline(TextToVideoPipeline, folder), f"loaded from {folder}", False
    torch.manual_seed(0)
    model_cfg = {k: v for k, v in json.loads(CLIP_RECIPE.read_text()).items() if not k.startswith("_")}
    pipe = TextToVideoPipeline(transformer=DiffusionMamba(**DiffusionMamba.moving_shapes_config()).eval(),
                               scheduler=make_flow_scheduler("dpmsolver++"),
                               text_encoder=CLIPTextEncoder(model_cfg=model_cfg))
    return pipe, (f"{folder} not found: random weights, DiffusionMamba.moving_shapes_config() + CLIP text tower of "
                  f"{CLIP_RECIPE.relative_to(ROOT)} (the time does not depend on the weights)"), True


def time_sampling(pipe, repeats: int, frames: int = 16, steps: int = 20, guidance: float = 4.0) -> list[float]:
    """Seconds per call of ``pipe(PROMPT)`` for one ``frames``-frame 32×32 clip, after one warm-up call."""
    pipe.set_progress_bar_config(disable=True)

    def sample(seed: int) -> None:
        pipe(PROMPT, num_frames=frames, num_inference_steps=steps, guidance_scale=guidance, height=32, width=32,
             generator=torch.Generator().manual_seed(seed))

    sample(0)
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        sample(i + 1)
        times.append(time.perf_counter() - t0)
    return times


# Part 2: forward time and memory vs tokens (one subprocess per point)


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


@torch.no_grad()
def child(mixer: str, frames: int, repeats: int, threads: int | None) -> dict:
    """One measurement point, run in its own process: times and peak memory of a batch-1 forward."""
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = DiffusionMamba(**{**DiffusionMamba.moving_shapes_config(), "mixer": mixer}).eval()
    gen = torch.Generator().manual_seed(frames)
    x = torch.randn(1, 3, frames, SCALING_SIDE, SCALING_SIDE, generator=gen)
    tokens = torch.randn(1, 8, model.config.text_dim, generator=gen)
    context = model.cross_attention_states(tokens, torch.ones(1, 8, dtype=torch.bool))
    pooled = torch.randn(1, model.pooled_dim, generator=gen)
    kwargs = dict(pooled_text=pooled, context_states=context, frame_mask=torch.zeros(1, frames, dtype=torch.bool))
    base = _rss_mb()
    peak = [base]
    done = threading.Event()

    def sample() -> None:  # ru_maxrss cannot be reset after the imports' own peak: sample RSS instead
        while not done.wait(0.005):
            peak[0] = max(peak[0], _rss_mb())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    times = []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        model(x, torch.tensor([0.5]), **kwargs)
        if i:  # the first call is the warm-up
            times.append(time.perf_counter() - t0)
    done.set()
    sampler.join()
    return {"times_s": times, "peak_extra_mb": round(max(peak[0], _rss_mb()) - base, 1)}


def measure(mixer: str, frames: int, repeats: int, threads: int | None) -> dict:
    cmd = [sys.executable, __file__, "--_child", mixer, str(frames), str(repeats)]
    if threads:
        cmd += ["--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["killed"])[-1], "returncode": out.returncode}
    return json.loads(out.stdout.strip().splitlines()[-1])


# Report


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=DEFAULT_MODEL, help="TextToVideoPipeline folder (default: %(default)s)")
    p.add_argument("--sample-repeats", type=int, default=None, help="timed clips (default 3, quick 1)")
    p.add_argument("--frames", type=int, nargs="*", default=None,
                   help="frames of 64×64 per scaling point (default 16 32 64 128 256 = 4k…64k tokens; quick: to 64)")
    p.add_argument("--repeats", type=int, default=None, help="forwards per point (default 3, quick 1)")
    p.add_argument("--max-seconds", type=float, default=90.0, help="skip softmax points predicted slower than this")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--skip-sampling", action="store_true")
    p.add_argument("--skip-scaling", action="store_true")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", help="write the results here (atomically)")
    p.add_argument("--_child", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._child:
        mixer, frames, repeats = args._child
        print(json.dumps(child(mixer, int(frames), int(repeats), args.threads)))
        return {}
    sample_repeats = args.sample_repeats or (1 if args.quick else 3)
    repeats = args.repeats or (1 if args.quick else 3)
    frame_counts = args.frames or ([16, 32, 64] if args.quick else [16, 32, 64, 128, 256])
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    result: dict = {"torch": torch.__version__, "machine": platform.machine(), "processor": platform.processor(),
                    "threads": threads, "quick": args.quick}
    print(f"torch {torch.__version__}, {threads} thread(s){', quick mode' if args.quick else ''}")

    if not args.skip_sampling:
        pipe, source, random_weights = load_or_build(args.model)
        print(f"\n== Sampling: one 16-frame 32×32 clip, 20 steps, guidance 4.0 (CFG-batched) ==\nmodel: {source}")
        times = time_sampling(pipe, sample_repeats)
        median = statistics.median(times)
        passed = median <= SAMPLE_TARGET_S
        print(f"median {median:.2f} s per clip over {len(times)} runs (min {min(times):.2f}, max {max(times):.2f}); "
              f"target ≤ {SAMPLE_TARGET_S:g} s: {'PASS' if passed else 'FAIL'}")
        result["sampling"] = {
            "model": str(args.model), "model_source": source, "random_weights": random_weights,
            "frames": 16, "size": 32, "steps": 20, "guidance": 4.0, "cfg_batched": True, "prompt": PROMPT,
            "times_s": [round(s, 3) for s in times], "median_s": round(median, 3), "target_s": SAMPLE_TARGET_S,
            "pass": passed,
        }
        del pipe

    if not args.skip_scaling:
        cfg = DiffusionMamba.moving_shapes_config()
        per_frame = (SCALING_SIDE // cfg["patch_size"]) ** 2
        print(f"\n== Forward vs tokens: batch 1, no grad, moving_shapes_config (width {cfg['width']}, depth "
              f"{cfg['depth']}), frames of {SCALING_SIDE}×{SCALING_SIDE} = {per_frame} tokens; SSM vs softmax ==")
        print(f"{'frames':>6s} {'tokens':>7s} {'ssm s':>9s} {'ssm MB':>8s} {'softmax s':>10s} {'softmax MB':>11s} "
              f"{'ratio':>7s}")
        rows, last_softmax = [], None
        for frames in frame_counts:
            tokens = frames * per_frame
            ssm = measure("ssm", frames, repeats, args.threads)
            row = {"frames": frames, "tokens": tokens}
            if "error" in ssm:
                row["ssm_error"] = ssm["error"]
            else:
                row.update(ssm_s=round(statistics.median(ssm["times_s"]), 4), ssm_peak_mb=ssm["peak_extra_mb"])
            if last_softmax is not None and 4 * last_softmax > args.max_seconds:
                row["softmax_skipped"] = f"predicted ≈ {4 * last_softmax:.0f} s > --max-seconds {args.max_seconds:g}"
                last_softmax = 4 * last_softmax
            else:
                soft = measure("softmax", frames, repeats, args.threads)
                if "error" in soft:
                    row["softmax_error"] = soft["error"]
                else:
                    last_softmax = statistics.median(soft["times_s"])
                    row.update(softmax_s=round(last_softmax, 4), softmax_peak_mb=soft["peak_extra_mb"])
                    if "ssm_s" in row:
                        row["ratio_softmax_ssm"] = round(last_softmax / row["ssm_s"], 3)
            rows.append(row)
            fmt = lambda v, spec: format(v, spec) if isinstance(v, (int, float)) else "—"  # noqa: E731
            print(f"{frames:6d} {tokens:7d} {fmt(row.get('ssm_s'), '9.3f')} {fmt(row.get('ssm_peak_mb'), '8.0f')} "
                  f"{fmt(row.get('softmax_s'), '10.3f')} {fmt(row.get('softmax_peak_mb'), '11.0f')} "
                  f"{fmt(row.get('ratio_softmax_ssm'), '6.2f')}x")
        slopes = {name: loglog_slope([(r["tokens"], r[f"{name}_s"]) for r in rows if f"{name}_s" in r], 0, 1 << 40)
                  for name in ("ssm", "softmax")}
        scaling = {"config": cfg, "side": SCALING_SIDE, "batch": 1, "rows": rows, "ssm_slope": slopes["ssm"],
                   "softmax_slope": slopes["softmax"], "slope_target": SLOPE_TARGET}
        if slopes["ssm"] is not None:
            scaling["pass"] = slopes["ssm"] <= SLOPE_TARGET
            soft = f"{slopes['softmax']:.3f}" if slopes["softmax"] is not None else "—"
            print(f"log-log slope of time vs tokens: ssm {slopes['ssm']:.3f}, softmax {soft} (over the points it "
                  f"ran); target ssm ≤ {SLOPE_TARGET}: {'PASS' if scaling['pass'] else 'FAIL'}")
        result["scaling"] = scaling

    if args.json:
        write_text_atomic(args.json, json.dumps(result, indent=2))
        print(f"\nwrote {args.json}")
    return result


if __name__ == "__main__":
    main()
