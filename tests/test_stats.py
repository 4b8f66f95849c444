"""Tests for alignkit.eval.stats, with expected values worked by hand (arithmetic in the comments)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from alignkit.eval import stats
from alignkit.eval.stats import (
    adjust,
    benjamini_hochberg_adjust,
    cochran_q,
    cohens_h,
    compare,
    discordant_counts,
    holm_adjust,
    mcnemar_test,
    paired_bootstrap_diff,
    rate_summary,
    wilson_interval,
)

T, F, N = True, False, None


# ---------------------------------------------------------------------------------------------- Wilson
def test_wilson_8_of_10():
    # z = 1.959964, z^2 = 3.841459, p = 0.8, n = 10
    # denom  = 1 + z^2/n = 1.3841459
    # center = (0.8 + z^2/20) / denom = (0.8 + 0.1920729) / 1.3841459 = 0.716740
    # half   = z/denom * sqrt(0.8*0.2/10 + z^2/400) = 1.415995 * sqrt(0.016 + 0.0096036) = 1.415995 * 0.160011
    #        = 0.226575
    # -> (0.490165, 0.943315)
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4)
    assert high == pytest.approx(0.9433, abs=1e-4)
    # Independent implementation: scipy's Wilson interval (no continuity correction).
    ref = scipy_stats.binomtest(8, 10).proportion_ci(0.95, method="wilson")
    assert (low, high) == pytest.approx((ref.low, ref.high), abs=1e-12)


def test_wilson_boundaries():
    # 0/10: center = half = (z^2/20)/(1 + z^2/10), so low = 0 and
    # high = (z^2/10)/(1 + z^2/10) = 0.3841459 / 1.3841459 = 0.277533
    assert wilson_interval(0, 10) == (0.0, pytest.approx(0.277533, abs=1e-6))
    # 10/10 mirrors it: (1 - 0.277533, 1)
    assert wilson_interval(10, 10) == (pytest.approx(0.722467, abs=1e-6), 1.0)
    # exact pins, not merely "close to" 0 and 1
    assert wilson_interval(0, 3)[0] == 0.0
    assert wilson_interval(3, 3)[1] == 1.0


def test_wilson_n_zero_is_whole_range():
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_wilson_confidence_changes_width():
    lo90, hi90 = wilson_interval(8, 10, confidence=0.90)
    lo95, hi95 = wilson_interval(8, 10, confidence=0.95)
    assert lo95 < lo90 < 0.8 < hi90 < hi95


@pytest.mark.parametrize(
    ("successes", "n", "confidence", "match"),
    [
        (11, 10, 0.95, "cannot exceed"),
        (-1, 10, 0.95, ">= 0"),
        (1, -1, 0.95, ">= 0"),
        (1.0, 10, 0.95, "integer"),
        (True, 10, 0.95, "integer"),
        (1, 10, 1.0, "between 0 and 1"),
        (1, 10, 0.0, "between 0 and 1"),
    ],
)
def test_wilson_validation(successes, n, confidence, match):
    with pytest.raises(ValueError, match=match):
        wilson_interval(successes, n, confidence)


# ---------------------------------------------------------------------------------------------- rate_summary
def test_rate_summary_excludes_none():
    # 3 applicable (T, F, T), 2 successes -> rate 2/3; the None does not count toward n.
    out = rate_summary([T, F, N, T, N])
    assert out["n"] == 3
    assert out["successes"] == 2
    assert out["rate"] == pytest.approx(2 / 3)
    assert (out["ci_low"], out["ci_high"]) == wilson_interval(2, 3)


def test_rate_summary_all_none_and_empty():
    expected = {"rate": None, "ci_low": None, "ci_high": None, "n": 0, "successes": 0}
    assert rate_summary([N, N]) == expected
    assert rate_summary([]) == expected


def test_rate_summary_accepts_numpy_bools():
    out = rate_summary(np.array([True, True, False, False]))
    assert (out["n"], out["successes"], out["rate"]) == (4, 2, 0.5)


@pytest.mark.parametrize("bad", [1, 0.5, "yes"])
def test_rate_summary_rejects_non_bool(bad):
    with pytest.raises(ValueError, match=r"outcomes\[1\]"):
        rate_summary([True, bad])


# ---------------------------------------------------------------------------------------------- discordant
def test_discordant_counts_direction_and_none():
    a = [F, F, T, T, T, N, F]
    b = [T, T, F, T, N, T, F]
    # pairs with both applicable: indices 0,1,2,3,6 -> 5 pairs
    # n01 (a F, b T): indices 0,1 -> 2 ; n10 (a T, b F): index 2 -> 1
    assert discordant_counts(a, b) == (2, 1, 5)
    # swapping the models swaps the direction
    assert discordant_counts(b, a) == (1, 2, 5)


def test_discordant_counts_length_mismatch_names_both_lengths():
    with pytest.raises(ValueError, match=r"len\(a\)=3.*len\(b\)=2"):
        discordant_counts([T, F, T], [T, F])


def test_discordant_counts_bad_value_names_side():
    with pytest.raises(ValueError, match=r"b\[0\]"):
        discordant_counts([T], ["pass"])


# ---------------------------------------------------------------------------------------------- McNemar
def test_mcnemar_exact_1_vs_6():
    # 7 discordant < 25 -> exact. Two-sided: 2 * P(X <= 1 | 7, .5) = 2 * (C(7,0)+C(7,1)) / 2^7 = 2*8/128 = 0.125
    p, method = mcnemar_test(1, 6)
    assert method == "mcnemar_exact"
    assert p == pytest.approx(0.125, abs=1e-12)
    assert mcnemar_test(6, 1) == (p, method)  # symmetric
    assert p == pytest.approx(scipy_stats.binomtest(1, 7, 0.5).pvalue, abs=1e-12)


def test_mcnemar_exact_small_cases():
    # (0, 5): 2 * (1/32) = 0.0625
    assert mcnemar_test(0, 5)[0] == pytest.approx(0.0625, abs=1e-12)
    # (3, 3): 2 * P(X<=3 | 6) = 2 * (1+6+15+20)/64 = 1.3125 -> capped at 1
    assert mcnemar_test(3, 3) == (1.0, "mcnemar_exact")


def test_mcnemar_chi_square_10_vs_30():
    # 40 discordant >= 25 -> chi-square with continuity correction:
    # (|10 - 30| - 1)^2 / 40 = 19^2 / 40 = 361/40 = 9.025; 1-df tail = erfc(sqrt(9.025/2)) = 0.0026631
    p, method = mcnemar_test(10, 30)
    assert method == "mcnemar_chi2_cc"
    assert p == pytest.approx(0.002663, abs=1e-6)
    assert p == pytest.approx(math.erfc(math.sqrt(9.025 / 2)), rel=1e-9)
    assert mcnemar_test(30, 10) == (p, method)


def test_mcnemar_threshold_boundary():
    # 24 discordant -> exact; 25 -> chi-square (threshold is "less than")
    assert mcnemar_test(12, 12)[1] == "mcnemar_exact"
    assert mcnemar_test(12, 13)[1] == "mcnemar_chi2_cc"
    assert mcnemar_test(1, 6, exact_threshold=0)[1] == "mcnemar_chi2_cc"


def test_mcnemar_ties_and_zero():
    # equal counts on the chi-square path: max(|20-20| - 1, 0)^2 / 40 = 0 -> p = 1
    assert mcnemar_test(20, 20) == (1.0, "mcnemar_chi2_cc")
    # a difference of one is fully absorbed by the correction: (|12-13| - 1)^2 / 25 = 0 -> p = 1
    assert mcnemar_test(12, 13) == (1.0, "mcnemar_chi2_cc")
    # no discordant pairs: no evidence of a difference, even when the threshold asks for chi-square (0/0)
    assert mcnemar_test(0, 0) == (1.0, "mcnemar_exact")
    assert mcnemar_test(0, 0, exact_threshold=0) == (1.0, "mcnemar_exact")


def test_mcnemar_validation():
    with pytest.raises(ValueError, match="n01"):
        mcnemar_test(-1, 3)
    with pytest.raises(ValueError, match="n10"):
        mcnemar_test(1, 2.5)


# ---------------------------------------------------------------------------------------------- Cohen's h
def test_cohens_h_values():
    assert cohens_h(0.5, 0.5) == 0.0
    # 2*asin(sqrt(.5)) = 2*(pi/4) = pi/2 = 1.570796 ; 2*asin(sqrt(.2)) = 2*atan(1/2) = 0.927295 ; diff 0.643501
    assert cohens_h(0.2, 0.5) == pytest.approx(0.6435, abs=1e-4)
    assert cohens_h(0.2, 0.5) == pytest.approx(math.pi / 2 - 2 * math.atan(0.5), abs=1e-12)
    # sign = effect of b (p2) over a (p1)
    assert cohens_h(0.5, 0.2) == pytest.approx(-cohens_h(0.2, 0.5))
    # extremes: 2*asin(1) - 2*asin(0) = pi
    assert cohens_h(0.0, 1.0) == pytest.approx(math.pi)


@pytest.mark.parametrize(("p1", "p2"), [(-0.1, 0.5), (0.5, 1.2), (float("nan"), 0.5)])
def test_cohens_h_validation(p1, p2):
    with pytest.raises(ValueError, match="proportion"):
        cohens_h(p1, p2)


# ---------------------------------------------------------------------------------------------- bootstrap
def test_bootstrap_identical_vectors():
    a = [T, F, T, T, F, N]
    # every per-item difference is 0, so every resample mean is 0
    assert paired_bootstrap_diff(a, list(a)) == (0.0, 0.0, 0.0)


def test_bootstrap_all_fail_vs_all_pass():
    # every per-item difference is +1 (b passes, a fails)
    assert paired_bootstrap_diff([F] * 8, [T] * 8) == (1.0, 1.0, 1.0)
    assert paired_bootstrap_diff([T] * 8, [F] * 8) == (-1.0, -1.0, -1.0)


def test_bootstrap_single_pair():
    # one applicable item: every resample is that item, so the interval collapses to its difference
    assert paired_bootstrap_diff([F], [T]) == (1.0, 1.0, 1.0)
    assert paired_bootstrap_diff([T, N, T], [F, F, N]) == (-1.0, -1.0, -1.0)
    assert paired_bootstrap_diff([T], [T], n_resamples=1) == (0.0, 0.0, 0.0)


def test_bootstrap_reproducible_and_contains_diff():
    rng = np.random.default_rng(123)
    a = list(rng.random(60) < 0.4)
    b = list(rng.random(60) < 0.7)
    first = paired_bootstrap_diff(a, b, n_resamples=500, seed=7)
    assert paired_bootstrap_diff(a, b, n_resamples=500, seed=7) == first
    diff, low, high = first
    assert diff == pytest.approx(np.mean(b) - np.mean(a))
    assert low <= diff <= high
    assert low < high


def test_bootstrap_width_matches_normal_approximation():
    # 100 items b-only pass (d=+1) and 100 ties (d=0): diff = 0.5, sd(d) = 0.5,
    # SE = 0.5/sqrt(200) = 0.035355, normal 95% CI = 0.5 -/+ 1.96*0.035355 = (0.4307, 0.5693)
    a = [F] * 100 + [T] * 100
    b = [T] * 100 + [T] * 100
    diff, low, high = paired_bootstrap_diff(a, b, n_resamples=4000, seed=1)
    assert diff == 0.5
    assert low == pytest.approx(0.4307, abs=0.015)
    assert high == pytest.approx(0.5693, abs=0.015)


def test_bootstrap_pairing_matters():
    # Both models pass 50% in both cases, so an unpaired comparison could not tell them apart.
    a = [T] * 20 + [F] * 20
    # Perfectly concordant: every item is a tie (d = 0), so the paired interval collapses to 0.
    assert paired_bootstrap_diff(a, list(a), n_resamples=300) == (0.0, 0.0, 0.0)
    # Fully discordant: d = +1 on 20 items, -1 on 20; sd(d) = 1, SE = 1/sqrt(40) = 0.1581,
    # normal 95% CI = 0 -/+ 1.96*0.1581 = (-0.31, 0.31)
    b = [F] * 20 + [T] * 20
    diff, low, high = paired_bootstrap_diff(a, b, n_resamples=4000, seed=0)
    assert diff == 0.0
    assert low == pytest.approx(-0.31, abs=0.04)
    assert high == pytest.approx(0.31, abs=0.04)


def test_bootstrap_ignores_none_pairs():
    a = [T, F, F, T, F, F, T, F]
    b = [T, T, T, F, T, F, T, T]
    padded_a = [N, *a[:4], T, N, *a[4:]]
    padded_b = [T, *b[:4], N, N, *b[4:]]
    # the padded items are never both applicable, so the paired arrays (and the draws) are identical
    assert paired_bootstrap_diff(padded_a, padded_b, seed=3) == paired_bootstrap_diff(a, b, seed=3)


def test_bootstrap_chunked_path(monkeypatch):
    # Force many small chunks (10 items -> 3 resamples per chunk, last chunk partial) and check the result
    # is still a sane, reproducible interval around the diff.
    monkeypatch.setattr(stats, "_BOOTSTRAP_CHUNK_ELEMENTS", 30)
    a = [F, F, F, T, T, F, T, F, F, T]
    b = [T, T, F, T, T, T, T, F, T, T]
    # diff = 8/10 - 4/10 = 0.4
    diff, low, high = paired_bootstrap_diff(a, b, n_resamples=101, seed=5)
    assert diff == pytest.approx(0.4)
    assert -1.0 <= low <= diff <= high <= 1.0
    assert paired_bootstrap_diff(a, b, n_resamples=101, seed=5) == (diff, low, high)


def test_bootstrap_confidence_nesting():
    a = [F, F, F, T, T, F, T, F, F, T] * 3
    b = [T, T, F, T, T, T, T, F, T, T] * 3
    _, lo50, hi50 = paired_bootstrap_diff(a, b, confidence=0.5, seed=2)
    _, lo99, hi99 = paired_bootstrap_diff(a, b, confidence=0.99, seed=2)
    assert lo99 <= lo50 <= hi50 <= hi99


def test_bootstrap_errors():
    with pytest.raises(ValueError, match="no item has both"):
        paired_bootstrap_diff([N, T], [F, N])
    with pytest.raises(ValueError, match=r"len\(a\)=2.*len\(b\)=1"):
        paired_bootstrap_diff([T, F], [T])
    with pytest.raises(ValueError, match="n_resamples"):
        paired_bootstrap_diff([T], [F], n_resamples=0)


# ---------------------------------------------------------------------------------------------- adjustments
def test_holm_hand_worked():
    # sorted: 0.01, 0.03, 0.04 ; multipliers 3, 2, 1 -> 0.03, 0.06, 0.04
    # running max -> 0.03, 0.06, 0.06 ; back to input order [0.01, 0.04, 0.03] -> [0.03, 0.06, 0.06]
    assert holm_adjust([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


def test_bh_hand_worked():
    # sorted: 0.01, 0.03, 0.04 ; times m/i = 3/1, 3/2, 3/3 -> 0.03, 0.045, 0.04
    # running min from the largest: 0.04, min(0.045, 0.04) = 0.04, min(0.03, 0.04) = 0.03
    # back to input order [0.01, 0.04, 0.03] -> [0.03, 0.04, 0.04]
    assert benjamini_hochberg_adjust([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.04, 0.04])


def test_adjust_cap_and_monotone_hand_worked():
    p = [0.5, 0.6, 0.9, 0.01]
    # Holm: sorted .01,.5,.6,.9 x 4,3,2,1 = .04, 1.5, 1.2, .9 -> cap/running max -> .04, 1, 1, 1
    assert holm_adjust(p) == pytest.approx([1.0, 1.0, 1.0, 0.04])
    # BH: sorted x 4/1, 4/2, 4/3, 4/4 = .04, 1.0, .8, .9 -> running min from top: .9, .8, .8, .04
    assert benjamini_hochberg_adjust(p) == pytest.approx([0.8, 0.8, 0.9, 0.04])


def test_adjust_properties_random():
    rng = np.random.default_rng(0)
    for _ in range(20):
        p = list(rng.random(12) ** 3)
        order = np.argsort(p)
        for adjusted in (holm_adjust(p), benjamini_hochberg_adjust(p)):
            assert all(x >= y - 1e-15 for x, y in zip(adjusted, p))  # never below the raw value
            assert all(0.0 <= x <= 1.0 for x in adjusted)
            ranked = [adjusted[i] for i in order]
            assert ranked == sorted(ranked)  # same ranking as the raw p-values
        assert benjamini_hochberg_adjust(p) == pytest.approx(list(scipy_stats.false_discovery_control(p)))
        assert all(bh <= holm + 1e-15 for bh, holm in zip(benjamini_hochberg_adjust(p), holm_adjust(p)))


def test_adjust_edge_cases():
    assert holm_adjust([]) == []
    assert benjamini_hochberg_adjust([]) == []
    assert holm_adjust([0.2]) == [0.2]
    # ties keep equal adjusted values: Holm [.02,.02] x [2,1] -> .04, max(.04,.02)=.04
    assert holm_adjust([0.02, 0.02]) == pytest.approx([0.04, 0.04])


@pytest.mark.parametrize("bad", [[0.1, 1.5], [float("nan")], [-0.01]])
def test_adjust_rejects_non_probabilities(bad):
    with pytest.raises(ValueError, match="not a probability"):
        holm_adjust(bad)
    with pytest.raises(ValueError, match="not a probability"):
        benjamini_hochberg_adjust(bad)


def test_adjust_dispatch():
    p = [0.01, 0.04, 0.03]
    assert adjust(p, "holm") == holm_adjust(p)
    assert adjust(p, "bh") == benjamini_hochberg_adjust(p)
    with pytest.raises(ValueError, match=r"'bonferroni'.*holm, bh"):
        adjust(p, "bonferroni")


# ---------------------------------------------------------------------------------------------- Cochran's Q
HAND_TABLE = [
    [T, T, T],  # R = 3
    [T, T, F],  # R = 2
    [T, F, F],  # R = 1
    [T, T, F],  # R = 2
    [F, F, F],  # R = 0
    [T, F, T],  # R = 2
]
# column totals C = (5, 3, 2), N = 10, sum C^2 = 25 + 9 + 4 = 38, sum R^2 = 9+4+1+4+0+4 = 22
# Q = (k-1) (k sum C^2 - N^2) / (k N - sum R^2) = 2 (114 - 100) / (30 - 22) = 28 / 8 = 3.5
# df = 2, chi2(2) tail = exp(-3.5/2) = exp(-1.75) = 0.173774


def test_cochran_q_hand_worked():
    q, df, p = cochran_q(HAND_TABLE)
    assert q == pytest.approx(3.5)
    assert df == 2
    assert p == pytest.approx(math.exp(-1.75), abs=1e-12)


def test_cochran_q_drops_none_rows_and_unanimous_rows_add_nothing():
    extra = [[T, N, F], [N, N, N], [T, T, T], [F, F, F]]
    q, df, p = cochran_q(HAND_TABLE + extra)
    assert (q, df) == (pytest.approx(3.5), 2)
    assert p == pytest.approx(math.exp(-1.75), abs=1e-12)


def test_cochran_q_equals_uncorrected_mcnemar_for_two_models():
    a = [T, T, T, F, F, F, F, F, F, F, T, T, T, T, F, N]
    b = [F, F, F, T, T, T, T, T, T, T, T, T, T, T, F, T]
    n01, n10, _ = discordant_counts(a, b)
    # n01 = 7 (a F, b T), n10 = 3 -> uncorrected McNemar (7 - 3)^2 / 10 = 1.6
    assert (n01, n10) == (7, 3)
    q, df, p = cochran_q([list(row) for row in zip(a, b)])
    assert q == pytest.approx(1.6)
    assert df == 1
    assert p == pytest.approx(scipy_stats.chi2.sf(1.6, 1))


def test_cochran_q_degenerate():
    # no disagreement anywhere: 0/0 -> Q = 0, p = 1
    assert cochran_q([[T, T], [F, F]]) == (0.0, 1, 1.0)
    # every row has a None: nothing left
    assert cochran_q([[T, N, F]]) == (0.0, 2, 1.0)


def test_cochran_q_validation():
    with pytest.raises(ValueError, match="empty"):
        cochran_q([])
    with pytest.raises(ValueError, match="at least 2 models"):
        cochran_q([[T], [F]])
    with pytest.raises(ValueError, match="row 1 has 2 outcomes but row 0 has 3"):
        cochran_q([[T, F, T], [T, F]])
    with pytest.raises(ValueError, match=r"outcomes\[0\]\[1\]"):
        cochran_q([[T, 1]])


# ---------------------------------------------------------------------------------------------- compare
def test_compare_hand_worked():
    a = [F, F, T, N, T, F]
    b = [T, T, T, T, F, F]
    # pairs: indices 0,1,2,4,5 -> n = 5 ; rate a = 2/5, rate b = 3/5, diff = 0.2
    # n01 = 2 (idx 0,1), n10 = 1 (idx 4) -> exact: 2 * P(X<=1 | 3, .5) = 2 * (1+3)/8 = 1.0
    out = compare(a, b, n_resamples=500, seed=0)
    assert set(out) == {"diff", "ci_low", "ci_high", "p_value", "test", "cohens_h", "n01", "n10", "n"}
    assert out["diff"] == pytest.approx(0.2)
    assert (out["n01"], out["n10"], out["n"]) == (2, 1, 5)
    assert (out["p_value"], out["test"]) == (1.0, "mcnemar_exact")
    assert out["cohens_h"] == pytest.approx(cohens_h(0.4, 0.6))
    assert out["ci_low"] <= out["diff"] <= out["ci_high"]
    # reversing the contrast negates the effects and keeps the test
    rev = compare(b, a, n_resamples=500, seed=0)
    assert rev["diff"] == pytest.approx(-0.2)
    assert rev["cohens_h"] == pytest.approx(-out["cohens_h"])
    assert (rev["n01"], rev["n10"], rev["p_value"]) == (1, 2, 1.0)


def test_compare_no_pairs():
    out = compare([N, T], [F, N])
    assert out == {
        "diff": None,
        "ci_low": None,
        "ci_high": None,
        "p_value": 1.0,
        "test": "mcnemar_exact",
        "cohens_h": None,
        "n01": 0,
        "n10": 0,
        "n": 0,
    }


def test_compare_length_mismatch():
    with pytest.raises(ValueError, match=r"len\(a\)=1.*len\(b\)=2"):
        compare([T], [T, F])
