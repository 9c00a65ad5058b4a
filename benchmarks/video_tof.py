"""Tree-of-Frames vs best-of-N on the moving-shapes prompts at matched NFE: clip-video selects, the oracle scores.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/video_tof.py --model assets/moving-shapes-dim \\
        --clip assets/clip-shapes [--limit 60] [--steps 20] [--roots 1 2 4 8] [--frames-per-unit 2] \\
        [--json benchmarks/results/video_tof.json] [--plot benchmarks/results/video_tof.png]

Prompts: the fixed evaluation set (``genmodels/eval/moving_shapes_eval_prompts.jsonl``, the first ``--limit``),
8 frames of 32 px. Both searches select with the **clip-video** verifier (``CLIPVideoVerifier``: per-frame CLIP
score of the prompt's objects + frame-to-frame consistency; it cannot see the direction of motion); the chosen
clips are then scored by the moving-shapes oracle (object, motion, identity, all), which neither search sees.

- **Tree-of-Frames**: ``VideoChunkGenerator`` (``--frames-per-unit`` frames per level by continuation, a unit
  costing one whole pipeline call per candidate) with ``video_tree_config(roots, units, --first-candidates)``
  (Video-T1's schedule: ``roots`` roots, the first unit the best of ``--first-candidates`` draws, median pruning
  at depths ``floor(f · U)``, f = 4/16, 9/16, 13/16); one tree per value of ``--roots``, seeds from the prompt's.
- **best-of-N**: a pool of candidates per prompt, candidate j from seed ``prompt seed + j`` (so ToF's first
  draws and best-of-N's candidates share their noise), scored once; best-of-N is the verifier's argmax over the
  first N. N runs over powers of two up to the pool (``--max-n``, default the largest tree's budget) and each
  tree's matched budget.

NFE = denoiser calls summed over candidates (``genmodels.search.sampling``); a full clip costs ``--steps``. A
tree's **nominal cost** (median pruning keeps ceil(live / 2)) in clips is its matched N; its measured NFE is
reported too (ties keep more). Reported per budget: the mean oracle scores of both methods; and the headline:
the NFE at which Tree-of-Frames first reaches best-of-N's best mean "all" score (over the Ns run), as a fraction of
the NFE best-of-N needed for it (target ≤ 0.6), null when the tree never reaches it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from genmodels.io import write_text_atomic  # noqa: E402
from genmodels.search import (  # noqa: E402
    CLIPVideoVerifier,
    TreeConfig,
    VideoChunkGenerator,
    plot_score_vs_nfe,
    run_search,
    sample_candidates,
    text_to_video_generate_fn,
    video_tree_config,
)

ROOT = Path(__file__).resolve().parent.parent
KEYS = ("object", "motion", "identity", "all")
TARGET_FRACTION = 0.6


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="assets/moving-shapes-dim", help="TextToVideoPipeline folder")
    p.add_argument("--clip", default="assets/clip-shapes", help="open_clip folder of the clip-video verifier")
    p.add_argument("--limit", type=int, default=None, help="first N evaluation prompts (default all 60)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=4.0)
    p.add_argument("--roots", type=int, nargs="+", default=[1, 2, 4, 8], help="tree roots, one tree per value")
    p.add_argument("--frames-per-unit", type=int, default=2)
    p.add_argument("--first-candidates", type=int, default=2, help="draws for the first unit of each root")
    p.add_argument("--max-n", type=int, default=None,
                   help="best-of-N pool per prompt (default: the largest tree's nominal cost in clips)")
    p.add_argument("--batch-size", type=int, default=16, help="best-of-N clips per pipeline call")
    p.add_argument("--quick", action="store_true", help="2 prompts, 2 steps, roots 1 2 (a smoke run)")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None, help="write the results here (atomically)")
    p.add_argument("--plot", default=None, help="PNG of mean oracle score vs NFE, both methods (atomically)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.limit, args.steps, args.roots = min(args.limit or 2, 2), 2, [1, 2]
    if min(args.roots) < 1 or args.steps < 1 or args.batch_size < 1 or args.first_candidates < 1:
        p.error("--roots, --steps, --batch-size and --first-candidates must be at least 1")
    return args


def _folder(path: str) -> Path:
    folder = Path(path)
    return ROOT / folder if not folder.exists() and (ROOT / folder).exists() else folder


def nominal_cost(config: TreeConfig) -> int:
    """Pipeline calls (clips) of a tree whose median pruning keeps ceil(live / 2) at every judged depth."""
    live, calls = 1, 0
    for depth, (branches, candidates) in enumerate(zip(config.branches, config.candidates, strict=True)):
        live *= branches
        calls += live * candidates
        if depth in config.judge_depths:
            live = math.ceil(live / 2)
    return calls


def oracle_scores(clip: np.ndarray, spec: dict) -> dict[str, float]:
    from genmodels.eval.video_oracle import score_clip

    return {k: float(v) for k, v in score_clip(clip, spec).items()}


def mean_scores(rows: list[dict]) -> dict[str, float]:
    return {k: float(np.mean([r[k] for r in rows])) for k in KEYS}


def reach_fraction(bon_nfe: list[int], bon_all: list[float], tof_nfe: list[float], tof_all: list[float]) -> dict:
    """Best-of-N's best mean "all" score, the NFE it first took, and the NFE at which the tree's curve (sorted
    by NFE, no interpolation) first reaches it, as a fraction of best-of-N's."""
    best = max(bon_all)
    needed = bon_nfe[bon_all.index(best)]
    order = np.argsort(tof_nfe)
    reached = next((float(tof_nfe[i]) for i in order if tof_all[i] >= best), None)
    fraction = None if reached is None or needed == 0 else reached / needed
    return {"best_of_n_best_all": best, "best_of_n_nfe": needed, "tree_of_frames_nfe": reached,
            "fraction": fraction, "target": TARGET_FRACTION,
            "meets_target": None if fraction is None else bool(fraction <= TARGET_FRACTION)}


def main(argv=None) -> dict:
    from genmodels.eval.video_oracle import load_video_eval_set
    from genmodels.loading import load_pipeline
    from genmodels.pipelines.text_to_video import TextToVideoPipeline

    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe = load_pipeline(TextToVideoPipeline, _folder(args.model)).to(device)
    pipe.set_progress_bar_config(disable=True)
    verifier = CLIPVideoVerifier.from_folder(_folder(args.clip), device=device)
    items = load_video_eval_set()[: args.limit]
    frames = int(items[0]["spec"]["frames"])
    call = dict(num_inference_steps=args.steps, guidance_scale=args.guidance)
    units = math.ceil(frames / args.frames_per_unit)
    configs = {r: video_tree_config(r, units, args.first_candidates) for r in sorted(set(args.roots))}
    matched = {r: nominal_cost(c) for r, c in configs.items()}
    pool = max(max(matched.values()), args.max_n or 0)
    ns = sorted({2**i for i in range(int(math.log2(pool)) + 1)} | set(matched.values()))

    per_prompt = []
    t0 = time.perf_counter()
    for item in tqdm(items, desc="prompts", unit="prompt", disable=args.no_progress):
        context, spec, seed = {"prompt": item["prompt"]}, item["spec"], int(item["seed"])
        generate = text_to_video_generate_fn(pipe, item["prompt"], num_frames=frames, **call)
        cands = sample_candidates(generate, pool, [seed + j for j in range(pool)], args.batch_size)
        scores = verifier.score(cands.outputs, context)
        oracle = [oracle_scores(c, spec) for c in cands.outputs]
        record = {"id": item["id"], "category": item["category"], "prompt": item["prompt"], "seed": seed,
                  "nfe_per_clip": int(cands.nfe[0]), "verifier_scores": scores.tolist(), "oracle": oracle,
                  "best_of_n": {}, "tree_of_frames": {}}
        for n in ns:
            pick = int(np.argmax(scores[:n]))
            record["best_of_n"][str(n)] = {"index": pick, **oracle[pick],
                                      "coverage": float(any(o["all"] for o in oracle[:n]))}
        for roots, config in configs.items():
            gen = VideoChunkGenerator(pipe, item["prompt"], frames, args.frames_per_unit, **call)
            result = run_search("tree-of-frames", verifier=verifier, context=context, unit_generator=gen,
                                tree_config=config, seed=seed)
            record["tree_of_frames"][str(roots)] = {"nfe": result.nfe, "live_per_depth": result.tree.live_per_depth,
                                               "leaf_scores": result.scores.tolist(), "seconds": result.seconds,
                                               **oracle_scores(result.output, spec)}
        per_prompt.append(record)
    seconds = time.perf_counter() - t0

    nfe_per_clip = per_prompt[0]["nfe_per_clip"]
    best_of_n = [{"n": n, "nfe": n * nfe_per_clip, **mean_scores([p["best_of_n"][str(n)] for p in per_prompt]),
                  "coverage": float(np.mean([p["best_of_n"][str(n)]["coverage"] for p in per_prompt]))} for n in ns]
    tree = [{"roots": r, "nominal_nfe": matched[r] * nfe_per_clip,
             "nfe_mean": float(np.mean([p["tree_of_frames"][str(r)]["nfe"] for p in per_prompt])),
             **mean_scores([p["tree_of_frames"][str(r)] for p in per_prompt])} for r in configs]
    by_n = {row["n"]: row for row in best_of_n}
    budgets = [{"nfe": t["nominal_nfe"], "tree_of_frames": t, "best_of_n": by_n[matched[t["roots"]]]} for t in tree]
    headline = reach_fraction([b["nfe"] for b in best_of_n], [b["all"] for b in best_of_n],
                              [t["nfe_mean"] for t in tree], [t["all"] for t in tree])
    result = {
        "settings": {"model": args.model, "clip": args.clip, "prompts": len(items), "frames": frames,
                     "steps": args.steps, "guidance": args.guidance, "frames_per_unit": args.frames_per_unit,
                     "units": units, "first_candidates": args.first_candidates, "device": device,
                     "verifier": verifier.name, "verifier_repr": repr(verifier),
                     "seed_rule": "best-of-N candidate j: prompt seed + j; tree: seeds from the prompt seed on"},
        "configs": {str(r): {"branches": c.branches, "candidates": c.candidates, "judge_depths": sorted(c.judge_depths),
                        "nominal_clips": matched[r]} for r, c in configs.items()},
        "seconds": seconds,
        "nfe_per_clip": nfe_per_clip,
        "best_of_n": best_of_n,
        "tree_of_frames": tree,
        "budgets": budgets,
        "headline": headline,
        "per_prompt": per_prompt,
    }

    print(f"{len(items)} prompts, {frames} frames, {units} units of {args.frames_per_unit}, {nfe_per_clip} NFE per "
          f"clip, {seconds / 60:.1f} min; verifier {verifier!r}")
    print(f"{'NFE':>6} | {'ToF roots':>9} {'NFE (mean)':>10} " + " ".join(f"{k:>8}" for k in KEYS)
          + f" | {'BoN N':>5} " + " ".join(f"{k:>8}" for k in KEYS))
    for b in budgets:
        t, n = b["tree_of_frames"], b["best_of_n"]
        print(f"{b['nfe']:>6} | {t['roots']:>9} {t['nfe_mean']:>10.1f} " + " ".join(f"{t[k]:>8.3f}" for k in KEYS)
              + f" | {n['n']:>5} " + " ".join(f"{n[k]:>8.3f}" for k in KEYS))
    if headline["fraction"] is None:
        print(f"Tree-of-Frames never reached best-of-N's best 'all' {headline['best_of_n_best_all']:.3f} "
              f"(at {headline['best_of_n_nfe']} NFE)")
    else:
        print(f"Tree-of-Frames reached best-of-N's best 'all' {headline['best_of_n_best_all']:.3f} at "
              f"{headline['tree_of_frames_nfe']:.0f} NFE = {headline['fraction']:.2f} × best-of-N's "
              f"{headline['best_of_n_nfe']} (target ≤ {TARGET_FRACTION})")
    if args.plot:
        plot_score_vs_nfe(args.plot, {
            "best-of-N (clip-video)": ([b["nfe"] for b in best_of_n], [b["all"] for b in best_of_n]),
            "Tree-of-Frames (clip-video)": ([t["nfe_mean"] for t in tree], [t["all"] for t in tree]),
            "coverage: any of N passes (oracle picks)": ([b["nfe"] for b in best_of_n],
                                                         [b["coverage"] for b in best_of_n]),
        }, ylabel="mean oracle 'all' score", title=f"moving shapes: {len(items)} prompts")
    if args.json:
        write_text_atomic(args.json, json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
