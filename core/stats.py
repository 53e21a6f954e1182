"""Statistics that make a comparison hold up: bootstrap intervals, paired tests, seed variance.

Plain Python and NumPy, seeded, so every number on a results page can be recomputed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    n: int


def bootstrap_ci(values, confidence: float = 0.95, resamples: int = 10_000, seed: int = 0) -> Interval:
    """Percentile bootstrap interval of the mean."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        raise ValueError("no values")
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(resamples, data.size))].mean(axis=1)
    tail = (1 - confidence) / 2
    return Interval(float(data.mean()), float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail)),
                    int(data.size))


@dataclass(frozen=True)
class McNemar:
    only_a: int  # pairs right under A only
    only_b: int  # pairs right under B only
    statistic: float | None  # chi-square with continuity correction; None when the exact test is used
    p_value: float
    exact: bool
    accuracy_a: float
    accuracy_b: float

    @property
    def difference(self) -> float:
        """Accuracy of B minus accuracy of A, the effect size in points of accuracy."""
        return self.accuracy_b - self.accuracy_a

    @property
    def odds_ratio(self) -> float:
        """only_b / only_a among discordant pairs (inf when A is never right alone)."""
        return math.inf if self.only_a == 0 else self.only_b / self.only_a


def mcnemar(correct_a, correct_b, exact_below: int = 25) -> McNemar:
    """McNemar's test on paired right/wrong outcomes: exact binomial for few discordant pairs, else chi-square."""
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape or a.size == 0:
        raise ValueError("McNemar needs two equally long, non-empty paired outcome lists")
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    discordant = only_a + only_b
    if discordant == 0:
        p, statistic, exact = 1.0, None, True
    elif discordant < exact_below:
        tail = sum(math.comb(discordant, k) for k in range(min(only_a, only_b) + 1)) / 2 ** discordant
        p, statistic, exact = min(1.0, 2 * tail), None, True
    else:
        statistic = (abs(only_a - only_b) - 1) ** 2 / discordant
        p, exact = math.erfc(math.sqrt(statistic / 2)), False  # chi-square survival, 1 degree of freedom
    return McNemar(only_a, only_b, statistic, p, exact, float(a.mean()), float(b.mean()))


@dataclass(frozen=True)
class PairedBootstrap:
    difference: float  # mean of B - A
    low: float
    high: float
    p_value: float  # two-sided: how often the resampled difference lands on the other side of zero
    effect_size: float  # mean difference over the standard deviation of the differences (Cohen's d_z)
    n: int


def paired_bootstrap(values_a, values_b, confidence: float = 0.95, resamples: int = 10_000,
                     seed: int = 0) -> PairedBootstrap:
    a, b = np.asarray(values_a, dtype=float), np.asarray(values_b, dtype=float)
    if a.shape != b.shape or a.size == 0:
        raise ValueError("a paired bootstrap needs two equally long, non-empty lists")
    diff = b - a
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, diff.size, size=(resamples, diff.size))].mean(axis=1)
    tail = (1 - confidence) / 2
    observed = float(diff.mean())
    crossing = (means <= 0).mean() if observed > 0 else (means >= 0).mean()
    spread = float(diff.std(ddof=1)) if diff.size > 1 else 0.0
    return PairedBootstrap(observed, float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail)),
                           float(min(1.0, 2 * crossing)), observed / spread if spread > 0 else 0.0, int(diff.size))


@dataclass(frozen=True)
class SeedSpread:
    mean: float
    std: float  # sample standard deviation across seeds
    low: float
    high: float
    seeds: int


def seed_spread(per_seed_scores) -> SeedSpread:
    """Run-to-run variance: one score per seed (e.g. accuracy of the whole run under that seed)."""
    scores = np.asarray(per_seed_scores, dtype=float)
    if scores.size == 0:
        raise ValueError("no seeds")
    std = float(scores.std(ddof=1)) if scores.size > 1 else 0.0
    return SeedSpread(float(scores.mean()), std, float(scores.min()), float(scores.max()), int(scores.size))


@dataclass(frozen=True)
class UnpairedBootstrap:
    difference: float  # mean of B - mean of A
    low: float
    high: float
    p_value: float  # two-sided: how often the resampled difference lands on the other side of zero
    effect_size: float  # difference over the pooled standard deviation (Cohen's d)
    n_a: int
    n_b: int


def unpaired_bootstrap(values_a, values_b, confidence: float = 0.95, resamples: int = 10_000,
                       seed: int = 0) -> UnpairedBootstrap:
    """Difference of two independent means: each group is resampled on its own, as nothing pairs them."""
    a, b = np.asarray(values_a, dtype=float), np.asarray(values_b, dtype=float)
    if a.size == 0 or b.size == 0:
        raise ValueError("an unpaired bootstrap needs two non-empty lists")
    rng = np.random.default_rng(seed)
    means_a = a[rng.integers(0, a.size, size=(resamples, a.size))].mean(axis=1)
    means_b = b[rng.integers(0, b.size, size=(resamples, b.size))].mean(axis=1)
    differences = means_b - means_a
    tail = (1 - confidence) / 2
    observed = float(b.mean() - a.mean())
    crossing = (differences <= 0).mean() if observed > 0 else (differences >= 0).mean()
    squares = ((a - a.mean()) ** 2).sum() + ((b - b.mean()) ** 2).sum()
    dof = a.size + b.size - 2
    pooled = math.sqrt(squares / dof) if dof > 0 else 0.0
    return UnpairedBootstrap(observed, float(np.quantile(differences, tail)), float(np.quantile(differences, 1 - tail)),
                             float(min(1.0, 2 * crossing)), observed / pooled if pooled > 0 else 0.0,
                             int(a.size), int(b.size))
