"""SANA-style linear DiT: sampling time of one image, and forward time vs resolution against its softmax twin.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/sana_speed.py --json benchmarks/results/sana_speed.json
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/sana_speed.py --quick

Part 1, sampling: one 64×64 image at the pipeline's defaults (20 steps, guidance 4.0, the null and the prompt
branch in one batched call per step) through ``TextToImagePipeline`` loaded from ``--model`` (default
``assets/shapes-sana``), prompt encoding and decoding included. If that folder does not exist, a pipeline with
random weights of the same architecture (``SanaDiT.shapes_config()`` and the tiny CLIP of
``training/recipes/clip_shapes.json``) stands in, and the output says so: the time does not depend on the
weights. One warm-up call, then the median of ``--sample-repeats`` calls; target ≤ 3 s per sample.

Part 2, scaling: a no-grad forward of the transformer (``shapes_config()``, patch 8) at batch 1 on random
``side × side`` input with a fixed, precomputed text context, for the linear model and its softmax twin (the
same config and the same weights with ``self_attn="softmax"``; only the token mixer differs). The two are
timed alternately after one warm-up each, median of ``--repeats`` runs (fewer if a side's runs pass
``--budget`` seconds). Reported: times per side, the ratio softmax / linear, and the log-log slope of time vs
pixel count (least squares over the sides); target: the linear model's slope ≤ 1.15.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from genmodels.io import write_text_atomic  # noqa: E402
from genmodels.sana import SanaDiT  # noqa: E402
from kernels.bench import loglog_slope  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = "assets/shapes-sana"  # relative paths: to the working directory, else to the repo root
CLIP_RECIPE = ROOT / "training" / "recipes" / "clip_shapes.json"
PROMPT = "a red circle and a blue square"
SAMPLE_TARGET_S = 3.0
SLOPE_TARGET = 1.15


# Part 1: sampling


def random_pipeline():
    """``TextToImagePipeline`` with random weights: ``SanaDiT.shapes_config()``, the tiny shapes CLIP's text tower
    (``training/recipes/clip_shapes.json``, keys starting with ``_`` dropped) and the Flow-DPM-Solver scheduler
    the training script ships."""
    from genmodels.diffusion.flow import make_flow_scheduler
    from genmodels.pipelines.text_to_image import TextToImagePipeline
    from genmodels.text.clip import CLIPTextEncoder

    torch.manual_seed(0)
    model_cfg = {k: v for k, v in json.loads(CLIP_RECIPE.read_text()).items() if not k.startswith("_")}
    return TextToImagePipeline(transformer=SanaDiT(**SanaDiT.shapes_config()).eval(),
                               scheduler=make_flow_scheduler("dpmsolver++"),
                               text_encoder=CLIPTextEncoder(model_cfg=model_cfg))


def load_or_build(model: str | Path) -> tuple[object, str, bool]:
    """(pipeline, a note on where it came from, random weights?): the folder ``model`` if it exists, else a
    random-weight stand-in."""
    folder = Path(model)
    if not folder.exists() and not folder.is_absolute() and (ROOT / folder).exists():
        folder = ROOT / folder
    if folder.exists():
        from genmodels.loading import load_pipeline
        from genmodels.pipelines.text_to_image import TextToImagePipeline

        return load_pipeline(TextToImagePipeline, folder), f"loaded from {folder}", False
    return random_pipeline(), (f"{folder} not found: random weights, SanaDiT.shapes_config() + CLIP text tower "
                               f"of {CLIP_RECIPE.relative_to(ROOT)} (the time does not depend on the weights)"), True


def time_sampling(pipe, repeats: int, steps: int = 20, guidance: float = 4.0, size: int = 64) -> list[float]:
    """Seconds per call of ``pipe(PROMPT)`` for one ``size``² image, after one untimed warm-up call."""
    pipe.set_progress_bar_config(disable=True)

    def sample(seed: int) -> None:
        pipe(PROMPT, num_inference_steps=steps, guidance_scale=guidance, output_type="np", height=size,
             width=size, generator=torch.Generator().manual_seed(seed))

    sample(0)
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        sample(i + 1)
        times.append(time.perf_counter() - t0)
    return times


# Part 2: forward time vs resolution


def twin_models() -> dict[str, SanaDiT]:
    """The shapes model (random weights) and its softmax twin carrying the same weights."""
    torch.manual_seed(0)
    linear = SanaDiT(**SanaDiT.shapes_config()).eval()
    softmax = SanaDiT(**{**SanaDiT.shapes_config(), "self_attn": "softmax"}).eval()
    softmax.load_state_dict(linear.state_dict(), strict=True)
    return {"linear": linear, "softmax": softmax}


@torch.no_grad()
def time_forwards(models: dict[str, SanaDiT], side: int, repeats: int, budget: float) -> dict[str, list[float]]:
    """Seconds per batch-1 forward at ``side``² for every model, timed alternately after one warm-up each;
    stops early once the runs at this side have taken ``budget`` seconds (at least one run each)."""
    gen = torch.Generator().manual_seed(side)
    x = torch.randn(1, 3, side, side, generator=gen)
    t = torch.tensor([0.5])
    first = next(iter(models.values()))
    text_dim, pooled_dim = first.config.text_dim, first.pooled_dim
    tokens = torch.randn(1, 8, text_dim, generator=gen)
    mask = torch.ones(1, 8, dtype=torch.bool)
    pooled = torch.randn(1, pooled_dim, generator=gen) if pooled_dim else None
    contexts = {name: m.cross_attention_states(tokens, mask) for name, m in models.items()}

    def forward(name: str) -> float:
        t0 = time.perf_counter()
        models[name](x, t, pooled_text=pooled, context_states=contexts[name])
        return time.perf_counter() - t0

    for name in models:
        forward(name)
    times: dict[str, list[float]] = {name: [] for name in models}
    start = time.perf_counter()
    for _ in range(repeats):
        for name in models:
            times[name].append(forward(name))
        if time.perf_counter() - start > budget:
            break
    return times


# Report


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=DEFAULT_MODEL, help="TextToImagePipeline folder (default: %(default)s)")
    p.add_argument("--sample-repeats", type=int, default=None, help="timed samples (default 5, quick 2)")
    p.add_argument("--sides", type=int, nargs="*", default=None, help="default 64 128 256 512 (quick: to 256)")
    p.add_argument("--repeats", type=int, default=None, help="forwards per side and model (default 5, quick 2)")
    p.add_argument("--budget", type=float, default=30.0, help="seconds per side before stopping early")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--skip-sampling", action="store_true")
    p.add_argument("--skip-scaling", action="store_true")
    p.add_argument("--quick", action="store_true", help="fewer repeats, sides up to 256")
    p.add_argument("--json", help="write the results here (atomically)")
    args = p.parse_args(argv)
    sample_repeats = args.sample_repeats or (2 if args.quick else 5)
    repeats = args.repeats or (2 if args.quick else 5)
    sides = args.sides or ([64, 128, 256] if args.quick else [64, 128, 256, 512])
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    result: dict = {"torch": torch.__version__, "machine": platform.machine(), "processor": platform.processor(),
                    "threads": threads, "quick": args.quick}
    print(f"torch {torch.__version__}, {threads} thread(s){', quick mode' if args.quick else ''}")

    if not args.skip_sampling:
        pipe, source, random_weights = load_or_build(args.model)
        print(f"\n== Sampling: one 64×64 image, 20 steps, guidance 4.0 (CFG-batched) ==\nmodel: {source}")
        times = time_sampling(pipe, sample_repeats)
        median = statistics.median(times)
        passed = median <= SAMPLE_TARGET_S
        print(f"median {median:.3f} s per sample over {len(times)} runs (min {min(times):.3f}, "
              f"max {max(times):.3f}); target ≤ {SAMPLE_TARGET_S:g} s: {'PASS' if passed else 'FAIL'}")
        result["sampling"] = {
            "model": str(args.model), "model_source": source, "random_weights": random_weights,
            "transformer_dtype": str(pipe.transformer.dtype).removeprefix("torch."), "size": 64, "steps": 20,
            "guidance": 4.0, "cfg_batched": True, "prompt": PROMPT, "repeats": len(times),
            "times_s": [round(s, 4) for s in times], "median_s": round(median, 4), "target_s": SAMPLE_TARGET_S,
            "pass": passed,
        }
        del pipe

    if not args.skip_scaling:
        models = twin_models()
        cfg = SanaDiT.shapes_config()
        print(f"\n== Forward vs resolution: batch 1, no grad, shapes_config (patch {cfg['patch_size']}, width "
              f"{cfg['width']}, depth {cfg['depth']}), linear vs softmax self-attention ==")
        print(f"{'side':>6s} {'tokens':>7s} {'linear s':>10s} {'softmax s':>10s} {'softmax/linear':>15s} {'runs':>5s}")
        rows = []
        for side in sides:
            times = time_forwards(models, side, repeats, args.budget)
            lin, soft = statistics.median(times["linear"]), statistics.median(times["softmax"])
            tokens = (side // cfg["patch_size"]) ** 2
            rows.append({"side": side, "tokens": tokens, "linear_s": round(lin, 5), "softmax_s": round(soft, 5),
                         "ratio_softmax_linear": round(soft / lin, 3), "runs": len(times["linear"])})
            print(f"{side:6d} {tokens:7d} {lin:10.4f} {soft:10.4f} {soft / lin:14.2f}x {len(times['linear']):5d}")
        slopes = {name: loglog_slope([(r["side"] ** 2, r[f"{name}_s"]) for r in rows], 0, 1 << 40)
                  for name in ("linear", "softmax")}
        scaling = {"config": cfg, "batch": 1, "rows": rows, "linear_slope": slopes["linear"],
                   "softmax_slope": slopes["softmax"], "slope_target": SLOPE_TARGET}
        if slopes["linear"] is not None:  # needs two or more sides
            scaling["pass"] = slopes["linear"] <= SLOPE_TARGET
            print(f"log-log slope of time vs pixels over {sides[0]}²…{sides[-1]}²: linear {slopes['linear']:.3f}, "
                  f"softmax {slopes['softmax']:.3f}; target linear ≤ {SLOPE_TARGET}: "
                  f"{'PASS' if scaling['pass'] else 'FAIL'}")
        result["scaling"] = scaling

    if args.json:
        write_text_atomic(args.json, json.dumps(result, indent=2))
        print(f"\nwrote {args.json}")
    return result


if __name__ == "__main__":
    main()
