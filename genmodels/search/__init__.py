"""Test-time search for any generator of this project: repeated sampling, verifiers, selectors, Tree-of-Frames.

Three parts (``/work/shared/reference/test_time_search.md``): a seeded, batched **generator** (``sampling``: a
generate fn ``seeds -> (outputs, nfe)``; ``tree_of_frames.UnitGenerator`` for unit-by-unit generation), a
**verifier** (``verifiers``: ``score`` / ``compare``) and a **search** (``run_search``: ``"none"``,
``"best-of-n"``, ``"tournament"``, ``"tree-of-frames"``). NFE (denoiser evaluations, summed over all candidates) is
recorded for every result; ``scaling`` turns per-candidate correctness and scores into pass@k, power-law fits and
selection-accuracy curves. ``video`` holds the text-to-video adapters (generate fn, chunk generator, verifiers).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from genmodels.search.sampling import (
    Candidates,
    GenerateFn,
    generators,
    pianoroll_generate_fn,
    sample_candidates,
    text_to_image_generate_fn,
)
from genmodels.search.scaling import (
    PowerLawFit,
    best_so_far,
    coverage_curve,
    fit_power_law,
    pass_at_k,
    plot_scaling,
    plot_score_vs_nfe,
    selection_accuracy,
    within_problem_auc,
)
from genmodels.search.selectors import (
    TournamentResult,
    agreement_scores,
    knockout_tournament,
    pixel_features,
    select_argmax,
    select_majority,
    select_top_k,
    tournament_select,
)
from genmodels.search.tree_of_frames import (
    PianoRollBarGenerator,
    PreviewingUnitGenerator,
    RollState,
    TreeConfig,
    TreeResult,
    UnitBatch,
    UnitGenerator,
    default_stage,
    motion_from_start_stage,
    prune_at_median,
    tree_of_frames,
)
from genmodels.search.verifiers import (
    AgreementVerifier,
    BusynessVerifier,
    CLIPScoreVerifier,
    DiffusionScoreVerifier,
    EnsembleVerifier,
    InKeyVerifier,
    OnsetGridVerifier,
    ShapesOracleVerifier,
    StagedVerifier,
    Verifier,
    normalise_scores,
)
from genmodels.search.video import (
    DRAFT_FRACTION,
    TREE_DRAFT_EXTEND,
    TREE_EXTEND_FRACTION,
    TREE_FIRST_STAGE,
    TREE_FIRST_STAGES,
    TREE_GROW_UNITS,
    TREE_SCREEN,
    TREE_UNITS,
    CLIPVideoVerifier,
    VideoChunkGenerator,
    VideoOracleVerifier,
    direction_agreement,
    draft_steps,
    drafts_drawn_in_full,
    object_description,
    pixel_path_consistency,
    text_to_video_generate_fn,
    tree_extend_steps,
    tree_frames_per_unit,
    tree_seed_budget,
    video_tree_config,
)

STRATEGIES = ("none", "best-of-n", "tournament", "tree-of-frames")


@dataclass
class SearchResult:
    """One search's outcome.

    ``output``: the chosen output; ``index``: its position among the candidates (leaves for the tree); ``seed``:
    its seed (None for the tree, whose outputs come from several); ``scores``: ``[N]`` verifier scores of the
    candidates / leaves (empty without a verifier); ``nfe``: denoiser evaluations over everything generated;
    ``nfe_per_candidate``: ``[N]`` (None for the tree); ``comparisons``: tournament matches; ``seconds``: wall time
    including verification; ``candidates`` / ``tree``: the full record. With drafts (``run_search(final_fn=…)``)
    the candidates are the drafts; ``final_seeds`` the best drafts' seeds drawn in full, ``final_scores`` their
    verifier scores, ``output`` the best of those full draws (``index`` / ``seed``: its draft), and ``nfe``
    includes the full draws (``final_nfe``).
    """

    strategy: str
    output: Any
    index: int
    seed: int | None
    scores: np.ndarray
    nfe: int
    nfe_per_candidate: np.ndarray | None
    comparisons: int
    seconds: float
    candidates: Candidates | None = None
    tree: TreeResult | None = None
    final_nfe: int = 0
    final_seeds: list[int] | None = None
    final_scores: np.ndarray | None = None


def _compare_by_cached_scores(verifier: Verifier, scores: np.ndarray, outputs: list, context: Mapping):
    """The tournament's judge: the verifier's own ``compare`` when it overrides the default, otherwise the sign
    of the already computed score difference (the same answer without scoring twice)."""
    if type(verifier).compare is not Verifier.compare:
        return lambda i, j: verifier.compare(outputs[i], outputs[j], context)
    return lambda i, j: int(np.sign(scores[i] - scores[j]))


def run_search(strategy: str, *, verifier: Verifier | None = None, context: Mapping | None = None,
               generate_fn: GenerateFn | None = None, n: int = 1, seeds: Sequence[int] | None = None,
               batch_size: int | None = None, unit_generator: UnitGenerator | None = None,
               tree_config: TreeConfig | None = None, seed: int = 0,
               stage_fn: Callable[[int, int], str] | None = None,
               final_fn: GenerateFn | None = None, final_k: int = 1) -> SearchResult:
    """Dispatch one search.

    - ``"none"``: one sample (``seeds[0]``, default ``seed``) from ``generate_fn``; scored when a verifier is given.
    - ``"best-of-n"``: ``n`` samples (``seeds``, default ``seed .. seed + n − 1``), the verifier's argmax.
    - ``"tournament"``: the same ``n`` samples, a knockout bracket judged by the verifier (``n − 1`` comparisons).
    - ``"tree-of-frames"``: ``unit_generator`` searched with ``tree_config`` from ``seed`` (verifier stages from
      ``stage_fn``, default :func:`default_stage`).

    ``final_fn`` (best-of-n and tournament): ``generate_fn`` then draws cheap **drafts** (e.g. the same pipeline at
    a few denoising steps), the selection runs on them, and the chosen seed is drawn again by ``final_fn`` (full
    steps) as the output; a deterministic sampler from the same noise lands near its draft, so N drafts screen N
    seeds for a fraction of N full draws. best-of-n with ``final_k`` > 1 draws the ``final_k`` best drafts' seeds
    in full (one batched call) and keeps the verifier's best of those, which forgives a draft that misranks.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown search strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    if final_fn is not None and strategy not in ("best-of-n", "tournament"):
        raise ValueError(f"final_fn (drafts, then the chosen seed in full) is for best-of-n and tournament, not "
                         f"{strategy}")
    if isinstance(final_k, bool) or not isinstance(final_k, (int, np.integer)) or final_k < 1 \
            or (final_k > 1 and (final_fn is None or strategy != "best-of-n")):
        raise ValueError(f"final_k must be a positive integer, above 1 only for best-of-n with final_fn, got "
                         f"{final_k!r}")
    context = dict(context or {})
    t0 = time.perf_counter()
    if strategy == "tree-of-frames":
        if unit_generator is None or tree_config is None or verifier is None:
            raise ValueError("tree-of-frames needs unit_generator, tree_config and verifier")
        tree = tree_of_frames(unit_generator, verifier, tree_config, context=context, seed=seed,
                              stage_fn=stage_fn or default_stage)
        return SearchResult(strategy, tree.output, tree.best, None, tree.leaf_scores, tree.nfe, None, 0,
                            time.perf_counter() - t0, tree=tree)
    if generate_fn is None:
        raise ValueError(f"{strategy} needs generate_fn (seeds -> (outputs, nfe))")
    if strategy == "none":
        n = 1
    elif verifier is None:
        raise ValueError(f"{strategy} needs a verifier")
    seeds = list(range(seed, seed + n)) if seeds is None else list(seeds)[:n]
    cands = sample_candidates(generate_fn, n, seeds, batch_size)
    scores = verifier.score(cands.outputs, context) if verifier is not None else np.zeros(0)
    comparisons = 0
    if strategy == "tournament":
        result = knockout_tournament(n, _compare_by_cached_scores(verifier, scores, cands.outputs, context))
        index, comparisons = result.winners[0], result.comparisons
    else:
        index = select_argmax(scores) if strategy == "best-of-n" else 0
    output, final_nfe, final_seeds, final_scores = cands.outputs[index], 0, None, None
    if final_fn is not None:
        # the final_k best drafts (ties: the earlier seed), in seed order; with one, the selection's own pick
        top = [index] if final_k == 1 else select_top_k(scores, final_k)
        final_seeds = [cands.seeds[i] for i in top]
        outputs, nfe = final_fn(final_seeds)
        outputs = list(outputs)
        if len(outputs) != len(top):
            raise ValueError(f"final_fn returned {len(outputs)} outputs for {len(top)} seeds")
        final_scores = verifier.score(outputs, context) if len(top) > 1 else np.zeros(1)
        best = select_argmax(final_scores) if len(top) > 1 else 0
        index, output, final_nfe = top[best], outputs[best], int(nfe) * len(top)
    return SearchResult(strategy, output, index, cands.seeds[index], scores, cands.total_nfe + final_nfe,
                        cands.nfe, comparisons, time.perf_counter() - t0, candidates=cands, final_nfe=final_nfe,
                        final_seeds=final_seeds, final_scores=final_scores)


__all__ = [
    "STRATEGIES",
    "AgreementVerifier",
    "BusynessVerifier",
    "CLIPScoreVerifier",
    "CLIPVideoVerifier",
    "Candidates",
    "DiffusionScoreVerifier",
    "EnsembleVerifier",
    "GenerateFn",
    "InKeyVerifier",
    "OnsetGridVerifier",
    "PianoRollBarGenerator",
    "PreviewingUnitGenerator",
    "PowerLawFit",
    "RollState",
    "SearchResult",
    "ShapesOracleVerifier",
    "StagedVerifier",
    "TournamentResult",
    "TreeConfig",
    "TreeResult",
    "UnitBatch",
    "UnitGenerator",
    "Verifier",
    "VideoChunkGenerator",
    "VideoOracleVerifier",
    "agreement_scores",
    "best_so_far",
    "coverage_curve",
    "default_stage",
    "motion_from_start_stage",
    "direction_agreement",
    "fit_power_law",
    "generators",
    "knockout_tournament",
    "normalise_scores",
    "object_description",
    "pass_at_k",
    "pianoroll_generate_fn",
    "pixel_features",
    "pixel_path_consistency",
    "plot_scaling",
    "plot_score_vs_nfe",
    "prune_at_median",
    "run_search",
    "sample_candidates",
    "select_argmax",
    "select_top_k",
    "select_majority",
    "selection_accuracy",
    "text_to_image_generate_fn",
    "text_to_video_generate_fn",
    "tournament_select",
    "tree_of_frames",
    "tree_seed_budget",
    "video_tree_config",
    "TREE_EXTEND_FRACTION",
    "TREE_FIRST_STAGE",
    "DRAFT_FRACTION",
    "TREE_DRAFT_EXTEND",
    "TREE_SCREEN",
    "TREE_FIRST_STAGES",
    "TREE_GROW_UNITS",
    "TREE_UNITS",
    "draft_steps",
    "drafts_drawn_in_full",
    "tree_extend_steps",
    "tree_frames_per_unit",
    "within_problem_auc",
]
