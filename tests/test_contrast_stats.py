"""Tests for alignkit.eval.contrast_stats: the seed-pooled paired statistics of the pre-registered contrasts.

Covers per-item differences (seeds averaged, not-applicable outcomes skipped), the sign-flip permutation p-value
(exactly McNemar's exact test with one seed), the percentile bootstrap interval, the minimum detectable
difference (its hand-worked docstring value, the equation it solves, and the power of the normal-approximation
test at that difference by simulation and by exact enumeration), pooled rates over seeds, the Wilson interval
and the phi matrix. Expected values are worked by hand in the comments.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from alignkit.eval.contrast_stats import (
    bootstrap_mean_ci,
    item_differences,
    minimum_detectable_difference,
    phi_matrix,
    pooled_rate,
    sign_flip_p,
    wilson,
)

T, F, N = True, False, None
Z975 = 1.959963984540054  # standard normal 97.5% quantile
Z80 = 0.8416212335729143  # standard normal 80% quantile


def _mcnemar_table(n01: int, n10: int, ties: int = 3) -> np.ndarray:
    """One seed: +1 for each item only b passes, -1 for each item only a passes, 0 for concordant items."""
    return np.array([1.0] * n01 + [-1.0] * n10 + [0.0] * ties)


# ---------------------------------------------------------------------------------------------- differences
def test_item_differences_one_seed_is_b_minus_a():
    a = {0: [T, F, T, F]}
    b = {0: [T, T, F, F]}
    assert item_differences(a, b).tolist() == [0.0, 1.0, -1.0, 0.0]


def test_item_differences_average_over_seeds_and_skip_none():
    # item 0: seed 0: 1 - 1 = 0, seed 1: 0 - 1 = -1 -> -0.5
    # item 1: seed 0: 1 - 0 = 1, seed 1: 1 - 1 = 0  -> 0.5
    # item 2: a is None under both seeds             -> dropped
    # item 3: seed 0 has b None, seed 1: 1 - 0 = 1   -> 1.0 (only the applicable seed counts)
    a = {0: [T, F, N, F], 1: [T, T, N, F]}
    b = {0: [T, T, T, N], 1: [F, T, T, T]}
    assert item_differences(a, b).tolist() == [-0.5, 0.5, 1.0]


def test_item_differences_three_seeds():
    # (1 + 1 + 0) / 3 and (0 - 1 + 0) / 3
    a = {0: [F, T], 1: [F, T], 2: [T, F]}
    b = {0: [T, T], 1: [T, F], 2: [T, F]}
    assert item_differences(a, b) == pytest.approx([2 / 3, -1 / 3])


def test_item_differences_use_only_shared_seeds_and_refuse_mismatches():
    # Only seed 1 is shared: d = b_1 - a_1.
    assert item_differences({0: [T, T], 1: [F, T]}, {1: [T, T], 2: [F, F]}).tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match="no training seed in common"):
        item_differences({0: [T]}, {1: [T]})
    with pytest.raises(ValueError, match="one outcome per shared item"):
        item_differences({0: [T, F]}, {0: [T]})


# ---------------------------------------------------------------------------------------------- sign flip
@pytest.mark.parametrize(("n01", "n10", "expected"), [
    (6, 1, 0.125),               # 2 * (1 + 7) / 2**7
    (5, 0, 0.0625),              # 2 * 1 / 2**5
    (8, 2, 0.109375),            # 2 * (1 + 10 + 45) / 2**10 = 112 / 1024
    (10, 3, 756 / 8192),         # 2 * (1 + 13 + 78 + 286) / 2**13
    (3, 3, 1.0),                 # balanced: min(1, 2 * P(X <= 3 | 6)) = min(1, 2 * 42/64)
    (2, 1, 1.0),                 # min(1, 2 * P(X <= 1 | 3)) = min(1, 2 * 4/8)
])
def test_sign_flip_with_one_seed_is_exact_mcnemar(n01, n10, expected):
    d = _mcnemar_table(n01, n10)
    assert sign_flip_p(d) == pytest.approx(expected, rel=1e-9)
    assert sign_flip_p(-d) == pytest.approx(expected, rel=1e-9)  # two-sided: direction does not matter
    # Exact (2**k <= n_resamples): the random seed cannot change it.
    assert sign_flip_p(d, seed=1) == sign_flip_p(d, seed=2)


def test_sign_flip_without_discordance_is_one():
    assert sign_flip_p(np.zeros(20)) == 1.0
    assert sign_flip_p(np.array([0.0, 0.0, 1.0])) == 1.0  # one signed item: both signs equally extreme
    assert sign_flip_p(np.array([0.0, 0.0, -0.5])) == 1.0


def test_sign_flip_on_seed_averaged_differences_by_enumeration():
    # Non-zero d = (1, .5, .5, -.5), observed sum 1.5. The 16 sign patterns give sums
    # +1 + {-1.5, -.5 x3, .5 x3, 1.5} and -1 + the same; |sum| >= 1.5 in 3 + 1 + 1 + 3 = 8 of them -> p = 0.5.
    d = np.array([1.0, 0.5, 0.5, -0.5, 0.0])
    nonzero = d[d != 0]
    observed = abs(nonzero.sum())
    extreme = sum(abs(np.dot(signs, nonzero)) >= observed - 1e-12
                  for signs in itertools.product((-1, 1), repeat=nonzero.size))
    assert extreme == 8
    assert sign_flip_p(d) == pytest.approx(8 / 16)


def test_sign_flip_monte_carlo_is_close_to_exact():
    # 18 discordant items: 2**18 > 20000 resamples, so Monte Carlo. Exact McNemar for (14, 4):
    # 2 * P(X <= 4 | 18, 1/2) = 2 * (1 + 18 + 153 + 816 + 3060) / 2**18 = 8096 / 262144 = 0.030884
    p = sign_flip_p(_mcnemar_table(14, 4), n_resamples=20000, seed=0)
    assert p == pytest.approx(8096 / 262144, abs=0.006)  # Monte Carlo SE ~ 0.0012


# ---------------------------------------------------------------------------------------------- bootstrap
def test_bootstrap_of_constant_differences_is_that_value():
    assert bootstrap_mean_ci(np.array([1.0, 1.0, 1.0])) == (1.0, 1.0)
    assert bootstrap_mean_ci(np.full(10, -0.5)) == (-0.5, -0.5)


def test_bootstrap_of_two_items_spans_both():
    # Resampled means of {0, 1}: 0 (p 1/4), 0.5 (p 1/2), 1 (p 1/4); the 2.5% and 97.5% percentiles are 0 and 1.
    assert bootstrap_mean_ci(np.array([0.0, 1.0]), n_resamples=2000, seed=0) == (0.0, 1.0)


def test_bootstrap_matches_the_normal_interval_for_many_items():
    # 120 ones and 280 zeros: mean 0.3, sd sqrt(0.3 * 0.7) = 0.45826, se = 0.45826 / 20 = 0.022913,
    # normal 95% interval 0.3 -/+ 1.96 * 0.022913 = (0.2551, 0.3449).
    d = np.array([1.0] * 120 + [0.0] * 280)
    low, high = bootstrap_mean_ci(d, n_resamples=4000, seed=0)
    assert low == pytest.approx(0.2551, abs=0.01)
    assert high == pytest.approx(0.3449, abs=0.01)
    assert bootstrap_mean_ci(d, n_resamples=4000, seed=0) == (low, high)  # seeded: reproducible


def test_bootstrap_of_no_items_is_refused():
    with pytest.raises(ValueError, match="no item has both outcomes applicable"):
        bootstrap_mean_ci(np.array([]))


# ---------------------------------------------------------------------------------------------- MDE
def test_mde_hand_worked_value_from_the_docstring():
    # n = 130, psi = 0.2, alpha = 0.05, power = 0.8: sqrt(130) * 0.109 = 1.2428 and
    # 1.95996 * sqrt(0.2) + 0.84162 * sqrt(0.2 - 0.109**2) = 0.87652 + 0.36502 = 1.2415 -> delta ~ 0.109.
    delta = minimum_detectable_difference(130, 0.2, 0.05, 0.8)
    assert round(delta, 3) == 0.109
    # ...and it solves the equation exactly.
    assert math.sqrt(130) * delta == pytest.approx(Z975 * math.sqrt(0.2) + Z80 * math.sqrt(0.2 - delta**2),
                                                   abs=1e-8)


def test_mde_is_none_when_nothing_is_detectable_and_moves_the_right_way():
    assert minimum_detectable_difference(3, 0.5) is None
    assert minimum_detectable_difference(0, 0.5) is None
    base = minimum_detectable_difference(130, 0.2)
    assert minimum_detectable_difference(520, 0.2) < base            # more items: smaller
    assert minimum_detectable_difference(130, 0.2, alpha=0.0125) > base  # stricter level: larger
    assert minimum_detectable_difference(130, 0.2, power=0.9) > base     # more power: larger
    assert minimum_detectable_difference(130, 0.4) > base            # more discordance: larger


def _normal_test_rejects(d: np.ndarray) -> np.ndarray:
    """The normal-approximation paired test per simulated study (rows): |sum d| / sqrt(sum d^2) > z_0.975."""
    return np.abs(d.sum(axis=1)) > Z975 * np.sqrt((d * d).sum(axis=1))


def test_mde_has_the_stated_power_in_simulation():
    # One seed, n = 130, discordance psi = 0.2: a true difference of the MDE means p01 - p10 = mde and
    # p01 + p10 = psi. Simulated studies reject with the normal-approximation test about 80% of the time.
    # (Exact enumeration of the same test gives 0.831: the normal approximation is slightly conservative.)
    n, psi = 130, 0.2
    mde = minimum_detectable_difference(n, psi)
    p01, p10 = (psi + mde) / 2, (psi - mde) / 2
    rng = np.random.default_rng(0)
    u = rng.random((20000, n))  # 20000 studies: Monte Carlo SE of the power ~ 0.003
    d = np.where(u < p01, 1.0, np.where(u < p01 + p10, -1.0, 0.0))
    power = _normal_test_rejects(d).mean()
    assert power == pytest.approx(0.80, abs=0.04)
    # The MDE is the smallest such difference: half of it gives far less power.
    half = mde / 2
    u = np.random.default_rng(1).random((20000, n))
    d_half = np.where(u < (psi + half) / 2, 1.0, np.where(u < psi, -1.0, 0.0))
    assert _normal_test_rejects(d_half).mean() < 0.45


def test_mde_power_by_exact_enumeration():
    # The same power without simulation noise: sum the multinomial probabilities of every (n01, n10) the
    # normal-approximation test rejects.
    from scipy.stats import multinomial

    n, psi = 130, 0.2
    mde = minimum_detectable_difference(n, psi)
    probs = [(psi + mde) / 2, (psi - mde) / 2, 1 - psi]
    power = sum(multinomial.pmf([a, b, n - a - b], n, probs)
                for a in range(n + 1) for b in range(n + 1 - a)
                if a + b and abs(a - b) / math.sqrt(a + b) > Z975)
    assert power == pytest.approx(0.80, abs=0.04)


# ---------------------------------------------------------------------------------------------- pooled rate
def test_pooled_rate_two_seeds_by_hand():
    # seed 0: 1 of 3 applicable; seed 1: 3 of 4. Pooled 4 / 7 = 0.5714 over the (seed, item) outcomes.
    # n = items with any applicable seed = 4 (item 3 is applicable under seed 1 only).
    # sd of (1/3, 3/4) with ddof 1 = |3/4 - 1/3| / sqrt(2) = 0.41667 / 1.41421 = 0.2946.
    r = pooled_rate({0: [T, F, F, N], 1: [T, T, T, F]})
    assert r["rate"] == pytest.approx(4 / 7)
    assert r["n"] == 4
    assert r["per_seed"] == {0: pytest.approx(1 / 3), 1: 0.75}
    assert r["sd"] == 0.2946
    assert (r["min"], r["max"]) == (pytest.approx(1 / 3), 0.75)
    assert (r["ci_low"], r["ci_high"]) == wilson(4 / 7, 4)  # the interval uses n = items, not 7 outcomes


def test_pooled_rate_one_seed_and_edge_cases():
    one = pooled_rate({5: [T, T, F, N]})
    assert (one["rate"], one["n"], one["per_seed"], one["sd"]) == (pytest.approx(2 / 3), 3, {5: pytest.approx(2 / 3)},
                                                                   0.0)
    empty = pooled_rate({0: [N, N], 1: [N, N]})
    assert empty["rate"] is None and empty["n"] == 0 and empty["per_seed"] == {}
    with pytest.raises(ValueError, match="one outcome per item"):
        pooled_rate({0: [T, F], 1: [T]})


# ---------------------------------------------------------------------------------------------- Wilson
def test_wilson_hand_values():
    # z^2 = 3.841459.
    # 0.8 of 10: denom 1 + 0.3841459 = 1.3841459, center (0.8 + 0.1920729) / 1.3841459 = 0.716740,
    # half (1.959964 / 1.3841459) * sqrt(0.8 * 0.2 / 10 + 3.841459 / 400) = 1.416010 * 0.160011 = 0.226578
    assert wilson(0.8, 10) == pytest.approx((0.490162, 0.943318), abs=1e-6)
    # 0.75 of 4 (a pooled rate need not be a whole count): denom 1 + 0.960365 = 1.960365,
    # center (0.75 + 0.480182) / 1.960365 = 0.627527,
    # half (1.959964 / 1.960365) * sqrt(0.75 * 0.25 / 4 + 3.841459 / 64) = 0.999795 * 0.326952 = 0.326885
    assert wilson(0.75, 4) == pytest.approx((0.300642, 0.954412), abs=1e-6)
    # 0 of 10: low pinned to 0, high = (z^2/10) / (1 + z^2/10) = 0.3841459 / 1.3841459 = 0.277533; 1 mirrors it.
    assert wilson(0.0, 10) == (0.0, pytest.approx(0.277533, abs=1e-6))
    assert wilson(1.0, 10) == (pytest.approx(0.722467, abs=1e-6), 1.0)
    assert wilson(0.5, 0) == (0.0, 1.0)


# ---------------------------------------------------------------------------------------------- phi
def test_phi_matrix_hand_worked():
    rows = [
        {"x": T, "y": T, "z": T, "w": T},
        {"x": T, "y": F, "z": N, "w": T},
        {"x": F, "y": F, "z": F, "w": T},
        {"x": F, "y": F, "z": T, "w": T},
        {"x": T, "y": T, "z": N, "w": T},
        {"x": F, "y": T, "z": F, "w": T},
    ]
    # x, y over all six rows: a (TT) = 2, b (TF) = 1, c (FT) = 1, d (FF) = 2
    #   phi = (ad - bc) / sqrt((a+b)(c+d)(a+c)(b+d)) = (4 - 1) / sqrt(3 * 3 * 3 * 3) = 1/3
    # x, z over rows 0, 2, 3, 5 (z applicable): x = T F F F, z = T F T F: a = 1, b = 0, c = 1, d = 2
    #   phi = 2 / sqrt(1 * 3 * 2 * 2) = 0.57735
    # y, z over rows 0, 2, 3, 5: y = T F F T, z = T F T F: a = b = c = d = 1 -> phi = 0
    # w is constant: phi undefined (None), even with itself.
    assert phi_matrix(rows, ["x", "y", "z", "w"]) == [
        [1.0, 0.3333, 0.5774, None],
        [0.3333, 1.0, 0.0, None],
        [0.5774, 0.0, 1.0, None],
        [None, None, None, None],
    ]
