"""Statistics that make a comparison hold up: bootstrap intervals, paired tests, seed variance, rater agreement.

The computations are the libraries the field trusts (``scipy.stats``, scikit-learn's Cohen's
kappa, the ``krippendorff`` package); this module gives them one seeded, documented interface, so
every number on a results page can be recomputed.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    n: int


def _bootstrap(samples: tuple, statistic, confidence: float, resamples: int, seed: int):
    """scipy's percentile bootstrap, seeded; each sample resampled on its own."""
    return stats.bootstrap(samples, statistic, n_resamples=resamples, confidence_level=confidence,
                           method="percentile", paired=False, vectorized=True, rng=np.random.default_rng(seed))


def _mean(values, axis=-1):
    return np.mean(values, axis=axis)


def bootstrap_ci(values, confidence: float = 0.95, resamples: int = 10_000, seed: int = 0) -> Interval:
    """Percentile bootstrap interval of the mean."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        raise ValueError("no values")
    if np.ptp(data) == 0:  # every resample has the same mean
        return Interval(float(data.mean()), float(data[0]), float(data[0]), int(data.size))
    interval = _bootstrap((data,), _mean, confidence, resamples, seed).confidence_interval
    return Interval(float(data.mean()), float(interval.low), float(interval.high), int(data.size))


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
    elif discordant < exact_below:  # the exact test: discordant pairs split as a fair coin would split them
        p, statistic, exact = float(stats.binomtest(only_a, discordant, 0.5).pvalue), None, True
    else:
        statistic = (abs(only_a - only_b) - 1) ** 2 / discordant
        p, exact = float(stats.chi2.sf(statistic, df=1)), False
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
    observed = float(diff.mean())
    means = _resampled(lambda: _bootstrap((diff,), _mean, confidence, resamples, seed), observed, diff)
    spread = float(diff.std(ddof=1)) if diff.size > 1 else 0.0
    return PairedBootstrap(observed, *_interval_and_p(means, observed, confidence),
                           observed / spread if spread > 0 else 0.0, int(diff.size))


def _resampled(run, observed: float, *samples) -> np.ndarray:
    """The bootstrap distribution of a statistic; the observed value alone when no resample can differ."""
    if all(np.ptp(sample) == 0 for sample in samples):
        return np.full(1, observed)
    return run().bootstrap_distribution


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
    observed = float(b.mean() - a.mean())
    differences = _resampled(lambda: _bootstrap((a, b), lambda x, y, axis=-1: _mean(y, axis) - _mean(x, axis),
                                                confidence, resamples, seed), observed, a, b)
    squares = ((a - a.mean()) ** 2).sum() + ((b - b.mean()) ** 2).sum()
    dof = a.size + b.size - 2
    pooled = math.sqrt(squares / dof) if dof > 0 else 0.0
    return UnpairedBootstrap(observed, *_interval_and_p(differences, observed, confidence),
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
    from sklearn.metrics import cohen_kappa_score

    first, second = [str(a) for a, _ in pairs], [str(b) for _, b in pairs]
    if len(set(first) | set(second)) == 1:
        return math.nan
    return float(cohen_kappa_score(first, second))


ALPHA_LEVELS = ("nominal", "ordinal", "interval")


def krippendorff_alpha(units, level: str = "nominal") -> float:
    """Krippendorff's alpha (the ``krippendorff`` package).

    ``units``: per unit (item), the values given by the raters who rated it; a rater who did not is
    simply absent. Units with fewer than two values cannot be paired and are left out. NaN when
    the pairable values show no variation at all (the expected disagreement is zero).
    """
    import krippendorff

    if level not in ALPHA_LEVELS:
        raise ValueError(f"level must be one of {', '.join(ALPHA_LEVELS)}, not {level!r}")
    pairable = [list(unit) for unit in units if len(unit) >= 2]
    values = sorted({value for unit in pairable for value in unit})
    if len(values) < 2:
        return math.nan
    # Alpha reads only which values share a unit, so each unit's values fill its column from the top;
    # nominal and ordinal values become their rank, interval values stay numbers.
    code = (lambda v: float(v)) if level == "interval" else {value: i for i, value in enumerate(values)}.__getitem__
    table = np.full((max(len(unit) for unit in pairable), len(pairable)), np.nan)
    for column, unit in enumerate(pairable):
        table[:len(unit), column] = [code(v) for v in unit]
    return float(krippendorff.alpha(reliability_data=table, level_of_measurement=level))


def spearman(x, y) -> float:
    """Spearman's rank correlation (ties averaged); NaN with fewer than two pairs or a constant side."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.shape != b.shape:
        raise ValueError("Spearman's correlation needs two equally long lists")
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan
    return float(stats.spearmanr(a, b).statistic)


def normalized_entropy(values, categories: int) -> float:
    """Shannon entropy of the values' distribution over log(categories): 0 when all agree, 1 at an even spread
    over every category."""
    counts = np.array(list(Counter(values).values()), dtype=float)
    if counts.sum() == 0 or categories < 2:
        return 0.0
    return float(stats.entropy(counts) / math.log(categories)) + 0.0
