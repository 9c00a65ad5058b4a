"""Repeated-sampling scaling (Large Language Monkeys): pass@k, coverage, the exponentiated power law, selection.

- ``pass_at_k(n, c, k)``: the unbiased estimator ``1 − C(n − c, k) / C(n, k)`` per problem, from n samples of which
  c are correct, as a product of ratios in log space (``log_comb_ratio``), so n in the thousands is fine;
- ``coverage_curve``: its mean over problems for k = 1..n;
- ``fit_power_law``: coverage ≈ exp(a·k^b) (a < 0, b < 0) by least squares on log(−log c) = log(−a) + b·log k;
- ``selection_accuracy``: expected accuracy of picking the verifier's argmax among k random candidates, exactly;
- ``within_problem_auc``: whether the verifier's scores separate a problem's correct candidates from its wrong ones;
- ``plot_scaling`` / ``plot_score_vs_nfe``: matplotlib figures (Agg backend), log-x.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def log_comb_ratio(m: int, n: int, ks) -> np.ndarray:
    """``log(C(m, k) / C(n, k))`` for integers 0 ≤ m ≤ n and each k of ``ks`` ``[K]`` (0 ≤ k ≤ n); −inf where k > m.

    The running sum of ``log((m − j) / (n − j)) = log1p(−(n − m) / (n − j))`` over j < k: every term is accurate
    to rounding, so the ratio is exact to ~k ulps even where the binomials themselves overflow (n = 10,000).
    """
    ks = np.asarray(ks, dtype=np.int64)
    j = np.arange(int(ks.max(initial=0)))
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(j < m, np.log1p(-(n - m) / (n - j)), -np.inf)
    return np.concatenate([[0.0], np.cumsum(terms)])[ks]


def _check_counts(n, c) -> tuple[np.ndarray, np.ndarray]:
    n, c = np.broadcast_arrays(np.asarray(n), np.asarray(c))
    if not (np.issubdtype(n.dtype, np.integer) and np.issubdtype(c.dtype, np.integer)) \
            and not (np.all(n == np.round(n)) and np.all(c == np.round(c))):
        raise ValueError("n and c must be integer counts")
    if np.any(n < 1) or np.any(c < 0) or np.any(c > n):
        raise ValueError("need n >= 1 samples and 0 <= c <= n correct per problem")
    return n.astype(np.int64), c.astype(np.int64)


def pass_at_k(n, c, k) -> np.ndarray:
    """Unbiased pass@k per problem: ``1 − C(n − c, k) / C(n, k)``.

    ``n``, ``c``: samples and correct samples per problem, ``[P]`` (or scalars, broadcast); ``k``: an int or
    ``[K]`` ints with 1 ≤ k ≤ min(n). Returns ``[P]`` for a scalar k, ``[P, K]`` for a vector (float64 in [0, 1]).
    Computed as ``−expm1(log_comb_ratio(n − c, n, k))``: accurate for any n.
    """
    n, c = _check_counts(n, c)
    k_arr = np.asarray(k)
    ks = np.atleast_1d(k_arr).astype(np.int64)
    if np.any(ks < 1) or np.any(ks > n.min(initial=np.iinfo(np.int64).max)):
        raise ValueError(f"k must lie in 1..n (n = {n.min()}), got {k}")
    out = np.stack([0.0 - np.expm1(log_comb_ratio(int(ni - ci), int(ni), ks))
                    for ni, ci in zip(n.ravel(), c.ravel())]).reshape(*n.shape, len(ks))
    return out[..., 0] if k_arr.ndim == 0 else out


def coverage_curve(n, c, ks: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Coverage vs k: ``(ks [K], mean over problems of pass@k [K])``; ``ks`` defaults to 1..min(n)."""
    n, c = _check_counts(n, c)
    ks = np.arange(1, int(n.min()) + 1) if ks is None else np.asarray(ks, dtype=np.int64)
    return ks, np.atleast_2d(pass_at_k(n, c, ks)).reshape(-1, len(ks)).mean(0)


# Exponentiated power law


@dataclass(frozen=True)
class PowerLawFit:
    """``coverage(k) ≈ exp(a · k^b)``; ``mae``: mean |fit − coverage| over all given points; ``used``: points with
    0 < coverage < 1 that entered the least-squares fit."""

    a: float
    b: float
    mae: float
    used: int

    def __call__(self, k) -> np.ndarray:
        """Fitted coverage at ``k`` (array-like, samples)."""
        return np.exp(self.a * np.asarray(k, dtype=np.float64) ** self.b)


def fit_power_law(ks: Sequence[float], coverage: Sequence[float]) -> PowerLawFit:
    """Least-squares fit of ``log(−log c) = log(−a) + b · log k`` (Large Language Monkeys' recipe).

    Points with c = 1 (log(−log c) = −inf) or c = 0 (+inf) carry no finite information on the log-log scale and
    are left out of the fit (they still count in ``mae``); at least two distinct k with 0 < c < 1 are needed.
    """
    ks = np.asarray(ks, dtype=np.float64)
    cov = np.asarray(coverage, dtype=np.float64)
    if ks.shape != cov.shape or ks.ndim != 1 or np.any(ks <= 0):
        raise ValueError("ks and coverage must be [K] vectors of the same length, ks > 0")
    if np.any((cov < 0) | (cov > 1)) or not np.isfinite(cov).all():
        raise ValueError("coverage values must lie in [0, 1]")
    use = (cov > 0) & (cov < 1)
    if np.unique(ks[use]).size < 2:
        raise ValueError("need coverage strictly between 0 and 1 at two or more distinct k to fit exp(a k^b)")
    x, y = np.log(ks[use]), np.log(-np.log(cov[use]))
    b, intercept = np.polyfit(x, y, 1)
    a = -float(np.exp(intercept))
    fit = PowerLawFit(a=a, b=float(b), mae=0.0, used=int(use.sum()))
    return PowerLawFit(a=a, b=float(b), mae=float(np.mean(np.abs(fit(ks) - cov))), used=fit.used)


# Selection


def selection_accuracy(scores, correct, ks: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Expected accuracy of best-of-k selection: draw k of the n candidates uniformly without replacement, keep the
    highest verifier score (ties broken uniformly at random), count it if it is correct; mean over problems.

    ``scores``, ``correct``: ``[P, n]`` (verifier score and ground truth per candidate). Exact: sorting a problem's
    candidates into groups of equal score, the subset's best score lies in the group with h candidates above it
    and g in it with probability ``(C(n − h, k) − C(n − h − g, k)) / C(n, k)``, and then every member of the group
    is equally likely to be picked, so the group contributes that probability × its fraction correct.
    Returns ``(ks [K], accuracy [K])``; ``ks`` defaults to 1..n. At k = n this is the accuracy of the argmax, at
    k = 1 the mean correctness; compare with ``coverage_curve`` (the pass@k an oracle selector would reach).
    """
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    correct = np.atleast_2d(np.asarray(correct, dtype=np.float64))
    if scores.shape != correct.shape:
        raise ValueError(f"scores {list(scores.shape)} and correct {list(correct.shape)} must both be [P, n]")
    n = scores.shape[1]
    ks = np.arange(1, n + 1) if ks is None else np.asarray(ks, dtype=np.int64)
    if np.any(ks < 1) or np.any(ks > n):
        raise ValueError(f"k must lie in 1..{n}")
    acc = np.zeros(len(ks))
    for s, ok in zip(scores, correct):
        values, inverse = np.unique(-s, return_inverse=True)  # groups by descending score
        sizes = np.bincount(inverse, minlength=len(values))
        hits = np.bincount(inverse, weights=ok, minlength=len(values))
        above = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        p_group = np.stack([np.exp(log_comb_ratio(n - h, n, ks)) - np.exp(log_comb_ratio(n - h - g, n, ks))
                            for h, g in zip(above, sizes)])  # [groups, K]
        acc += (p_group * (hits / sizes)[:, None]).sum(0)
    return ks, acc / len(scores)


def within_problem_auc(scores, correct) -> tuple[float | None, int]:
    """How well a verifier separates the correct candidates of a problem from its wrong ones: the probability
    that a random correct candidate outscores a random wrong one of the **same** problem (ties count ½),
    averaged over the problems that have both kinds. 0.5 is a verifier with no signal (best-of-N then stays at
    the single-sample accuracy whatever N), 1 a perfect one. Returns ``(mean AUC or None, problems used)``."""
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    correct = np.atleast_2d(np.asarray(correct, dtype=bool))
    if scores.shape != correct.shape:
        raise ValueError(f"scores {list(scores.shape)} and correct {list(correct.shape)} must both be [P, n]")
    aucs = []
    for s, ok in zip(scores, correct):
        pos, neg = s[ok][:, None], s[~ok][None, :]
        if pos.size and neg.size:
            aucs.append(float((pos > neg).mean() + 0.5 * (pos == neg).mean()))
    return (float(np.mean(aucs)) if aucs else None), len(aucs)


# Plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _plain_log_ticks(axis) -> None:
    """Ticks at 1, 2 and 5 × 10^k labelled as plain numbers (20, 50, 100) on a log axis; matplotlib's default
    labels every minor tick of a short range as 2×10^1, 3×10^1, … and they run into each other."""
    from matplotlib.ticker import LogLocator, NullFormatter, StrMethodFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(StrMethodFormatter("{x:g}"))
    axis.set_minor_formatter(NullFormatter())


def _finish(plt, fig, ax, path: str | Path) -> Path:
    """Grid, legend, tight layout; the PNG written atomically; the figure closed."""
    from genmodels.io import atomic_path

    if ax.get_xscale() == "log":
        _plain_log_ticks(ax.xaxis)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(path)


def plot_scaling(path: str | Path, ks, coverage, *, fit: PowerLawFit | None = None,
                 selection: Mapping[str, Sequence[float]] | None = None, title: str = "repeated sampling") -> Path:
    """Coverage (pass@k), its power-law fit and selection accuracy (one curve per selector) vs k, log-x; PNG."""
    plt = _pyplot()
    ks = np.asarray(ks, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot(ks, coverage, "o-", ms=3, label="coverage (pass@k)")
    if fit is not None:
        dense = np.geomspace(ks.min(), ks.max(), 200)
        ax.plot(dense, fit(dense), "--", label=f"exp({fit.a:.3g}·k^{fit.b:.3g}), mae {fit.mae:.3g}")
    for name, acc in (selection or {}).items():
        ax.plot(ks, acc, "s-", ms=3, label=f"selection: {name}")
    ax.set(xscale="log", xlabel="k (samples)", ylabel="fraction of problems", ylim=(0, 1.02), title=title)
    return _finish(plt, fig, ax, path)


def best_so_far(scores: np.ndarray) -> np.ndarray:
    """Running maximum along the last axis: ``[..., N]`` → best score among the first m candidates, m = 1..N."""
    return np.maximum.accumulate(np.asarray(scores, dtype=np.float64), axis=-1)


def plot_score_vs_nfe(path: str | Path, curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], *,
                      ylabel: str = "best verifier score", title: str = "score vs NFE") -> Path:
    """One line per search (``name -> (nfe [M], score [M])``), NFE on a log axis; PNG written atomically."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for name, (nfe, score) in curves.items():
        ax.plot(np.asarray(nfe, dtype=np.float64), score, "o-", ms=3, label=name)
    ax.set(xscale="log", xlabel="NFE (denoiser evaluations, all candidates)", ylabel=ylabel, title=title)
    return _finish(plt, fig, ax, path)
