"""Statistics that make a comparison hold up: bootstrap intervals, paired tests, seed variance, rater agreement.

Plain Python and NumPy, seeded, so every number on a results page can be recomputed.
"""

from __future__ import annotations

import math
from collections import Counter
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
    observed = float(diff.mean())
    spread = float(diff.std(ddof=1)) if diff.size > 1 else 0.0
    return PairedBootstrap(observed, *_interval_and_p(means, observed, confidence),
                           observed / spread if spread > 0 else 0.0, int(diff.size))


def _interval_and_p(differences: np.ndarray, observed: float, confidence: float) -> tuple[float, float, float]:
    """Percentile interval of bootstrapped differences, and the two-sided p-value: twice the share of
    resamples on the other side of zero from the observed difference."""
    tail = (1 - confidence) / 2
    crossing = (differences <= 0).mean() if observed > 0 else (differences >= 0).mean()
    return (float(np.quantile(differences, tail)), float(np.quantile(differences, 1 - tail)),
            float(min(1.0, 2 * crossing)))


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
    observed = float(b.mean() - a.mean())
    squares = ((a - a.mean()) ** 2).sum() + ((b - b.mean()) ** 2).sum()
    dof = a.size + b.size - 2
    pooled = math.sqrt(squares / dof) if dof > 0 else 0.0
    return UnpairedBootstrap(observed, *_interval_and_p(means_b - means_a, observed, confidence),
                             observed / pooled if pooled > 0 else 0.0, int(a.size), int(b.size))


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def cohen_kappa(ratings_a, ratings_b) -> float:
    """Cohen's kappa of two raters on nominal categories, over the items both rated (None or NaN: not rated).

    NaN when chance agreement is already perfect (both raters used one and the same category throughout).
    """
    if len(ratings_a) != len(ratings_b):
        raise ValueError("Cohen's kappa needs the two raters' values for the same items, in the same order")
    pairs = [(a, b) for a, b in zip(ratings_a, ratings_b) if not _missing(a) and not _missing(b)]
    if not pairs:
        raise ValueError("Cohen's kappa needs at least one item rated by both raters")
    n = len(pairs)
    observed = sum(a == b for a, b in pairs) / n
    counts_a, counts_b = Counter(a for a, _ in pairs), Counter(b for _, b in pairs)
    expected = sum(counts_a[c] * counts_b[c] for c in counts_a) / n ** 2
    return math.nan if expected == 1 else (observed - expected) / (1 - expected)


ALPHA_LEVELS = ("nominal", "ordinal", "interval")


def _squared_distances(values: list, totals: np.ndarray, level: str) -> np.ndarray:
    """Krippendorff's metric differences delta^2 between every two values (sorted, with their totals n_c)."""
    if level == "nominal":
        return 1.0 - np.eye(len(values))
    if level == "interval":
        numbers = np.asarray(values, dtype=float)
        return np.subtract.outer(numbers, numbers) ** 2
    # Ordinal: how many pairable values lie between c and k, counting c and k by half.
    index = np.arange(len(values))
    low, high = np.minimum.outer(index, index), np.maximum.outer(index, index)
    cumulative = np.cumsum(totals)
    between = cumulative[high] - cumulative[low] + totals[low]
    return (between - np.add.outer(totals, totals) / 2) ** 2


def krippendorff_alpha(units, level: str = "nominal") -> float:
    """Krippendorff's alpha from the coincidence matrix.

    ``units``: per unit (item), the values given by the raters who rated it; a rater who did not is
    simply absent. Units with fewer than two values cannot be paired and are left out. NaN when
    the pairable values show no variation at all (the expected disagreement is zero).
    """
    if level not in ALPHA_LEVELS:
        raise ValueError(f"level must be one of {', '.join(ALPHA_LEVELS)}, not {level!r}")
    pairable = [list(unit) for unit in units if len(unit) >= 2]
    values = sorted({value for unit in pairable for value in unit})
    if not values:
        return math.nan
    index = {value: i for i, value in enumerate(values)}
    coincidences = np.zeros((len(values), len(values)))
    for unit in pairable:
        counts = np.bincount([index[v] for v in unit], minlength=len(values)).astype(float)
        # Every ordered pair of values from two different raters, each unit weighing as many pairs as it has values.
        coincidences += (np.outer(counts, counts) - np.diag(counts)) / (len(unit) - 1)
    totals = coincidences.sum(axis=1)
    distances = _squared_distances(values, totals, level)
    expected = (np.outer(totals, totals) * distances).sum()
    if expected == 0:
        return math.nan
    return float(1 - (totals.sum() - 1) * (coincidences * distances).sum() / expected)


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties sharing the mean of the ranks they span."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(values)]
    ranks = np.empty(len(values))
    for start, end in zip(starts, ends):
        ranks[order[start:end]] = (start + 1 + end) / 2
    return ranks


def spearman(x, y) -> float:
    """Spearman's rank correlation (ties averaged); NaN with fewer than two pairs or a constant side."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.shape != b.shape:
        raise ValueError("Spearman's correlation needs two equally long lists")
    if a.size < 2:
        return math.nan
    ranks_a, ranks_b = _average_ranks(a), _average_ranks(b)
    if ranks_a.std() == 0 or ranks_b.std() == 0:
        return math.nan
    return float(np.corrcoef(ranks_a, ranks_b)[0, 1])


def normalized_entropy(values, categories: int) -> float:
    """Shannon entropy of the values' distribution over log(categories): 0 when all agree, 1 at an even spread
    over every category."""
    counts = np.array(list(Counter(values).values()), dtype=float)
    if counts.sum() == 0 or categories < 2:
        return 0.0
    shares = counts / counts.sum()
    return float(-(shares * np.log(shares)).sum() / math.log(categories)) + 0.0
