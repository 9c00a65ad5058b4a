"""Tree-of-Frames vs best-of-N on the moving-shapes prompts at matched NFE: clip-video selects, the oracle scores.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/video_tof.py --model assets/moving-shapes-dim \\
        --clip assets/clip-shapes [--limit 60 | --per-category 5] [--steps 20] [--roots 1 2 4 8] \\
        [--frames-per-unit 2] [--grow] [--json benchmarks/results/video_tof.json] \\
        [--plot benchmarks/results/video_tof.png]

Prompts: the fixed evaluation set (``genmodels/eval/moving_shapes_eval_prompts.jsonl``: the first ``--limit``,
or the first ``--per-category`` of each category),
8 frames of 32 px. Both searches select with the **clip-video** verifier (``CLIPVideoVerifier``: per-frame CLIP
score of the prompt's objects + frame-to-frame consistency; it cannot see the direction of motion unless
``--direction-weight`` adds its direction term); the chosen clips are then scored by the moving-shapes oracle
(object, motion, identity, all), which neither search sees. Each best-of-N candidate's verifier terms are saved.

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
reported too (ties keep more). With ``--grow`` a unit denoises only the frames its branch has so far (2, 4, 6, 8
of 8), so a call at depth d costs (d + 1)/U of a clip: the tree's cost is then its clip-equivalent NFE (NFE ×
frames / 8, proportional to compute for this linear-time model) and the nominal cost is rounded up to clips.
Reported per budget: the mean oracle scores of both methods; and the headline: the cost at which Tree-of-Frames
first reaches best-of-N's best mean "all" score (over the Ns run), as a fraction of the NFE best-of-N needed for
it (target ≤ 0.6), null when the tree never reaches it, and marked degenerate when best-of-N's best is 0 (every
budget "reaches" it). The same headline on "mean" (the average of the object, motion
and identity checks) is reported beside it, since a weak model can leave "all" at 0 for best-of-N.

best-of-N is evaluated at every N from 1 to the pool's size (selection from the stored pool costs nothing), so
"first reaches" is the first N that does, not the next power of two. Beside that one realisation (the first N
seeds) the report gives best-of-N's **expected** score at every N: the pick among N candidates drawn at random
from the pool, averaged exactly over all N-subsets (``genmodels.search.selection_accuracy``), and the same
headlines against that curve.

``--layout off`` samples every clip from the prompt alone (``plan_layout=False``). With the default ``auto`` a
pipeline that has a layout planner (the shipped stage-7 model) lays out best-of-N's 8-frame clips, but not the
trees' shorter first units or their continuations, which the planner does not draw; such a model passes nearly
every prompt in one sample, so search has nothing to find. ``--reuse-pool`` refuses a pool drawn with another
layout setting or by other weights (the transformer's sha256), even at the same ``--model`` path.

**Previews** (``--screen S --preview-steps P``): each root's first unit is chosen among S drafts drawn at P steps
from their seeds (``TreeConfig.screen``); the verifier ranks the drafts and only the ``--first-candidates`` best
seeds are drawn at ``--steps`` (a deterministic sampler from the same noise lands near its draft). The drafts'
NFE counts in the tree's cost. ``--preview-steps`` also adds **best-of-N on drafts** (``run_search(final_fn=…,
final_k=K)``, ``lingen generate --preview-steps``): N whole-clip drafts of the pool's seeds at P steps, the K best
(``--preview-keep``, one curve per K) drawn in full (each is the pool's clip of that seed) and the verifier's best
of those kept, N × P + K × ``--steps`` NFE: the same screening without the tree, so a reader sees which of the two
earns a gain; and whether it reaches plain best-of-N's best at ≤ 0.6 of its NFE.

``--summarize RESULT.json [MORE.json ...]`` re-prints (and with ``--json`` re-writes) a report from saved
per-prompt records, without a model, re-selecting best-of-N at every N from each prompt's stored pool. Several
files combine: records of the same prompt (same pool) merge their trees (e.g. a ``--roots 8`` run with
``--reuse-pool`` beside the run it reused), records of other prompts are pooled into one report; the runs must
share the pool and tree settings, and only the roots every prompt has are reported.
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
    motion_from_start_stage,
    plot_score_vs_nfe,
    run_search,
    sample_candidates,
    select_top_k,
    selection_accuracy,
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
    p.add_argument("--per-category", type=int, default=None,
                   help="the first K prompts of each category (single, two) instead of --limit")
    p.add_argument("--skip-per-category", type=int, default=0,
                   help="with --per-category: skip the first S prompts of each category (a set held out from a run "
                        "on the first S)")
    p.add_argument("--eval-seed", type=int, default=None,
                   help="prompts from a fresh evaluation set drawn with this seed (make_video_eval_set; ids prefixed "
                        "'s<seed>-') instead of the fixed one (seed 2025), for a check on prompts no run has seen")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=4.0)
    p.add_argument("--roots", type=int, nargs="+", default=[1, 2, 4, 8], help="tree roots, one tree per value")
    p.add_argument("--frames-per-unit", type=int, default=2)
    p.add_argument("--grow", action="store_true",
                   help="a unit denoises only the frames kept so far (VideoChunkGenerator(grow=True)); tree cost is "
                        "then counted in clip-equivalent NFE (NFE × frames / clip frames)")
    p.add_argument("--first-candidates", type=int, default=2, help="draws for the first unit of each root")
    p.add_argument("--extend-candidates", type=int, default=1,
                   help="draws per continuation unit, the verifier's best kept (default 1, Video-T1's)")
    p.add_argument("--extend-steps", type=int, default=None,
                   help="denoising steps of the tree's continuation units (default --steps); the first unit and "
                        "best-of-N keep --steps")
    p.add_argument("--screen", type=int, default=0,
                   help="previews per root's first unit (TreeConfig.screen): the tree ranks S cheap drafts of the "
                        "first unit (--preview-steps) and draws the --first-candidates best in full (default 0: none)")
    p.add_argument("--preview-steps", type=int, default=None,
                   help="steps of a preview (with --screen); also adds 'best-of-N on drafts': N whole-clip drafts "
                        "of the pool's seeds, the --preview-keep best drawn in full (N × P + K × steps NFE)")
    p.add_argument("--preview-keep", type=int, nargs="+", default=[1, 4], metavar="K",
                   help="best-of-N on drafts: drafts drawn in full, one curve per K (default 1 4)")
    p.add_argument("--first-stage", choices=["start", "motion"], default="start",
                   help="the verifier stage of the first unit: 'start' (Video-T1: scene only, CLIP terms) or "
                        "'motion' (all terms, direction included; for first units long enough to show motion)")
    p.add_argument("--direction-weight", type=float, default=0.0,
                   help="weight of the clip-video verifier's direction term (default 0: the verifier cannot see "
                        "the direction of motion)")
    p.add_argument("--max-n", type=int, default=None,
                   help="best-of-N pool per prompt (default: the largest tree's nominal cost in clips)")
    p.add_argument("--reuse-pool", default=None, metavar="RESULT_JSON",
                   help="take each prompt's best-of-N pool (verifier terms, oracle scores) from a saved run with the "
                        "same model (path and weights), clip verifier, steps, guidance, frames, direction weight and "
                        "--layout instead of sampling it again (the pool is deterministic in its seeds); only the "
                        "trees are run")
    p.add_argument("--layout", choices=["auto", "off"], default="auto",
                   help="auto: the pipeline plans a layout where it can (best-of-N's 8-frame clips, with a model that "
                        "has a planner; never the trees' shorter units or continuations); off: plan_layout=False "
                        "for every call, so both searches sample from the prompt alone")
    p.add_argument("--batch-size", type=int, default=16, help="best-of-N clips per pipeline call")
    p.add_argument("--quick", action="store_true", help="2 prompts, 2 steps, roots 1 2 (a smoke run)")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None, help="write the results here (atomically)")
    p.add_argument("--plot", default=None, help="PNG of mean oracle score vs NFE, both methods (atomically)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--summarize", default=None, nargs="+", metavar="RESULT_JSON",
                   help="re-summarise saved runs' per-prompt records (no sampling); several files combine: the same "
                        "prompts' trees merge, other prompts pool")
    p.add_argument("--reweight", type=float, nargs="+", default=None, metavar="W",
                   help="with --summarize: best-of-N re-selected from the saved pool with the direction term at "
                        "each weight W (the pool's saved verifier terms; trees are not re-run)")
    args = p.parse_args(argv)
    if args.quick:
        args.limit, args.steps, args.roots = min(args.limit or 2, 2), 2, [1, 2]
    if min(args.roots) < 1 or args.steps < 1 or args.batch_size < 1 or args.first_candidates < 1 \
            or (args.per_category is not None and args.per_category < 1) \
            or (args.extend_steps is not None and args.extend_steps < 1) or args.skip_per_category < 0 \
            or (args.preview_steps is not None and args.preview_steps < 1) or min(args.preview_keep) < 1 \
            or args.extend_candidates < 1:
        p.error("--roots, --steps, --batch-size, --first-candidates, --extend-candidates, --per-category, "
                "--extend-steps, --preview-steps and --preview-keep must be at least 1, --skip-per-category at least 0")
    if args.screen and (args.screen < args.first_candidates or args.preview_steps is None):
        p.error("--screen needs --preview-steps and at least --first-candidates previews")
    return args


def _folder(path: str) -> Path:
    folder = Path(path)
    return ROOT / folder if not folder.exists() and (ROOT / folder).exists() else folder


def nominal_cost(config: TreeConfig, grow: tuple[int, int] | None = None, extend_ratio: float = 1.0,
                 preview_ratio: float = 0.0) -> int:
    """Pipeline calls (clips) of a tree whose median pruning keeps ceil(live / 2) at every judged depth; with
    ``grow = (frames_per_unit, num_frames)`` a call at depth d weighs (d + 1) · frames_per_unit / num_frames of a
    clip (grown units); calls after the first unit weigh ``extend_ratio`` more (their steps / a clip's steps), and
    screened units' previews ``preview_ratio`` (preview steps / a clip's steps). The total is rounded up to whole
    clips."""
    live, calls = 1, 0.0
    for depth, (branches, candidates, screen) in enumerate(zip(config.branches, config.candidates, config.screen,
                                                               strict=True)):
        live *= branches
        weight = 1.0 if grow is None else min((depth + 1) * grow[0], grow[1]) / grow[1]
        previews = live * screen * weight * preview_ratio
        weight *= extend_ratio if depth > 0 else 1.0
        calls += live * candidates * weight + previews
        if depth in config.judge_depths:
            live = math.ceil(live / 2)
    return math.ceil(calls - 1e-9)


def select_prompts(items: list[dict], limit: int | None = None, per_category: int | None = None,
                   skip: int = 0) -> list[dict]:
    """Items ``skip .. skip + per_category`` of each category (categories in order of appearance), then the first
    ``limit`` of those."""
    if per_category is not None:
        items = [it for cat in dict.fromkeys(it["category"] for it in items)
                 for it in [x for x in items if x["category"] == cat][skip: skip + per_category]]
    return items[:limit]


def oracle_scores(clip: np.ndarray, spec: dict) -> dict[str, float]:
    from genmodels.eval.video_oracle import score_clip

    return {k: float(v) for k, v in score_clip(clip, spec).items()}


def mean_scores(rows: list[dict]) -> dict[str, float]:
    """Means over prompts of the oracle keys, and of "mean": the average of object, motion and identity."""
    means = {k: float(np.mean([r[k] for r in rows])) for k in KEYS}
    return {**means, "mean": float(np.mean([means[k] for k in ("object", "motion", "identity")]))}


def reach_fraction(bon_nfe: list[int], bon_score: list[float], tof_nfe: list[float],
                   tof_score: list[float]) -> dict:
    """Best-of-N's best mean score, the NFE it first took, and the NFE at which the tree's curve (sorted by NFE,
    no interpolation) first reaches it, as a fraction of best-of-N's. ``degenerate`` when best-of-N's best is 0
    (any budget "reaches" it, so no fraction is given)."""
    best = max(bon_score)
    needed = bon_nfe[bon_score.index(best)]
    order = np.argsort(tof_nfe)
    degenerate = best <= 0
    reached = None if degenerate else next((float(tof_nfe[i]) for i in order if tof_score[i] >= best), None)
    fraction = None if reached is None or needed == 0 else reached / needed
    return {"best_of_n_best": best, "best_of_n_nfe": needed, "tree_of_frames_nfe": reached,
            "tree_of_frames_best": max(tof_score), "degenerate": degenerate,
            "fraction": fraction, "target": TARGET_FRACTION,
            "meets_target": None if fraction is None else bool(fraction <= TARGET_FRACTION)}


def best_of_n_records(scores, oracle: list[dict], ns) -> dict[str, dict]:
    """Per N: the verifier's pick among the first N of the pool (the first of equal scores), its oracle scores, and
    whether any of the N passes every check (coverage)."""
    scores = np.asarray(scores, dtype=np.float64)
    out = {}
    for n in ns:
        pick = int(np.argmax(scores[:n]))
        out[str(n)] = {"index": pick, **oracle[pick], "coverage": float(any(o["all"] for o in oracle[:n]))}
    return out


def expected_best_of_n(per_prompt: list[dict], nfe_per_clip: int) -> list[dict]:
    """best-of-N's *expected* mean oracle scores per N: the verifier's pick among N candidates drawn at random
    from each prompt's pool, averaged exactly over all N-subsets (``selection_accuracy``), instead of the one
    realisation "the first N seeds". With 30 prompts one lucky early seed moves the realised "all" by 0.033;
    this is the curve that realisation scatters around. The tree is one realisation too (its own seeds)."""
    pool = min(len(p["oracle"]) for p in per_prompt)
    scores = np.array([p["verifier_scores"][:pool] for p in per_prompt])
    ns, rows = np.arange(1, pool + 1), {}
    for key in KEYS:
        _, rows[key] = selection_accuracy(scores, np.array([[o[key] for o in p["oracle"][:pool]]
                                                            for p in per_prompt]), ns)
    return [{"n": int(n), "nfe": int(n) * nfe_per_clip, **{k: float(rows[k][i]) for k in KEYS},
             "mean": float(np.mean([rows[k][i] for k in ("object", "motion", "identity")]))}
            for i, n in enumerate(ns)]


def drafts_pick(preview_scores, full_scores, n: int, keep: int) -> int:
    """best-of-N on drafts among the first ``n`` seeds: the ``keep`` best drafts (ties: the earlier seed; with one
    draft, the argmax) drawn in full, the verifier's best full draw (as ``run_search(final_fn, final_k)``)."""
    top = select_top_k(preview_scores[:n], keep)
    return top[int(np.argmax(np.asarray(full_scores, dtype=np.float64)[top]))] if len(top) > 1 else top[0]


def previewed_best_of_n(per_prompt: list[dict], ns: list[int], keep: int = 1) -> list[dict]:
    """'best-of-N on drafts': per prompt the verifier ranks N whole-clip drafts of the pool's first N seeds
    (``preview_scores``, drawn at fewer steps), the ``keep`` best seeds are drawn in full (the pool's clips of
    those seeds, ``verifier_scores``) and the best of those is kept; cost N × draft NFE + min(keep, N) clips'
    NFE. The screening a tree's ``--screen`` does, without the tree."""
    rows = []
    for n in ns:
        picks = [p["oracle"][drafts_pick(p["preview_scores"], p["verifier_scores"], n, keep)] for p in per_prompt]
        nfe = n * per_prompt[0]["preview_nfe_per_clip"] + min(keep, n) * per_prompt[0]["nfe_per_clip"]
        rows.append({"n": n, "nfe": nfe, **mean_scores(picks)})
    return rows


def matched_clips(configs: dict[int, TreeConfig], settings: dict) -> dict[int, int]:
    """Each tree's nominal cost in clips (its matched best-of-N), grown units weighed when ``settings["grow"]``."""
    grow = (settings["frames_per_unit"], settings["frames"]) if settings.get("grow") else None
    ratio = (settings.get("extend_steps") or settings["steps"]) / settings["steps"]
    preview = (settings.get("preview_steps") or 0) / settings["steps"]
    return {r: nominal_cost(c, grow, ratio, preview) for r, c in configs.items()}


def summarize(per_prompt: list[dict], ns: list[int], configs: dict[int, TreeConfig], settings: dict,
              seconds: float) -> dict:
    """The report from per-prompt records (``main``'s, or a saved JSON's ``per_prompt`` to re-summarise)."""
    matched = matched_clips(configs, settings)
    nfe_per_clip = per_prompt[0]["nfe_per_clip"]
    best_of_n = [{"n": n, "nfe": n * nfe_per_clip, **mean_scores([p["best_of_n"][str(n)] for p in per_prompt]),
                  "coverage": float(np.mean([p["best_of_n"][str(n)]["coverage"] for p in per_prompt]))} for n in ns]
    tree = [{"roots": r, "nominal_nfe": matched[r] * nfe_per_clip,
             "nfe_mean": float(np.mean([p["tree_of_frames"][str(r)]["nfe"] for p in per_prompt])),
             "clip_nfe_mean": float(np.mean([t.get("clip_nfe", t["nfe"])  # runs saved before --grow existed
                                             for t in (p["tree_of_frames"][str(r)] for p in per_prompt)])),
             **mean_scores([p["tree_of_frames"][str(r)] for p in per_prompt])} for r in configs]
    by_n = {row["n"]: row for row in best_of_n}
    budgets = [{"nfe": t["nominal_nfe"], "tree_of_frames": t, "best_of_n": by_n[matched[t["roots"]]]} for t in tree]
    def headlines_against(curve: list[dict]) -> dict[str, dict]:
        return {key: reach_fraction([b["nfe"] for b in curve], [b[key] for b in curve],
                                    [t["clip_nfe_mean"] for t in tree], [t[key] for t in tree])
                for key in ("all", "mean")}

    expected = expected_best_of_n(per_prompt, nfe_per_clip)
    headlines, headlines_expected = headlines_against(best_of_n), headlines_against(expected)
    previewed = {}
    if all("preview_scores" in p for p in per_prompt):
        drafted = [n for n in ns if n <= min(len(p["preview_scores"]) for p in per_prompt)]
        curves = {str(k): previewed_best_of_n(per_prompt, drafted, k) for k in settings.get("preview_keep", [1])}
        plain = ([b["nfe"] for b in best_of_n], [b["all"] for b in best_of_n])
        previewed = {"best_of_n_preview": curves,
                     "headline_preview": {k: headlines_against(c)["all"] for k, c in curves.items()},
                     # does best-of-N on drafts reach plain best-of-N's best "all", and at what share of its NFE
                     "headline_drafts_vs_plain": {k: reach_fraction(*plain, [b["nfe"] for b in c],
                                                                    [b["all"] for b in c])
                                                  for k, c in curves.items()}}
    return {
        "settings": settings,
        "configs": {str(r): {"branches": c.branches, "candidates": c.candidates, "judge_depths": sorted(c.judge_depths),
                             "screen": c.screen, "nominal_clips": matched[r]} for r, c in configs.items()},
        "seconds": seconds,
        "nfe_per_clip": nfe_per_clip,
        "best_of_n": best_of_n,
        "tree_of_frames": tree,
        "budgets": budgets,
        "headline": headlines["all"],
        "headline_mean": headlines["mean"],
        "best_of_n_expected": expected,
        "headline_expected": headlines_expected["all"],
        "headline_expected_mean": headlines_expected["mean"],
        **previewed,
        "per_prompt": per_prompt,
    }


def plot_report(path: str, result: dict) -> None:
    bon, tree = result["best_of_n"], result["tree_of_frames"]
    extra = {f"best-of-N on drafts, {k} drawn in full: all 3 checks pass":
             ([b["nfe"] for b in c], [b["all"] for b in c]) for k, c in result.get("best_of_n_preview", {}).items()}
    plot_score_vs_nfe(path, {**extra,
        "best-of-N: all 3 checks pass": ([b["nfe"] for b in bon], [b["all"] for b in bon]),
        "Tree-of-Frames (cost): all 3 checks pass": ([t["clip_nfe_mean"] for t in tree], [t["all"] for t in tree]),
        "best-of-N: mean of the 3 checks": ([b["nfe"] for b in bon], [b["mean"] for b in bon]),
        "Tree-of-Frames (cost): mean of the 3 checks": ([t["clip_nfe_mean"] for t in tree], [t["mean"] for t in tree]),
        "coverage: any of N passes (oracle picks)": ([b["nfe"] for b in bon], [b["coverage"] for b in bon]),
    }, ylabel="mean oracle score", title=f"moving shapes: {result['settings']['prompts']} prompts")


def print_report(result: dict, verifier: str) -> None:
    s = result["settings"]
    print(f"{s['prompts']} prompts, {s['frames']} frames, {s['units']} units of {s['frames_per_unit']}, "
          f"{result['nfe_per_clip']} NFE per clip, {result['seconds'] / 60:.1f} min; verifier {verifier}; "
          + ("grown units: tree cost in clip-equivalent NFE" if s.get("grow") else "every unit a whole clip")
          + ("; no layouts planned" if s.get("layout") == "off" else ""))
    keys = (*KEYS, "mean")
    print(f"{'NFE':>6} | {'ToF roots':>9} {'calls NFE':>9} {'cost':>7} " + " ".join(f"{k:>8}" for k in keys)
          + f" | {'BoN N':>5} " + " ".join(f"{k:>8}" for k in keys))
    for b in result["budgets"]:
        t, n = b["tree_of_frames"], b["best_of_n"]
        print(f"{b['nfe']:>6} | {t['roots']:>9} {t['nfe_mean']:>9.1f} {t['clip_nfe_mean']:>7.1f} "
              + " ".join(f"{t[k]:>8.3f}" for k in keys) + f" | {n['n']:>5} " + " ".join(f"{n[k]:>8.3f}" for k in keys))
    heads = [("'all'", result["headline"]), ("mean of the 3 checks", result["headline_mean"])]
    if "headline_expected" in result:
        print("best-of-N expected over all N-subsets of the pool (all / mean): " + ", ".join(
            f"N={b['n']} {b['all']:.3f} / {b['mean']:.3f}" for b in result["best_of_n_expected"]))
        heads += [("expected 'all'", result["headline_expected"]),
                  ("expected mean of the 3 checks", result["headline_expected_mean"])]
    for k, curve in result.get("best_of_n_preview", {}).items():
        print(f"best-of-N on drafts, the {k} best drawn in full (N (NFE) all / mean): " + ", ".join(
            f"N={b['n']} ({b['nfe']}) {b['all']:.3f} / {b['mean']:.3f}" for b in curve))
        heads.append((f"'all' of best-of-N on drafts (keep {k})", result["headline_preview"][k]))
        h = result["headline_drafts_vs_plain"][k]
        reached = "never" if h["fraction"] is None else \
            f"at {h['tree_of_frames_nfe']:.0f} NFE = {h['fraction']:.2f} × (target ≤ {TARGET_FRACTION})"
        print(f"best-of-N on drafts (keep {k}) reaches plain best-of-N's best 'all' {h['best_of_n_best']:.3f} "
              f"(first at {h['best_of_n_nfe']} NFE): {reached}")
    for name, h in heads:
        best = f"best-of-N's best {name} {h['best_of_n_best']:.3f} (first at {h['best_of_n_nfe']} NFE)"
        if h["degenerate"]:
            print(f"{name}: best-of-N never scores above 0, so there is nothing to reach; Tree-of-Frames' best "
                  f"is {h['tree_of_frames_best']:.3f}")
        elif h["fraction"] is None:
            print(f"{name}: Tree-of-Frames never reached {best}")
        else:
            print(f"{name}: Tree-of-Frames reached {best} at {h['tree_of_frames_nfe']:.0f} NFE = "
                  f"{h['fraction']:.2f} × (target ≤ {TARGET_FRACTION})")


def reweighted_best_of_n(per_prompt: list[dict], ns: list[int], weights: list[float],
                         temporal_weight: float = 0.5, path_weight: float = 0.5) -> dict[str, list[dict]]:
    """best-of-N's mean oracle scores per N when the pool is re-selected with the direction term at each weight:
    ``{str(w): [{"n", **mean_scores}, …]}``, from each prompt's saved ``verifier_terms`` (same clips, new argmax)."""
    out = {}
    for w in weights:
        picks = []
        for p in per_prompt:
            t = {k: np.asarray(v) for k, v in p["verifier_terms"].items()}
            score = t["clip"] + temporal_weight * t["temporal"] + path_weight * t["path"] + w * t["direction"]
            records = best_of_n_records(score, p["oracle"], ns)
            picks.append([records[str(n)] for n in ns])
        out[str(w)] = [{"n": n, **mean_scores([row[i] for row in picks])} for i, n in enumerate(ns)]
    return out


def print_reweighted(rows: dict[str, list[dict]], nfe_per_clip: int) -> None:
    print("best-of-N re-selected from the same pool with the direction term (all / mean per N):")
    ns = [r["n"] for r in next(iter(rows.values()))]
    print(f"{'weight':>8} | " + " ".join(f"{f'N={n} ({n * nfe_per_clip})':>15}" for n in ns))
    for w, row in rows.items():
        print(f"{w:>8} | " + " ".join(f"{r['all']:>6.3f} / {r['mean']:.3f}" for r in row))


TREE_KEYS = ("frames_per_unit", "grow", "units", "first_candidates", "extend_steps", "first_stage", "screen",
             "preview_steps", "extend_candidates")


def _same_setting(key: str, a: dict, b: dict) -> bool:
    """Whether two runs agree on a setting; a run saved before ``screen`` existed had none (0), and preview steps
    matter only where both runs drew previews."""
    if key in ("screen", "extend_candidates"):  # runs saved before these existed: 0 drafts, 1 draw
        default = 0 if key == "screen" else 1
        return (a.get(key) or default) == (b.get(key) or default)
    if key == "preview_steps" and (a.get(key) is None or b.get(key) is None):
        return not (a.get("screen") or b.get("screen"))
    return a.get(key) == b.get(key)


def combine_saved(paths: list[str]) -> tuple[list[dict], dict[int, TreeConfig], dict, float]:
    """Per-prompt records, tree configs, settings and seconds of one or more saved runs (``--summarize``)."""
    runs = [json.loads(Path(path).read_text()) for path in paths]
    settings = dict(runs[0]["settings"])
    for path, run in zip(paths[1:], runs[1:]):
        # prompts from other evaluation sets pool (their ids differ); everything else must agree
        differ = [k for k in (*POOL_KEYS, *TREE_KEYS) if k != "eval_seed"
                  and not _same_setting(k, run["settings"], settings)]
        if differ:
            raise SystemExit(f"{path} differs from {paths[0]} in {', '.join(differ)}; the runs cannot be combined")
    configs: dict[int, TreeConfig] = {}
    records: dict[str, dict] = {}
    for path, run in zip(paths, runs):
        for r, c in run["configs"].items():
            configs[int(r)] = TreeConfig(c["branches"], c["candidates"], frozenset(c["judge_depths"]), c.get("screen"))
        for p in run["per_prompt"]:
            if p["id"] not in records:
                records[p["id"]] = {**p, "tree_of_frames": dict(p["tree_of_frames"])}
                continue
            mine = records[p["id"]]
            common = min(len(mine["oracle"]), len(p["oracle"]))
            if mine["verifier_scores"][:common] != p["verifier_scores"][:common] or mine["seed"] != p["seed"]:
                raise SystemExit(f"{path}: prompt {p['id']} has another pool than in an earlier file")
            mine["tree_of_frames"].update(p["tree_of_frames"])
            if "preview_scores" in p and "preview_scores" not in mine:
                mine.update(preview_scores=p["preview_scores"], preview_nfe_per_clip=p["preview_nfe_per_clip"])
    per_prompt = list(records.values())
    roots = set.intersection(*(set(map(int, p["tree_of_frames"])) for p in per_prompt))
    configs = {r: c for r, c in sorted(configs.items()) if r in roots}
    settings.update(prompts=len(per_prompt), summarized_from=list(paths),
                    eval_seeds=sorted({r["settings"].get("eval_seed") for r in runs}, key=lambda x: (x is not None, x)),
                    preview_steps=next((r["settings"].get("preview_steps") for r in runs
                                        if r["settings"].get("preview_steps")), None))
    return per_prompt, configs, settings, float(sum(run["seconds"] for run in runs))


def resummarize(args: argparse.Namespace) -> dict:
    per_prompt, configs, settings, seconds = combine_saved(args.summarize)
    settings["preview_keep"] = args.preview_keep
    pool = min(len(p["oracle"]) for p in per_prompt)
    ns = list(range(1, pool + 1))
    for p in per_prompt:  # best-of-N at every N, from the stored pool
        p["best_of_n"] = best_of_n_records(p["verifier_scores"], p["oracle"], ns)
    result = summarize(per_prompt, ns, configs, settings, seconds)
    print_report(result, settings.get("verifier_repr", settings.get("verifier", "?")))
    if args.reweight:
        if "verifier_terms" not in per_prompt[0]:
            raise SystemExit(f"{args.summarize[0]} has no saved verifier terms (a run from before --reweight existed)")
        result["reweighted_best_of_n"] = reweighted_best_of_n(per_prompt, ns, args.reweight)
        print_reweighted(result["reweighted_best_of_n"], result["nfe_per_clip"])
    if args.plot:
        plot_report(args.plot, result)
    if args.json:
        write_text_atomic(args.json, json.dumps(result, indent=2) + "\n")
    return result


POOL_KEYS = ("model", "model_sha256", "clip", "steps", "guidance", "frames", "direction_weight", "layout",
             "eval_seed")


def model_fingerprint(folder: Path) -> str:
    """sha256 of the transformer's weights, so a pool drawn by another model saved at the same path (an older
    shipped checkpoint) is never reused."""
    import hashlib

    weights = sorted((folder / "transformer").glob("*.safetensors"))
    if not weights:
        raise SystemExit(f"{folder} has no transformer/*.safetensors")
    digest = hashlib.sha256()
    for path in weights:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def saved_pools(path: str, settings: dict, pool: int) -> dict[str, dict]:
    """Per prompt id, the saved run's pool record, after checking that the run drew the same pool."""
    saved = json.loads(Path(path).read_text())
    theirs = saved["settings"]
    differ = [k for k in POOL_KEYS if theirs.get(k) != settings[k]]
    if differ:
        raise SystemExit(f"{path} drew its pool with other settings ({', '.join(differ)}); it cannot be reused")
    records = {p["id"]: p for p in saved["per_prompt"]}
    if any(len(p["oracle"]) < pool for p in records.values()):
        raise SystemExit(f"{path} has fewer than {pool} candidates per prompt")
    return records


def eval_items(eval_seed: int | None) -> list[dict]:
    """The fixed evaluation set, or with ``eval_seed`` a fresh one drawn the same way (ids ``s<seed>-…``, so its
    records never merge with the fixed set's)."""
    from genmodels.eval.video_oracle import load_video_eval_set, make_video_eval_set

    if eval_seed is None:
        return load_video_eval_set()
    return [{**item, "id": f"s{eval_seed}-{item['id']}"} for item in make_video_eval_set(eval_seed)]


def main(argv=None) -> dict:
    from genmodels.loading import load_pipeline
    from genmodels.pipelines.text_to_video import TextToVideoPipeline

    args = parse_args(argv)
    if args.summarize:
        return resummarize(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe = load_pipeline(TextToVideoPipeline, _folder(args.model)).to(device)
    pipe.set_progress_bar_config(disable=True)
    verifier = CLIPVideoVerifier.from_folder(_folder(args.clip), device=device,
                                             direction_weight=args.direction_weight)
    items = select_prompts(eval_items(args.eval_seed), args.limit, args.per_category, args.skip_per_category)
    frames = int(items[0]["spec"]["frames"])
    call = dict(num_inference_steps=args.steps, guidance_scale=args.guidance)
    if args.layout == "off":
        call["plan_layout"] = False
    units = math.ceil(frames / args.frames_per_unit)
    configs = {r: video_tree_config(r, units, args.first_candidates, args.screen, args.extend_candidates)
               for r in sorted(set(args.roots))}
    matched = matched_clips(configs, {"frames_per_unit": args.frames_per_unit, "frames": frames, "grow": args.grow,
                                      "steps": args.steps, "extend_steps": args.extend_steps,
                                      "preview_steps": args.preview_steps if args.screen else None})
    pool = max(max(matched.values()), args.max_n or 0)
    ns = list(range(1, pool + 1))

    pool_settings = {"model": args.model, "model_sha256": model_fingerprint(_folder(args.model)), "clip": args.clip,
                     "steps": args.steps, "guidance": args.guidance, "frames": frames,
                     "direction_weight": args.direction_weight, "layout": args.layout, "eval_seed": args.eval_seed}
    reused = saved_pools(args.reuse_pool, pool_settings, pool) if args.reuse_pool else None
    per_prompt = []
    t0 = time.perf_counter()
    for item in tqdm(items, desc="prompts", unit="prompt", disable=args.no_progress):
        context, spec, seed = {"prompt": item["prompt"]}, item["spec"], int(item["seed"])
        if reused is not None:
            if item["id"] not in reused:
                raise SystemExit(f"{args.reuse_pool} has no pool for prompt {item['id']}")
            old = reused[item["id"]]
            scores, oracle = np.asarray(old["verifier_scores"][:pool]), old["oracle"][:pool]
            terms_saved = {k: v[:pool] for k, v in old["verifier_terms"].items()}
            nfe_per_clip = int(old["nfe_per_clip"])
        else:
            generate = text_to_video_generate_fn(pipe, item["prompt"], num_frames=frames, **call)
            cands = sample_candidates(generate, pool, [seed + j for j in range(pool)], args.batch_size)
            terms = verifier.terms(cands.outputs, context)  # kept, so a saved pool can be re-weighted
            scores = verifier.combine(terms)
            oracle = [oracle_scores(c, spec) for c in cands.outputs]
            terms_saved = {k: v.tolist() for k, v in terms.items()}
            nfe_per_clip = int(cands.nfe[0])
        record = {"id": item["id"], "category": item["category"], "prompt": item["prompt"], "seed": seed,
                  "nfe_per_clip": nfe_per_clip, "verifier_scores": scores.tolist(),
                  "verifier_terms": terms_saved, "oracle": oracle,
                  "tree_of_frames": {}}
        record["best_of_n"] = best_of_n_records(scores, oracle, ns)
        if args.preview_steps:  # whole-clip previews of the pool's seeds, for best-of-N with previews
            generate = text_to_video_generate_fn(pipe, item["prompt"], num_frames=frames,
                                                 **{**call, "num_inference_steps": args.preview_steps})
            previews = sample_candidates(generate, pool, [seed + j for j in range(pool)], args.batch_size)
            record["preview_scores"] = verifier.score(previews.outputs, context).tolist()
            record["preview_nfe_per_clip"] = int(previews.nfe[0])
        for roots, config in configs.items():
            gen = VideoChunkGenerator(pipe, item["prompt"], frames, args.frames_per_unit, grow=args.grow,
                                      extend_steps=args.extend_steps, preview_steps=args.preview_steps, **call)
            result = run_search("tree-of-frames", verifier=verifier, context=context, unit_generator=gen,
                                tree_config=config, seed=seed,
                                stage_fn=motion_from_start_stage if args.first_stage == "motion" else None)
            record["tree_of_frames"][str(roots)] = {"nfe": result.nfe, "clip_nfe": gen.clip_nfe,
                                               "live_per_depth": result.tree.live_per_depth,
                                               "leaf_scores": result.scores.tolist(), "seconds": result.seconds,
                                               **oracle_scores(result.output, spec)}
        per_prompt.append(record)
    seconds = time.perf_counter() - t0

    settings = {**pool_settings, "prompts": len(items), "per_category": args.per_category,
                "skip_per_category": args.skip_per_category,
                "frames_per_unit": args.frames_per_unit, "grow": args.grow, "units": units,
                "first_candidates": args.first_candidates, "extend_steps": args.extend_steps,
                "screen": args.screen, "preview_steps": args.preview_steps, "preview_keep": args.preview_keep,
                "extend_candidates": args.extend_candidates,
                "first_stage": args.first_stage, "pool_from": args.reuse_pool,
                "device": device, "verifier": verifier.name,
                "verifier_repr": repr(verifier),
                "seed_rule": "best-of-N candidate j: prompt seed + j; tree: seeds from the prompt seed on"}
    result = summarize(per_prompt, ns, configs, settings, seconds)
    print_report(result, repr(verifier))
    if args.plot:
        plot_report(args.plot, result)
    if args.json:
        write_text_atomic(args.json, json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
