"""VAR on the shapes world: oracle accuracy, FastVAR's score change, zero-shot in- and outpainting.

    python benchmarks/var_eval.py --model assets/shapes-var [--model runs/shapes-var-linear/pipeline ...] \\
        [--cfg 3.0] [--top-k 0] [--top-p 0.95] [--per-category 40] [--fastvar "-1:0.5"] \\
        [--inpaint 60] [--outpaint 60] [--json benchmarks/results/var_eval.json] [--grid var_grid.png]

Text to image: ONE sample per prompt of the fixed evaluation set (240 prompts, 40 per category), each from
the prompt's own seed, scored by ``genmodels.eval.shapes_oracle``; models side by side (e.g. softmax vs linear
attention trained with the same budget). ``--fastvar SPEC`` (repeatable) scores every model again with FastVAR
pruning (same seeds) and reports the change, paired (samples lost and gained, its standard error), and the
sampling time of both; ``--seeds-per-prompt K`` draws K samples per prompt to shrink that error.

``--inpaint K``: the text-guided inpainting cases of ``benchmarks/shapes_t2i_eval.py`` (one object in the right
half, the left half generated, a prompt naming another colour and shape): reported are the fraction whose left
half (on black) satisfies the prompt, the number of outputs whose known pixels differ from the input (must be 0)
and the number whose known tokens at the finest scale differ from the image's own (must be 0).

``--ceiling N``: the oracle on N validation scenes after a tokenizer round trip (the most a VAR on this tokenizer
can score) next to the scenes themselves.

``--outpaint K``: validation-split scenes whose centre half (32×32 of 64×64) is kept and the outside generated
with the scene's own caption; the full image is scored against the caption, next to the centre alone on black
(how much of the caption the kept content satisfies by itself) and the untouched scene (the ceiling).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from benchmarks.shapes_t2i_eval import (  # noqa: E402
    left_half_on_black,
    make_inpaint_cases,
    model_labels,
    print_t2i_table,
    public,
    select_items,
    t2i_grid,
)
from genmodels.data.shapes import make_sample  # noqa: E402
from genmodels.eval.shapes_oracle import evaluate, load_eval_set, score, validation_items  # noqa: E402
from genmodels.io import write_text_atomic  # noqa: E402
from genmodels.loading import load_pipeline  # noqa: E402
from genmodels.pipelines.var import VARPipeline  # noqa: E402
from genmodels.var import defaults as var_defaults  # noqa: E402
from genmodels.var.var import FastVARConfig  # noqa: E402


def load_var_pipeline(folder: str | Path, device: str = "cpu") -> VARPipeline:
    pipe = load_pipeline(VARPipeline, folder)
    pipe.to(device)
    pipe.transformer.eval()
    pipe.vqvae.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def model_summary(pipe: VARPipeline) -> dict:
    c = pipe.transformer.config
    return {"attention": c.attention, "cross_attn": c.cross_attn, "width": int(c.width), "depth": int(c.depth),
            "patch_nums": list(c.patch_nums), "parameters": sum(p.numel() for p in pipe.transformer.parameters())}


def generate(pipe: VARPipeline, prompts: Sequence[str], seeds: Sequence[int], *, cfg: float, top_k: int,
             top_p: float, batch_size: int = 48, fastvar: FastVARConfig | None = None, image=None, mask=None,
             desc: str = "sampling") -> np.ndarray:
    """uint8 ``[N, H, W, 3]``, one image per (prompt, seed), each with its own generator."""
    images = []
    with tqdm(total=len(prompts), desc=desc, unit="img") as bar:
        for start in range(0, len(prompts), batch_size):
            p = list(prompts[start:start + batch_size])
            gens = [torch.Generator().manual_seed(int(s)) for s in seeds[start:start + batch_size]]
            images.append(pipe(p, guidance_scale=cfg, top_k=top_k, top_p=top_p, generator=gens, output_type="np",
                               fastvar=fastvar, image=image, mask=mask).images)
            bar.update(len(p))
    return np.concatenate(images)


def evaluate_t2i(pipe, items, *, cfg, top_k, top_p, fastvar=None, desc="sampling") -> dict:
    t0 = time.perf_counter()
    images = generate(pipe, [i["prompt"] for i in items], [i["seed"] for i in items], cfg=cfg, top_k=top_k,
                      top_p=top_p, fastvar=fastvar, desc=desc)
    seconds = time.perf_counter() - t0
    return {**evaluate(images, [i["spec"] for i in items]), "seconds": seconds, "images": images}


SEED_STRIDE = 100003  # --seeds-per-prompt: sample j of a prompt uses its seed + j · SEED_STRIDE


def paired_change(base: dict, other: dict) -> dict:
    """The same prompts and seeds scored twice: prompts that pass only in ``base`` (lost) or only in ``other``
    (gained), the standard error of the paired accuracy change, and how many images came out identical."""
    a, b = np.asarray(base["correct"], bool), np.asarray(other["correct"], bool)
    lost, gained, n = int((a & ~b).sum()), int((~a & b).sum()), len(a)
    se = float(np.sqrt(max(lost + gained - (gained - lost) ** 2 / n, 0.0)) / n)
    same = sum(bool(np.array_equal(x, y)) for x, y in zip(base["images"], other["images"]))
    return {"lost": lost, "gained": gained, "paired_se": se, "identical_images": same}


def evaluate_inpainting(pipe: VARPipeline, cases: Sequence[dict], *, cfg: float, top_k: int, top_p: float) -> dict:
    """Left half generated for the prompt; scored on the left half (see the module docstring)."""
    satisfied, changed_pixels, changed_tokens = [], 0, 0
    for case in tqdm(cases, desc="inpainting", unit="case"):
        out = pipe(case["prompt"], guidance_scale=cfg, top_k=top_k, top_p=top_p, image=case["image"],
                   mask=case["mask"], output_type="np", generator=torch.Generator().manual_seed(case["seed"])).images[0]
        changed_pixels += int(not np.array_equal(out[~case["mask"]], case["image"][~case["mask"]]))
        satisfied.append(score(left_half_on_black(out), case["spec"]))
        # token level: re-run the sampler with the known tokens and compare them at the finest scale
        ids, keep = pipe.known_tokens(case["image"], case["mask"], 1, pipe.transformer.device)
        tokens, mask, pooled = pipe.encode_prompt([case["prompt"]], pipe.transformer.device, pipe.transformer.dtype)
        from genmodels.var.var import sample_var

        s = sample_var(pipe.transformer, pipe.vqvae.quantize, encoder_hidden_states=tokens,
                       encoder_attention_mask=mask, pooled_text=pooled, cfg=cfg, top_k=top_k, top_p=top_p,
                       known_ids=ids, known_mask=keep, generator=torch.Generator().manual_seed(case["seed"]))
        changed_tokens += int(not torch.equal(s.ids[-1][keep], ids[-1][keep]))
    return {"cases": len(cases), "satisfied": float(np.mean(satisfied)), "known_pixels_changed": changed_pixels,
            "known_tokens_changed": changed_tokens}


def make_outpaint_cases(k: int, side: int = 64, seed: int = 0) -> list[dict]:
    """Validation scenes (index i of the val split, seed ``seed``) with the centre half kept."""
    cases = []
    lo, hi = side // 4, side - side // 4
    mask = np.ones((side, side), dtype=bool)
    mask[lo:hi, lo:hi] = False  # True = generate: everything outside the centre
    for i in range(k):
        sample = make_sample(i, seed, "val", side)
        cases.append({"image": sample.image, "mask": mask, "prompt": sample.caption, "spec": sample.spec,
                      "seed": 1000 + i})
    return cases


def evaluate_outpainting(pipe: VARPipeline, cases: Sequence[dict], *, cfg: float, top_k: int, top_p: float) -> dict:
    full, centre_only, truth, changed = [], [], [], 0
    for case in tqdm(cases, desc="outpainting", unit="case"):
        out = pipe(case["prompt"], guidance_scale=cfg, top_k=top_k, top_p=top_p, image=case["image"],
                   mask=case["mask"], output_type="np", generator=torch.Generator().manual_seed(case["seed"])).images[0]
        changed += int(not np.array_equal(out[~case["mask"]], case["image"][~case["mask"]]))
        centre = np.where(case["mask"][..., None], 0, case["image"]).astype(np.uint8)
        full.append(score(out, case["spec"]))
        centre_only.append(score(centre, case["spec"]))
        truth.append(score(case["image"], case["spec"]))
    return {"cases": len(cases), "outpainted": float(np.mean(full)), "centre_only": float(np.mean(centre_only)),
            "ground_truth": float(np.mean(truth)), "known_pixels_changed": changed}


@torch.no_grad()
def tokenizer_ceiling(pipe: VARPipeline, n: int, seed: int = 0) -> dict:
    """The oracle on ``n`` validation scenes after a round trip through the tokenizer (encode to the token
    pyramid, decode): the best a VAR on this tokenizer can score, next to the scenes themselves."""
    samples = [make_sample(i, seed, "val", pipe.default_size) for i in range(n)]
    pixels = torch.stack([torch.tensor(s.image).permute(2, 0, 1).float() / 127.5 - 1 for s in samples])
    recon = pipe.vqvae.ids_to_images(pipe.vqvae.images_to_ids(pixels.to(pipe.vqvae.dtype))).float()
    recon = ((recon + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    specs = [s.spec for s in samples]
    return {"scenes": n, "reconstructed": evaluate(recon, specs)["overall"],
            "original": evaluate(np.stack([s.image for s in samples]), specs)["overall"]}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", required=True, help="VARPipeline folder (repeat to compare)")
    p.add_argument("--cfg", type=float, default=var_defaults.GUIDANCE, help="default: the pipeline's")
    p.add_argument("--top-k", type=int, default=var_defaults.TOP_K)
    p.add_argument("--top-p", type=float, default=var_defaults.TOP_P)
    p.add_argument("--per-category", type=int, default=40)
    p.add_argument("--split", choices=["eval", "val"], default="eval",
                   help="eval: the fixed evaluation set; val: validation-split captions (for choosing sampling "
                        "settings without touching the evaluation set)")
    p.add_argument("--fastvar", action="append", default=None,
                   help='FastVAR spec, e.g. "-1:0.5" (scale:ratio pairs; repeat to compare several against one '
                        'unpruned run)')
    p.add_argument("--seeds-per-prompt", type=int, default=1,
                   help="samples per prompt: the prompt's seed, then seed + 100003·j (more samples shrink the "
                        "sampling noise of FastVAR's paired score change)")
    p.add_argument("--inpaint", type=int, default=0, help="text-guided inpainting cases (0: skip)")
    p.add_argument("--outpaint", type=int, default=0, help="outpainting cases (0: skip)")
    p.add_argument("--ceiling", type=int, default=0, help="tokenizer round trips of N val scenes scored (0: skip)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json", default=None)
    p.add_argument("--grid", default=None)
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    fastvars = [(spec, FastVARConfig.parse(spec)) for spec in args.fastvar or []]
    if args.seeds_per_prompt < 1:
        raise SystemExit("--seeds-per-prompt must be >= 1")
    items = load_eval_set() if args.split == "eval" else validation_items(args.per_category)
    items = select_items(items, args.per_category)
    items = [{**item, "seed": int(item["seed"]) + SEED_STRIDE * j} for j in range(args.seeds_per_prompt)
             for item in items]
    labels = model_labels(args.model)
    report, results = {"settings": {k: v for k, v in vars(args).items() if k not in ("json", "grid")}}, []
    for label, folder in zip(labels, args.model):
        pipe = load_var_pipeline(folder)
        sampling = dict(cfg=args.cfg, top_k=args.top_k, top_p=args.top_p)
        entry = {"folder": folder, **model_summary(pipe)}
        r = evaluate_t2i(pipe, items, cfg=args.cfg, top_k=args.top_k, top_p=args.top_p, desc=label)
        results.append(r)
        entry["t2i"] = public(r)
        entry["t2i"].pop("correct", None)
        if fastvars:
            entry["fastvar"] = []
        for spec, fastvar in fastvars:
            fr = evaluate_t2i(pipe, items, cfg=args.cfg, top_k=args.top_k, top_p=args.top_p, fastvar=fastvar,
                              desc=f"{label} fastvar {spec}")
            f = {"spec": spec, "overall": fr["overall"], "seconds": fr["seconds"],
                 "overall_change": fr["overall"] - r["overall"], "speedup_end_to_end": r["seconds"] / fr["seconds"],
                 "per_category": fr["per_category"], **paired_change(r, fr)}
            entry["fastvar"].append(f)
            print(f"{label}: FastVAR {spec}: overall {r['overall']:.3f} -> {fr['overall']:.3f} "
                  f"({fr['overall'] - r['overall']:+.3f}; {f['lost']} samples lost, {f['gained']} gained, "
                  f"paired s.e. of the accuracy change {f['paired_se']:.3f}; {f['identical_images']} of "
                  f"{len(items)} images unchanged), sampling {r['seconds']:.1f} s -> {fr['seconds']:.1f} s")
        if args.ceiling:
            entry["tokenizer_ceiling"] = tokenizer_ceiling(pipe, args.ceiling)
            print(f"{label}: tokenizer ceiling {entry['tokenizer_ceiling']}")
        if args.inpaint:
            entry["inpaint"] = evaluate_inpainting(pipe, make_inpaint_cases(args.inpaint, pipe.default_size),
                                                   **sampling)
            print(f"{label}: inpainting {entry['inpaint']}")
        if args.outpaint:
            entry["outpaint"] = evaluate_outpainting(pipe, make_outpaint_cases(args.outpaint, pipe.default_size),
                                                     **sampling)
            print(f"{label}: outpainting {entry['outpaint']}")
        report[label] = entry
    print_t2i_table(labels, results)
    if args.grid:
        t2i_grid([(label, items, r) for label, r in zip(labels, results)], args.grid)
    if args.json:
        write_text_atomic(args.json, json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
