"""Selectors: pick the output among N scored or compared candidates.

- ``select_argmax(scores)``: the best score (first on ties); ``select_top_k(scores, k)``: the k best, in order;
- ``select_majority(features)``: self-consistency, the candidate most similar on average to the others;
- ``knockout_tournament(n, compare, k)``: SANA-1.5's bracket, pairs (i, i+1), the winner of each pair advances,
  byes for an odd one out, until ``k`` survive: exactly N − k comparisons.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


def select_argmax(scores: Sequence[float]) -> int:
    """Index of the highest of ``scores`` ``[N]`` (the first on ties)."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1 or not len(scores):
        raise ValueError(f"scores must be a non-empty [N] vector, got shape {list(scores.shape)}")
    return int(np.argmax(scores))


def select_top_k(scores: Sequence[float], k: int) -> list[int]:
    """Indices of the ``k`` highest of ``scores`` (the earlier on ties), ascending: the drafts a search draws in
    full. ``k`` = 1 gives ``[select_argmax(scores)]``."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    return sorted(order[:k].tolist())


# Agreement


def pixel_features(images: Sequence[Any]) -> np.ndarray:
    """Images (uint8 ``[H, W, 3]``) → ``[N, H·W·3]`` float64 features in [−1, 1], centred per pixel over the batch
    (so the shared background does not make every pair look alike)."""
    from genmodels.search.verifiers import images_to_uint8

    x = images_to_uint8(images).reshape(len(images), -1).astype(np.float64) / 127.5 - 1
    return x - x.mean(0, keepdims=True)


def agreement_scores(features: np.ndarray) -> np.ndarray:
    """``[N]`` mean cosine similarity of each row of ``features`` ``[N, D]`` to the other rows (0 for N = 1 and
    for zero rows)."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2:
        raise ValueError(f"features must be [N, D], got shape {list(f.shape)}")
    n = len(f)
    if n < 2:
        return np.zeros(n)
    norms = np.linalg.norm(f, axis=1, keepdims=True)
    unit = np.divide(f, norms, out=np.zeros_like(f), where=norms > 0)
    sim = unit @ unit.T
    return (sim.sum(1) - np.diag(sim)) / (n - 1)


def select_majority(outputs: Sequence[Any], feature_fn: Callable[[Sequence[Any]], np.ndarray] = pixel_features
                    ) -> tuple[int, np.ndarray]:
    """Majority-style agreement: the candidate whose features are, on average, most cosine-similar to the others'
    (the continuous analogue of majority voting). Returns (index, agreement scores ``[N]``)."""
    scores = agreement_scores(feature_fn(outputs))
    return select_argmax(scores), scores


# Knockout tournament


@dataclass
class TournamentResult:
    """``winners``: indices of the ``k`` survivors in bracket order; ``comparisons``: ``compare`` calls made
    (N − k); ``rounds``: the indices alive at the start of each round, then the survivors."""

    winners: list[int]
    comparisons: int
    rounds: list[list[int]]


def knockout_tournament(n: int, compare: Callable[[int, int], int], k: int = 1) -> TournamentResult:
    """SANA-1.5 knockout over candidates ``0..n-1``: each round pairs alive entrants (i, i+1) in order,
    ``compare(i, j) >= 0`` sends ``i`` on (ties favour the earlier entrant), ``< 0`` sends ``j``; an odd entrant
    out gets a bye. Rounds repeat until ``k`` remain; in the last round only as many matches are played as needed
    to reach ``k`` (the rest get byes), so a non-power-of-two ``n`` works and the count is exactly ``n − k``.

    With a ``compare`` consistent with a score (sign of the difference), the single winner is the argmax (the
    earliest among equals) and the ``k`` survivors are not necessarily the top k (a bracket is not a sort).
    """
    if n < 1 or not 1 <= k <= n:
        raise ValueError(f"need n >= 1 candidates and 1 <= k <= n survivors, got n = {n}, k = {k}")
    alive = list(range(n))
    rounds = [alive]
    comparisons = 0
    while len(alive) > k:
        matches = min(len(alive) // 2, len(alive) - k)
        advancing = []
        for m in range(matches):
            i, j = alive[2 * m], alive[2 * m + 1]
            advancing.append(i if compare(i, j) >= 0 else j)
            comparisons += 1
        alive = advancing + alive[2 * matches:]
        rounds.append(alive)
    assert comparisons == n - k, (comparisons, n, k)  # each match knocks out exactly one entrant
    return TournamentResult(winners=alive, comparisons=comparisons, rounds=rounds)


def tournament_select(outputs: Sequence[Any], verifier, context: dict | None = None, k: int = 1
                      ) -> TournamentResult:
    """``knockout_tournament`` over ``outputs`` judged by ``verifier.compare(a, b, context)``."""
    outputs = list(outputs)
    return knockout_tournament(len(outputs), lambda i, j: verifier.compare(outputs[i], outputs[j], context), k)
