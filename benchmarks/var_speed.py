"""VAR speed and memory on this machine: one 64×64 image, inference-cache memory vs scales, FastVAR speedups.

    python benchmarks/var_speed.py [--model assets/shapes-var] [--repeats 10] [--threads 2] \\
        [--json benchmarks/results/var_speed.json] [--plot benchmarks/results/var_cache_memory.png]

1. **One 64×64 image**: wall time of a full ``VARPipeline`` call (text encoding, one transformer pass per scale
   with CFG, decoding) for one prompt, median of ``--repeats`` after a warm-up, for the shipped model
   (``--model``) and for freshly initialised shapes-config transformers with softmax and linear attention (speed
   does not depend on the weights).
2. **Cache memory vs scales**: bytes held by the inference caches after each scale of a deep schedule (256×256
   images: latent 32, scales 1, 2, 3, 4, 6, 9, 13, 18, 24, 32): the softmax KV cache grows with the tokens seen,
   the linear-attention state stays the same size.
3. **FastVAR** at 128×128 (latent 16, scales 1, 2, 3, 4, 5, 6, 8, 10, 13, 16) and 256×256 (the schedule above),
   HART's schedule (cache at the third-last scale, prune 50 % at the second-last and 75 % at the last): per-scale
   wall time of the sampler with and without pruning (medians), the speedup on the pruned scales and overall.
   Fresh weights; the score change of pruning is measured on the trained model by ``benchmarks/var_eval.py``.
4. ``--fastvar-model FOLDER``: the same per-scale FastVAR timing on a trained VARPipeline at its own resolution
   and schedule (e.g. runs/shapes-var128-fp16), pruning by ``--fastvar-spec`` (default HART's: 50 % of the
   second-last scale, 75 % of the last); ``--only-trained`` skips sections 1–3.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from genmodels.io import ASSETS_DIR, write_text_atomic  # noqa: E402
from genmodels.var.var import FastVARConfig, VARTransformer, sample_var  # noqa: E402
from genmodels.var.vqvae import MultiScaleVQVAE  # noqa: E402

SCHEDULES = {128: (1, 2, 3, 4, 5, 6, 8, 10, 13, 16), 256: (1, 2, 3, 4, 6, 9, 13, 18, 24, 32)}
HART = FastVARConfig(prune={-2: 0.5, -1: 0.75}, cache_scale=-3)


def fresh_pipeline(attention: str, clip_dir: Path):
    from genmodels.pipelines.var import VARPipeline
    from training.train_dit import load_text_encoder

    torch.manual_seed(0)
    vae = MultiScaleVQVAE(**MultiScaleVQVAE.shapes_config()).eval()
    model = VARTransformer(**{**VARTransformer.shapes_config(), "width": 192, "attention": attention}).eval()
    pipe = VARPipeline(transformer=model, vqvae=vae, text_encoder=load_text_encoder(str(clip_dir)))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def time_pipeline(pipe, repeats: int) -> dict:
    prompt = "a red circle to the left of a blue square"
    pipe(prompt, guidance_scale=3.0, top_p=0.95, generator=torch.Generator().manual_seed(0))  # warm-up
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        pipe(prompt, guidance_scale=3.0, top_p=0.95, generator=torch.Generator().manual_seed(i))
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "repeats": repeats,
            "passes": pipe.transformer.num_scales}


def text_inputs(model: VARTransformer, batch: int = 1):
    g = torch.Generator().manual_seed(0)
    tokens = torch.randn(batch, 8, model.config.text_dim, generator=g)
    return tokens, torch.ones(batch, 8, dtype=torch.bool), torch.randn(batch, model.pooled_dim, generator=g)


def scale_model(side: int, attention: str = "softmax") -> tuple[VARTransformer, MultiScaleVQVAE]:
    nums = SCHEDULES[side]
    torch.manual_seed(0)
    model = VARTransformer(**{**VARTransformer.shapes_config(), "width": 192, "attention": attention,
                              "patch_nums": nums}).eval()
    vae = MultiScaleVQVAE(**{**MultiScaleVQVAE.shapes_config(), "patch_nums": nums, "sample_size": side}).eval()
    return model, vae


def cache_bytes(cache: list[dict]) -> int:
    return sum(t.numel() * t.element_size() for block in cache for t in block.values())


@torch.no_grad()
def cache_memory(side: int = 256) -> dict:
    """Inference-cache bytes after each scale, softmax vs linear (batch 2 = one image with CFG)."""
    out = {}
    for attention in ("softmax", "linear"):
        model, vae = scale_model(side, attention)
        tokens, mask, pooled = text_inputs(model, 2)
        text = model.cross_attention_states(tokens, mask)
        cond = model.condition(pooled)
        cache = model.new_cache()
        x, sizes = model.start_tokens(cond), []
        f_hat = torch.zeros(2, vae.quantize.dim, vae.quantize.side, vae.quantize.side)
        for k in range(model.num_scales):
            logits = model.step(x, k, cond, text, cache)
            sizes.append(cache_bytes(cache))
            idx = logits.argmax(-1)
            f_hat = f_hat + vae.quantize.scale_embedding(idx, k)
            if k + 1 < model.num_scales:
                from genmodels.var.quant import downsample

                x = model.embed_scale_inputs(downsample(f_hat, model.patch_nums[k + 1]).flatten(2).transpose(1, 2),
                                             k + 1)
        out[attention] = sizes
    out["patch_nums"] = list(SCHEDULES[side])
    return out


def per_scale_times(model, vae, fastvar, repeats: int) -> list[float]:
    tokens, mask, pooled = text_inputs(model)
    runs = []
    for r in range(repeats + 1):
        stamps = [time.perf_counter()]

        def stamp(i: int, n: int, stamps: list = stamps) -> None:
            stamps.append(time.perf_counter())

        sample_var(model, vae.quantize, encoder_hidden_states=tokens, encoder_attention_mask=mask,
                   pooled_text=pooled, cfg=3.0, top_p=0.95, fastvar=fastvar,
                   generator=torch.Generator().manual_seed(r), progress=stamp)
        if r:  # the first run is a warm-up
            runs.append([b - a for a, b in zip(stamps, stamps[1:])])
    return [statistics.median(col) for col in zip(*runs)]


def fastvar_speed(side: int, repeats: int) -> dict:
    model, vae = scale_model(side)
    return {"side": side, **pruning_speed(model, vae, HART, repeats)}


def pruning_speed(model, vae, fastvar: FastVARConfig, repeats: int) -> dict:
    """Per-scale medians without and with ``fastvar`` and the speed-ups on the pruned scales and overall."""
    resolved = fastvar.resolved(model.num_scales, len(model.blocks))
    base = per_scale_times(model, vae, None, repeats)
    pruned = per_scale_times(model, vae, fastvar, repeats)
    scales = sorted(resolved.prune)
    return {"patch_nums": list(model.patch_nums), "pruned_scales": scales,
            "ratios": [resolved.prune[k] for k in scales], "cache_scale": resolved.cache_scale,
            "base_per_scale_s": base, "fastvar_per_scale_s": pruned,
            "speedup_pruned_scales": sum(base[k] for k in scales) / sum(pruned[k] for k in scales),
            "speedup_overall": sum(base) / sum(pruned), "base_total_s": sum(base), "fastvar_total_s": sum(pruned)}


def trained_fastvar_speed(folder: str, spec: str, repeats: int) -> dict:
    """Section 4: per-scale times with and without pruning on a trained pipeline (one image, CFG)."""
    from benchmarks.var_eval import load_var_pipeline

    pipe = load_var_pipeline(folder)
    model, vae = pipe.transformer.float().eval(), pipe.vqvae.float().eval()
    fastvar = FastVARConfig.parse(spec)
    return {"model": folder, "side": vae.config.sample_size, "spec": spec,
            **pruning_speed(model, vae, fastvar, repeats)}


def print_fastvar(label: str, r: dict) -> None:
    pruned = [r["patch_nums"][k] for k in r["pruned_scales"]]
    print(f"FastVAR {label} (prune {r['ratios']} at scales {pruned}): "
          f"pruned scales {r['speedup_pruned_scales']:.2f}× faster, overall {r['speedup_overall']:.2f}× "
          f"({r['base_total_s'] * 1000:.0f} → {r['fastvar_total_s'] * 1000:.0f} ms)")


def plot_memory(mem: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    labels = [f"{p}²" for p in mem["patch_nums"]]
    for attention, style in (("softmax", "o-"), ("linear", "s-")):
        what = "KV cache" if attention == "softmax" else "state"
        ax.plot(labels, [b / 2**20 for b in mem[attention]], style, label=f"{attention} ({what})")
    ax.set_xlabel("after scale")
    ax.set_ylabel("inference cache (MiB)")
    ax.set_title("VAR inference cache, 256×256 schedule, width 192, depth 6")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(ASSETS_DIR / "shapes-var"))
    p.add_argument("--clip", default=str(ASSETS_DIR / "clip-shapes"))
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--fastvar-repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json", default=None)
    p.add_argument("--plot", default=None)
    p.add_argument("--fastvar-model", default=None, help="a trained VARPipeline folder for section 4")
    p.add_argument("--fastvar-spec", default="-2:0.5,-1:0.75", help="pruning for section 4 (scale:ratio pairs)")
    p.add_argument("--only-trained", action="store_true", help="run section 4 only")
    args = p.parse_args(argv)
    if args.only_trained and not args.fastvar_model:
        p.error("--only-trained needs --fastvar-model")
    if args.threads:
        torch.set_num_threads(args.threads)
    report = {"threads": torch.get_num_threads()}
    if args.fastvar_model:
        r = report["fastvar_trained"] = trained_fastvar_speed(args.fastvar_model, args.fastvar_spec,
                                                              args.fastvar_repeats)
        print_fastvar(f"{r['side']}×{r['side']}, {args.fastvar_model}", r)
    if args.only_trained:
        if args.json:
            write_text_atomic(args.json, json.dumps(report, indent=2) + "\n")
        return report
    report["image_64"] = {}
    if (Path(args.model) / "model_index.json").is_file():
        from benchmarks.var_eval import load_var_pipeline

        report["image_64"]["shipped"] = time_pipeline(load_var_pipeline(args.model), args.repeats)
    for attention in ("softmax", "linear"):
        report["image_64"][f"fresh-{attention}"] = time_pipeline(fresh_pipeline(attention, Path(args.clip)),
                                                                 args.repeats)
    for name, r in report["image_64"].items():
        print(f"one 64×64 image ({name}): median {r['median_s'] * 1000:.0f} ms over {r['repeats']} "
              f"({r['passes']} transformer passes, CFG)")
    report["cache_memory_256"] = mem = cache_memory(256)
    for attention in ("softmax", "linear"):
        print(f"cache after each scale ({attention}): " + ", ".join(f"{b / 1024:.0f}" for b in mem[attention])
              + " KiB")
    if args.plot:
        plot_memory(mem, args.plot)
    report["fastvar"] = []
    for side in (128, 256):
        r = fastvar_speed(side, args.fastvar_repeats)
        report["fastvar"].append(r)
        print_fastvar(f"{side}×{side}", r)
    if args.json:
        write_text_atomic(args.json, json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
