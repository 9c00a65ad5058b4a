"""pass@k, coverage, the exponentiated power law and selection accuracy against brute force."""

from __future__ import annotations

import itertools
from math import comb

import numpy as np
import pytest

from genmodels.search import (
    coverage_curve,
    fit_power_law,
    pass_at_k,
    plot_scaling,
    selection_accuracy,
    within_problem_auc,
)


def brute_pass_at_k(n: int, c: int, k: int) -> float:
    """Fraction of the k-subsets of n samples (the first c correct) holding a correct one."""
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(i < c for i in s) for s in subsets) / len(subsets)


def test_pass_at_k_matches_enumeration_on_small_n():
    for n in range(1, 8):
        for c in range(n + 1):
            got = pass_at_k(n, c, np.arange(1, n + 1))
            want = [brute_pass_at_k(n, c, k) for k in range(1, n + 1)]
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_pass_at_k_is_vectorised_over_problems():
    n, c = np.array([5, 6, 7]), np.array([0, 2, 7])
    got = pass_at_k(n, c, 3)
    assert got.shape == (3,)
    np.testing.assert_allclose(got, [brute_pass_at_k(5, 0, 3), brute_pass_at_k(6, 2, 3), 1.0], atol=1e-12)
    assert pass_at_k(n, c, [1, 2]).shape == (3, 2)


def test_pass_at_k_is_stable_for_large_n():
    # C(n-1, k) / C(n, k) = (n - k) / n, so one correct sample in n gives pass@k = k / n exactly
    assert pass_at_k(10_000, 1, 100) == pytest.approx(0.01, abs=1e-12)
    assert pass_at_k(10_000, 0, 5_000) == 0.0
    assert pass_at_k(10_000, 9_999, 2) == pytest.approx(1.0, abs=1e-15)
    expect = 1 - comb(10_000 - 30, 50) / comb(10_000, 50)
    assert pass_at_k(10_000, 30, 50) == pytest.approx(expect, rel=1e-10)


@pytest.mark.parametrize("n, c, k", [(5, 6, 1), (5, -1, 1), (5, 2, 0), (5, 2, 6)])
def test_pass_at_k_rejects_impossible_counts(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_coverage_curve_is_the_mean_over_problems():
    ks, cov = coverage_curve([4, 4], [1, 0])
    assert list(ks) == [1, 2, 3, 4]
    np.testing.assert_allclose(cov, [0.125, 0.25, 0.375, 0.5])


def test_power_law_fit_recovers_known_parameters():
    ks = np.unique(np.geomspace(1, 10_000, 100).round())
    fit = fit_power_law(ks, np.exp(-1.3 * ks ** -0.4))
    assert fit.a == pytest.approx(-1.3, rel=1e-9) and fit.b == pytest.approx(-0.4, rel=1e-9)
    assert fit.mae < 1e-12 and fit.used == len(ks)


def test_power_law_fit_skips_coverage_of_zero_and_one():
    ks = np.arange(1, 21, dtype=float)
    cov = np.exp(-2.0 * ks ** -0.7)
    fit = fit_power_law(np.r_[ks, 40.0, 0.5], np.r_[cov, 1.0, 0.0])
    assert fit.a == pytest.approx(-2.0, rel=1e-9) and fit.b == pytest.approx(-0.7, rel=1e-9)
    assert fit.used == 20
    # the excluded points still count in the error: |exp(-2·40^-0.7) − 1| and |exp(-2·0.5^-0.7) − 0|
    want = (abs(np.exp(-2 * 40 ** -0.7) - 1) + np.exp(-2 * 0.5 ** -0.7)) / 22
    assert fit.mae == pytest.approx(want, rel=1e-9)
    with pytest.raises(ValueError, match="two or more"):
        fit_power_law([1, 2, 3], [0.0, 0.5, 1.0])


def brute_selection(scores: np.ndarray, correct: np.ndarray, k: int) -> float:
    """Mean over problems and k-subsets of the correctness of the subset's best (ties: averaged)."""
    total = 0.0
    for s, ok in zip(scores, correct):
        subsets = list(itertools.combinations(range(len(s)), k))
        for sub in subsets:
            best = max(s[i] for i in sub)
            tied = [i for i in sub if s[i] == best]
            total += np.mean([ok[i] for i in tied]) / len(subsets)
    return total / len(scores)


def test_selection_accuracy_is_exact_with_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 3, size=(5, 7)).astype(float)  # few values: many ties
    correct = rng.random((5, 7)) < 0.4
    ks, acc = selection_accuracy(scores, correct)
    np.testing.assert_allclose(acc, [brute_selection(scores, correct, k) for k in ks], atol=1e-12)
    assert acc[0] == pytest.approx(correct.mean())


def test_perfect_verifier_selection_equals_coverage():
    rng = np.random.default_rng(1)
    correct = rng.random((6, 8)) < 0.3
    _, acc = selection_accuracy(correct.astype(float) + rng.random((6, 8)) * 0.1, correct)
    _, cov = coverage_curve(np.full(6, 8), correct.sum(1))
    np.testing.assert_allclose(acc, cov, atol=1e-12)


def test_within_problem_auc_compares_candidates_of_the_same_problem_only():
    correct = np.array([[1, 0, 0, 1], [0, 0, 0, 0], [1, 0, 1, 0]], bool)
    perfect = correct + 0.1 * np.arange(4)  # every correct candidate above every wrong one
    assert within_problem_auc(perfect, correct) == (1.0, 2)  # the all-wrong problem has no pairs
    assert within_problem_auc(-perfect, correct) == (0.0, 2)
    assert within_problem_auc(np.zeros((3, 4)), correct) == (0.5, 2)  # ties: no signal
    # a score that only tracks the problem (higher on problem 0) says nothing within a problem
    assert within_problem_auc(np.array([[5.0] * 4, [1.0] * 4, [0.0] * 4]), correct)[0] == 0.5
    # problem 0: correct {0: 1.0, 3: 0.2} vs wrong {1: 0.5, 2: 0.1} → 3 of 4 pairs; problem 2: 2 of 4
    scores = np.array([[1.0, 0.5, 0.1, 0.2], [0, 0, 0, 0], [0.1, 0.9, 0.2, 0.0]])
    assert within_problem_auc(scores, correct) == (pytest.approx((0.75 + 0.5) / 2), 2)
    assert within_problem_auc(np.zeros((1, 3)), np.zeros((1, 3), bool)) == (None, 0)
    with pytest.raises(ValueError):
        within_problem_auc(np.zeros((2, 3)), np.zeros((3, 2), bool))


def test_plot_scaling_writes_a_png(tmp_path):
    ks = np.arange(1, 9)
    cov = np.exp(-1.0 * ks ** -0.5)
    path = plot_scaling(tmp_path / "scaling.png", ks, cov, fit=fit_power_law(ks, cov),
                        selection={"argmax": cov * 0.8})
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
