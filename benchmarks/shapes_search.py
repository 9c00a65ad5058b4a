"""Test-time search on the shapes world: oracle accuracy vs number of samples, with a verifier that is not the oracle.

    python benchmarks/shapes_search.py --model assets/shapes-sana --clip assets/clip-shapes \\
        [--per-category 10] [--n 32] [--steps 20] [--guidance 4.0] \\
        [--json benchmarks/results/shapes_search.json] [--plot-dir benchmarks/results]

For each evaluation prompt (``genmodels/eval/shapes_eval_prompts.jsonl``, the first ``--per-category`` of each
category) ``--n`` candidates are drawn once, candidate j from seed ``prompt seed + j`` (so candidate 0 is the
single sample the plain evaluation draws). Each candidate gets a CLIP score (the shipped tiny CLIP,
cos(image, prompt)) and the oracle's verdict. The oracle only *evaluates*; the selectors never see it.

From that pool, for N in 1, 2, 4, …, n:

- **best-of-N (CLIP)**: the expected oracle accuracy of the CLIP argmax over N candidates drawn at random from
  the pool (exact, ``selection_accuracy``), and the realised one for the first N candidates;
- **tournament (CLIP)**: SANA-1.5's knockout over the first N candidates, pairwise by CLIP score (N − 1
  comparisons; with a score-consistent comparator its winner is the argmax, which the script checks);
- **ensemble**: CLIP score + ½ × agreement (mean CLIP-embedding cosine to the other candidates), rank-normalised;
- ``--self-verifier TIMES:DRAWS`` adds the generator as its own verifier (``DiffusionScoreVerifier``: how much
  the prompt lowers the model's flow-matching error on the candidate, over fixed noise levels and draws);
- **coverage** (pass@N, any of N passes the oracle, unbiased estimator from the n samples) with the fitted
  exponentiated power law c(k) ≈ exp(a·k^b) and its mean absolute error.

Accuracies are GenEval-style: mean over the six categories of the per-category accuracy. NFE per candidate is
the sampler's denoiser calls (CFG-batched, so one per step). Plots: ``shapes_search_scaling.png`` (coverage, fit,
selection curves vs k) and ``shapes_search_nfe.png`` (oracle accuracy vs NFE per prompt).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from genmodels.eval.shapes_oracle import CATEGORIES, evaluate, load_eval_set  # noqa: E402
from genmodels.io import write_text_atomic  # noqa: E402
from genmodels.loading import load_pipeline  # noqa: E402
from genmodels.pipelines.text_to_image import TextToImagePipeline  # noqa: E402
from genmodels.search import (  # noqa: E402
    CLIPScoreVerifier,
    DiffusionScoreVerifier,
    coverage_curve,
    fit_power_law,
    knockout_tournament,
    plot_scaling,
    plot_score_vs_nfe,
    selection_accuracy,
    within_problem_auc,
)
from genmodels.search.selectors import agreement_scores  # noqa: E402
from genmodels.search.verifiers import normalise_scores  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="assets/shapes-sana")
    p.add_argument("--clip", action="append", default=None, metavar="FOLDER",
                   help="open_clip folder of a CLIP verifier (repeat to compare verifiers on the same candidates; "
                        "default assets/clip-shapes; the first one is the headline)")
    p.add_argument("--per-category", type=int, default=10)
    p.add_argument("--n", type=int, default=32, help="candidates per prompt (a power of two)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=4.0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--pool", default=None, metavar="NPZ",
                   help="cache of the candidates (images, oracle verdicts, NFE): reused when it exists and was made "
                        "with the same model and settings, written otherwise")
    p.add_argument("--self-verifier", default=None, metavar="TIMES:DRAWS",
                   help="also score with the generator itself (DiffusionScoreVerifier: how much the prompt lowers "
                        "its flow error on the candidate) at these noise levels, e.g. 0.3,0.5,0.7:2")
    p.add_argument("--json", default=None)
    p.add_argument("--plot-dir", default=None)
    args = p.parse_args(argv)
    args.clip = args.clip or ["assets/clip-shapes"]
    if args.self_verifier is not None:
        try:
            times, draws = args.self_verifier.split(":")
            args.self_verifier = (tuple(float(t) for t in times.split(",")), int(draws))
        except ValueError:
            p.error(f"--self-verifier takes TIMES:DRAWS, e.g. 0.3,0.5,0.7:2, got {args.self_verifier!r}")
    return args


def category_mean(values: np.ndarray, categories: list[str]) -> float:
    """GenEval-style overall: the mean over categories of the per-category mean of ``values`` ``[P]``."""
    cats = np.asarray(categories)
    return float(np.mean([values[cats == c].mean() for c in CATEGORIES if (cats == c).any()]))


def per_category(values: np.ndarray, categories: list[str]) -> dict:
    cats = np.asarray(categories)
    return {c: float(values[cats == c].mean()) for c in CATEGORIES if (cats == c).any()}


def candidate_pool(args, items: list[dict]) -> tuple[np.ndarray, np.ndarray, int, float]:
    """``n`` candidates per item (candidate j from seed item seed + j): uint8 images ``[P, n, H, W, 3]``, the
    oracle's verdicts ``[P, n]``, the NFE per candidate and the sampling seconds; read from / written to
    ``args.pool`` when given. A candidate whose sampling diverges (the pipeline's ``FloatingPointError``) is
    kept as a black image, which the oracle rejects, and listed on stdout."""
    settings = {"model": str(Path(args.model).resolve()), "prompts": [it["id"] for it in items], "n": args.n,
                "steps": args.steps, "guidance": args.guidance}
    if args.pool and Path(args.pool).is_file():
        with np.load(args.pool) as cached:
            if json.loads(str(cached["settings"])) == settings:
                return cached["images"], cached["correct"], int(cached["nfe"]), float(cached["seconds"])
        print(f"{args.pool} was made with other settings: sampling again")
    pipe = load_pipeline(TextToImagePipeline, args.model)
    pipe.set_progress_bar_config(disable=True)
    n, pool, correct, nfe = args.n, [], [], 0
    failed: list[tuple[str, int]] = []
    t0 = time.perf_counter()

    def draw(prompt: str, seeds: list[int]) -> list[np.ndarray]:
        nonlocal nfe
        out = pipe([prompt] * len(seeds), num_inference_steps=args.steps, guidance_scale=args.guidance,
                   generator=[torch.Generator().manual_seed(s) for s in seeds], output_type="np")
        nfe = out.nfe
        return list(out.images)

    for item in tqdm(items, desc="prompts", unit="prompt"):
        images = []
        for start in range(0, n, args.batch_size):
            seeds = [item["seed"] + j for j in range(start, min(n, start + args.batch_size))]
            try:
                images.extend(draw(item["prompt"], seeds))
            except FloatingPointError:  # a candidate whose sampling diverged: find it, keep the others
                for seed in seeds:
                    try:
                        images.extend(draw(item["prompt"], [seed]))
                    except FloatingPointError:
                        failed.append((item["id"], seed))
                        images.append(np.zeros((pipe.default_size, pipe.default_size, 3), np.uint8))
        pool.append(np.stack(images))
        correct.append(evaluate(pool[-1], [item["spec"]] * n)["correct"])
    seconds = time.perf_counter() - t0
    if failed:
        print(f"{len(failed)} candidate(s) diverged (non-finite output), scored as failures: {failed}")
    pool, correct = np.stack(pool), np.asarray(correct, dtype=bool)
    if args.pool:
        tmp = Path(args.pool).with_suffix(".tmp.npz")
        np.savez_compressed(tmp, images=pool, correct=correct, nfe=nfe, seconds=seconds,
                            settings=json.dumps(settings))
        tmp.replace(args.pool)
    return pool, correct, nfe, seconds


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.n < 1 or args.n & (args.n - 1):
        raise SystemExit(f"--n must be a power of two, got {args.n}")
    verifiers = {path: CLIPScoreVerifier.from_folder(path) for path in args.clip}  # before sampling: fail early
    items = [it for c in CATEGORIES for it in [i for i in load_eval_set() if i["category"] == c][:args.per_category]]
    categories = [it["category"] for it in items]
    P, n = len(items), args.n
    pool, correct, nfe_per_candidate, seconds = candidate_pool(args, items)
    by_verifier = {path: select_with(verifier, pool, correct, items, categories) for path, verifier in
                   verifiers.items()}
    if args.self_verifier:
        times, draws = args.self_verifier
        pipe = load_pipeline(TextToImagePipeline, args.model)
        pipe.set_progress_bar_config(disable=True)
        self_verifier = DiffusionScoreVerifier(pipe, times=times, draws=draws)
        t0 = time.perf_counter()
        # agreement for its ensemble: the headline CLIP's image embeddings
        result = select_with(self_verifier, pool, correct, items, categories,
                             embed=verifiers[args.clip[0]].embed_images)
        by_verifier[f"self:{args.model}"] = {**result, "forward_passes": self_verifier.forward_passes,
                                             "seconds": time.perf_counter() - t0}
    headline = by_verifier[args.clip[0]]
    ks = headline["ks"]
    cats = np.asarray(categories)
    coverage_ks, coverage = coverage_curve(np.full(P, n), correct.sum(1), np.arange(1, n + 1))
    per_cat_coverage = {c: coverage_curve(np.full((cats == c).sum(), n), correct[cats == c].sum(1), ks)[1].tolist()
                        for c in CATEGORIES if (cats == c).any()}
    coverage_geneval = np.mean([per_cat_coverage[c] for c in per_cat_coverage], axis=0)
    try:
        fit = fit_power_law(coverage_ks, coverage)
    except ValueError as err:  # e.g. an untrained model that never passes: nothing to fit
        fit, fit_error = None, str(err)
    nfe = [k * nfe_per_candidate for k in ks]
    expected_clip, expected_ensemble = headline["best_of_n_clip_expected"], headline["best_of_n_ensemble_expected"]
    first_n, tournament = headline["best_of_n_clip_first_n"], headline["tournament_clip_first_n"]
    expected_random = headline["random_pick_expected"]

    result = {
        "settings": {"model": args.model, "clip": args.clip[0], "prompts": P, "per_category": args.per_category,
                     "n": n, "steps": args.steps, "guidance": args.guidance, "seed_rule": "prompt seed + j"},
        "seconds": seconds,
        "nfe_per_candidate": nfe_per_candidate,
        "nfe": nfe,
        **headline,
        "single_sample_accuracy": category_mean(correct[:, 0].astype(float), categories),
        "mean_candidate_accuracy": category_mean(correct.mean(1), categories),
        "coverage_geneval": coverage_geneval.tolist(),
        "coverage_per_category": per_cat_coverage,
        "coverage_pooled_all_k": coverage.tolist(),
        "power_law_fit": ({"a": fit.a, "b": fit.b, "mae": fit.mae, "points_used": fit.used} if fit is not None
                          else {"error": fit_error}),
        "per_category_single": per_category(correct[:, 0].astype(float), categories),
        "verifiers": by_verifier,
    }
    print(f"{P} prompts × {n} candidates, {nfe_per_candidate} NFE each, {seconds / 60:.1f} min of sampling")
    print(f"{'N':>4} {'NFE':>6} {'coverage':>9} {'CLIP best-of-N':>15} {'first-N CLIP':>13} {'tournament':>11} "
          f"{'ensemble':>9}")
    for i, k in enumerate(ks):
        print(f"{k:>4} {nfe[i]:>6} {coverage_geneval[i]:>9.3f} {expected_clip[i]:>15.3f} {first_n[i]:>13.3f} "
              f"{tournament[i]:>11.3f} {expected_ensemble[i]:>9.3f}")
    if fit is not None:
        print(f"power law: coverage ≈ exp({fit.a:.3f}·k^{fit.b:.3f}), mean abs error {fit.mae:.4f}")
    else:
        print(f"power law: not fitted ({fit_error})")
    for path, r in by_verifier.items():
        if r["gain_1_to_16_clip_expected"] is not None:
            print(f"gain N=1 → 16 (best-of-N with {path}, expected): {r['gain_1_to_16_clip_expected']:+.3f} "
                  "(target ≥ +0.10)")
        if r["within_prompt_auc"] is not None:
            print(f"within-prompt AUC of {path} (accepted vs rejected candidates of a prompt; 0.5 = no signal): "
                  f"{r['within_prompt_auc']:.3f}")
    if args.plot_dir:
        out = Path(args.plot_dir)
        plot_scaling(out / "shapes_search_scaling.png", coverage_ks, coverage, fit=fit,
                     title=f"shapes: {P} prompts, n = {n} samples each (pooled)")
        curves = {"coverage (oracle selects)": (nfe, coverage_geneval)}
        for path, r in by_verifier.items():
            label = Path(path).name
            curves[f"best-of-N, {label}"] = (nfe, r["best_of_n_clip_expected"])
            curves[f"best-of-N, {label} + agreement"] = (nfe, r["best_of_n_ensemble_expected"])
        curves["random pick"] = (nfe, expected_random)
        plot_score_vs_nfe(out / "shapes_search_nfe.png", curves, ylabel="oracle accuracy (GenEval-style mean)",
                          title="shapes: accuracy vs NFE per prompt")
    if args.json:
        write_text_atomic(args.json, json.dumps(result, indent=2) + "\n")
    return result


def select_with(verifier, pool: np.ndarray, correct: np.ndarray, items: list[dict], categories: list[str],
                embed=None) -> dict:
    """Every selector's oracle accuracy vs N for one verifier's scores of the candidate pool (the agreement term
    of the ensemble from ``embed(images)``, default the verifier's own ``embed_images``)."""
    P, n = correct.shape
    embed = embed or verifier.embed_images
    clip = np.stack([verifier.score(list(images), {"prompt": item["prompt"]})
                     for images, item in tqdm(list(zip(pool, items)), desc=verifier.name, unit="prompt")])
    agree = np.stack([agreement_scores(embed(list(images))) for images in pool])
    ensemble = np.stack([normalise_scores(c, "rank") + 0.5 * normalise_scores(a, "rank")
                         for c, a in zip(clip, agree, strict=True)])
    ks = [2**i for i in range(int(np.log2(n)) + 1)]
    cats = np.asarray(categories)

    def selection_by_category(scores: np.ndarray) -> list[float]:
        """Expected best-of-k accuracy (random k-subsets of the pool), GenEval-averaged over categories."""
        per_cat = [selection_accuracy(scores[cats == c], correct[cats == c], ks)[1] for c in CATEGORIES
                   if (cats == c).any()]
        return [float(v) for v in np.mean(per_cat, axis=0)]

    expected_clip = selection_by_category(clip)
    expected_ensemble = selection_by_category(ensemble)
    expected_random = selection_by_category(np.zeros_like(clip))  # ties everywhere: a uniform random pick
    first_n, tournament, comparisons, agree_check = [], [], [], True
    for k in ks:
        pick = clip[:, :k].argmax(1)
        first_n.append(category_mean(correct[np.arange(P), pick].astype(float), categories))
        winners = []
        for p in range(P):
            result = knockout_tournament(k, lambda i, j, p=p: int(np.sign(clip[p, i] - clip[p, j])))
            winners.append(result.winners[0])
            comparisons.append(result.comparisons)
        agree_check &= bool(np.array_equal(np.asarray(winners), pick))
        tournament.append(category_mean(correct[np.arange(P), winners].astype(float), categories))
    return {
        "ks": ks,
        "best_of_n_clip_expected": expected_clip,
        "best_of_n_clip_first_n": first_n,
        "tournament_clip_first_n": tournament,
        "tournament_comparisons_total": int(sum(comparisons)),
        "tournament_winner_equals_argmax": agree_check,
        "best_of_n_ensemble_expected": expected_ensemble,
        "random_pick_expected": expected_random,
        "gain_1_to_16_clip_expected": (expected_clip[ks.index(16)] - expected_clip[0]) if 16 in ks else None,
        "within_prompt_auc": within_problem_auc(clip, correct)[0],
        "per_category_best_of_16_clip": (per_category(correct[np.arange(P), clip[:, :16].argmax(1)].astype(float),
                                                      categories) if n >= 16 else None),
    }


if __name__ == "__main__":
    main()
