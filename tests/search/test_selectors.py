"""Argmax, agreement and the knockout tournament."""

from __future__ import annotations

import numpy as np
import pytest

from genmodels.search import (
    agreement_scores,
    knockout_tournament,
    select_argmax,
    select_majority,
    tournament_select,
)
from genmodels.search.verifiers import Verifier


def counting_compare(scores):
    calls = []

    def compare(i, j):
        calls.append((i, j))
        return int(np.sign(scores[i] - scores[j]))

    return compare, calls


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7, 8, 13, 16, 17])
def test_single_winner_takes_n_minus_1_comparisons_and_is_the_argmax(n):
    rng = np.random.default_rng(n)
    scores = rng.integers(0, 4, size=n).astype(float)  # ties included
    compare, calls = counting_compare(scores)
    result = knockout_tournament(n, compare)
    assert result.comparisons == len(calls) == n - 1
    assert result.winners == [select_argmax(scores)]  # the earliest of the best, like argmax
    assert result.rounds[0] == list(range(n)) and result.rounds[-1] == result.winners


@pytest.mark.parametrize("n, k", [(8, 4), (6, 4), (7, 2), (5, 5), (2048, 4)])
def test_top_k_survivors_take_n_minus_k_comparisons(n, k):
    scores = np.random.default_rng(0).random(n)
    compare, calls = counting_compare(scores)
    result = knockout_tournament(n, compare, k=k)
    assert len(result.winners) == k and len(set(result.winners)) == k
    assert result.comparisons == len(calls) == n - k
    assert int(np.argmax(scores)) in result.winners


def test_power_of_two_bracket_pairs_neighbours():
    scores = np.array([3.0, 1.0, 0.0, 2.0, 5.0, 4.0, 6.0, 7.0])
    compare, calls = counting_compare(scores)
    result = knockout_tournament(8, compare, k=4)
    assert calls == [(0, 1), (2, 3), (4, 5), (6, 7)]
    assert result.winners == [0, 3, 4, 7] and len(result.rounds) == 2


def test_odd_entrant_gets_a_bye():
    scores = np.array([0.0, 1.0, 2.0])
    compare, calls = counting_compare(scores)
    assert knockout_tournament(3, compare).winners == [2]
    assert calls == [(0, 1), (1, 2)]


def test_tournament_select_uses_the_verifier_compare():
    class Pairwise(Verifier):
        def _score(self, outputs, context):
            return [-abs(o - context["target"]) for o in outputs]

    result = tournament_select([10, 3, 7, 5, 8], Pairwise(), {"target": 6}, k=1)
    # (10, 3) -> 3; (7, 5) tie at distance 1 -> 7, the earlier; 8 has a bye; (3, 7) -> 7; (7, 8) -> 7
    assert result.winners == [2] and result.comparisons == 4


def test_agreement_picks_the_consensus_not_the_outlier():
    base = np.random.default_rng(0).normal(size=16)
    features = np.stack([base + 0.1 * np.random.default_rng(i).normal(size=16) for i in range(4)] + [-base])
    scores = agreement_scores(features)
    assert scores.shape == (5,) and int(np.argmin(scores)) == 4
    assert agreement_scores(features[:1]).tolist() == [0.0]


def test_majority_on_pixels_picks_one_of_the_majority():
    img = np.zeros((8, 8, 3), np.uint8)
    red, blue = img.copy(), img.copy()
    red[2:6, 2:6] = (255, 0, 0)
    blue[:, :4] = (0, 0, 255)
    index, scores = select_majority([red, blue, red, red])
    assert index in (0, 2, 3) and scores[1] < scores[0]
