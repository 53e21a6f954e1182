import math

import numpy as np
import pytest

from core.evaluation.stats import bootstrap_ci, mcnemar, paired_bootstrap, seed_spread


def pairs(both, only_a, only_b, neither):
    """Paired outcomes from a 2x2 table."""
    a = [True] * both + [True] * only_a + [False] * only_b + [False] * neither
    b = [True] * both + [False] * only_a + [True] * only_b + [False] * neither
    return a, b


def test_mcnemar_exact_on_a_hand_made_table():
    result = mcnemar(*pairs(both=50, only_a=10, only_b=2, neither=8))
    # Two-sided exact binomial: 2 * P(X <= 2), X ~ Bin(12, 1/2) = 2 * (1 + 12 + 66) / 4096.
    assert result.exact and result.p_value == pytest.approx(158 / 4096)
    assert (result.only_a, result.only_b) == (10, 2)
    assert result.accuracy_a == pytest.approx(60 / 70) and result.difference == pytest.approx(-8 / 70)
    assert result.odds_ratio == pytest.approx(0.2)


def test_mcnemar_chi_square_with_continuity_correction():
    result = mcnemar(*pairs(both=100, only_a=30, only_b=15, neither=55))
    assert not result.exact
    assert result.statistic == pytest.approx(14 ** 2 / 45)
    # Survival function of chi-square(1) at 196/45 = 0.0368884, by numerical integration of its density.
    assert result.p_value == pytest.approx(0.0368884, abs=1e-6)


def test_mcnemar_edge_cases():
    assert mcnemar([True, False], [True, False]).p_value == 1.0
    assert mcnemar(*pairs(0, 6, 0, 0)).p_value == pytest.approx(2 / 64)
    with pytest.raises(ValueError):
        mcnemar([True], [True, False])


def test_bootstrap_interval_covers_the_mean_and_shrinks_with_n():
    rng = np.random.default_rng(1)
    small = rng.normal(0.6, 0.2, 40)
    large = rng.normal(0.6, 0.2, 4000)
    ci_small, ci_large = bootstrap_ci(small, seed=0), bootstrap_ci(large, seed=0)
    assert ci_small.low < small.mean() < ci_small.high
    assert ci_large.low < 0.6 < ci_large.high
    assert (ci_large.high - ci_large.low) < (ci_small.high - ci_small.low) / 5
    # Close to the normal-theory interval, mean +- 1.96 * sd / sqrt(n).
    half = 1.96 * large.std(ddof=1) / math.sqrt(large.size)
    assert ci_large.high - ci_large.low == pytest.approx(2 * half, rel=0.1)
    assert bootstrap_ci(small, seed=0) == ci_small


def test_bootstrap_coverage_is_near_nominal():
    rng = np.random.default_rng(7)
    hits = 0
    for s in range(200):
        sample = rng.normal(5.0, 2.0, 50)
        ci = bootstrap_ci(sample, resamples=2000, seed=s)
        hits += ci.low < 5.0 < ci.high
    assert 0.88 <= hits / 200 <= 0.99


def test_paired_bootstrap_detects_a_shift_and_not_noise():
    rng = np.random.default_rng(3)
    a = rng.normal(0.8, 0.1, 200)
    shifted = paired_bootstrap(a, a - 0.05 + rng.normal(0, 0.02, 200), seed=0)
    assert shifted.difference == pytest.approx(-0.05, abs=0.01)
    assert shifted.high < 0 and shifted.p_value < 0.001 and shifted.effect_size < -1
    same = paired_bootstrap(a, a + rng.normal(0, 0.02, 200), seed=0)
    assert same.low < 0 < same.high and same.p_value > 0.05


def test_seed_spread():
    spread = seed_spread([0.70, 0.74, 0.72])
    assert spread.mean == pytest.approx(0.72) and spread.std == pytest.approx(0.02)
    assert (spread.low, spread.high, spread.seeds) == (0.70, 0.74, 3)
