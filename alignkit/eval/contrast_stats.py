"""Paired contrasts with seeds pooled: items are the unit, training seeds are repeated measures.

Every arm answers the same items under every training seed, so one contrast ``a -> b`` on one endpoint gives, per
item ``i`` and seed ``s``, the difference ``d_is = b_is - a_is`` in {-1, 0, 1} (both outcomes applicable). The
per-item difference is the mean over seeds, ``d_i = mean_s d_is`` in [-1, 1]; an arm that is not trained (the base
model, greedy) has the same outcome under every seed. Then:

- the **difference** is ``mean_i d_i`` (equal to the difference of the pooled pass rates when every outcome is
  applicable);
- its **interval** is a percentile bootstrap over items, each resampled item keeping all its seeds (seeds
  nested in items), so repeated seeds never inflate the sample size;
- its **p-value** is a two-sided sign-flip permutation test of ``mean_i d_i = 0`` over items
  (``scipy.stats.permutation_test``, exact when the non-zero items allow it). With one seed, ``d_i`` is in
  {-1, 0, 1} and the test is exactly McNemar's exact test on the discordant items;
- the **minimum detectable difference** (:func:`minimum_detectable_difference`) is the smallest true
  difference that test would find with the given power, for the observed second moment ``mean_i d_i**2`` (the
  discordance; with one seed the share of discordant items) and the number of items.

These are written here rather than taken from statsmodels because no library offers a paired test with seeds
nested in items; each piece uses scipy for the distribution work.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import optimize
from scipy import stats as scipy_stats
from statsmodels.stats.proportion import proportion_confint

Outcome = bool | None


def item_differences(a: Mapping[int, Sequence[Outcome]], b: Mapping[int, Sequence[Outcome]]) -> np.ndarray:
    """Per-item seed-mean differences ``d_i`` (shape ``[items with any applicable seed]``).

    ``a`` and ``b`` map seed -> outcomes in one shared item order. An item/seed where either outcome is None is
    skipped; an item with no applicable seed is dropped.

    >>> item_differences({0: [True, False, None], 1: [True, True, None]},
    ...                  {0: [True, True, True], 1: [False, True, True]}).tolist()
    [-0.5, 0.5]
    """
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise ValueError(f"no training seed in common: a has seeds {sorted(a)}, b has seeds {sorted(b)}")
    n_items = {len(a[s]) for s in seeds} | {len(b[s]) for s in seeds}
    if len(n_items) != 1:
        raise ValueError(f"every seed of both arms needs one outcome per shared item; got lengths {sorted(n_items)}")
    (n,) = n_items
    out = []
    for i in range(n):
        diffs = [int(bool(b[s][i])) - int(bool(a[s][i])) for s in seeds if a[s][i] is not None and b[s][i] is not None]
        if diffs:
            out.append(sum(diffs) / len(diffs))
    return np.asarray(out, dtype=np.float64)


def sign_flip_p(d: np.ndarray, n_resamples: int = 20000, seed: int = 0) -> float:
    """Two-sided sign-flip permutation p-value for ``mean(d) = 0`` (items exchangeable in sign under H0).

    Items with ``d_i = 0`` carry no sign and are left out (this does not change the test). Exact when
    ``2**k <= n_resamples`` for the ``k`` non-zero items, otherwise Monte Carlo with ``n_resamples`` draws.

    >>> sign_flip_p(np.array([1, 1, 1, 1, 1, 1, -1, 0, 0]))  # exact McNemar: 2 * P(X <= 1 | 7, 0.5) = 0.125
    0.125
    >>> sign_flip_p(np.array([0.0, 0.0])), sign_flip_p(np.array([0.0, 1.0]))
    (1.0, 1.0)
    """
    nonzero = np.asarray(d, dtype=np.float64)
    nonzero = nonzero[nonzero != 0]
    if nonzero.size <= 1:  # one signed item: both sign assignments are as extreme, p = 1
        return 1.0
    result = scipy_stats.permutation_test((nonzero,), lambda x, axis: np.sum(x, axis=axis), vectorized=True,
                                          permutation_type="samples", alternative="two-sided",
                                          n_resamples=n_resamples, random_state=np.random.default_rng(seed))
    return float(min(1.0, result.pvalue))


def bootstrap_mean_ci(d: np.ndarray, n_resamples: int = 2000, seed: int = 0,
                      confidence: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of ``mean(d)`` resampling items (each with all its seeds) with replacement.

    >>> bootstrap_mean_ci(np.array([1.0, 1.0, 1.0]))
    (1.0, 1.0)
    """
    d = np.asarray(d, dtype=np.float64)
    if d.size == 0:
        raise ValueError("no item has both outcomes applicable; the paired difference is undefined")
    result = scipy_stats.bootstrap((d,), np.mean, n_resamples=n_resamples, method="percentile",
                                   confidence_level=confidence, vectorized=True, axis=0,
                                   random_state=np.random.default_rng(seed))
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    if np.isnan(low) or np.isnan(high):  # every resample identical (all d equal): the interval is that value
        low = high = float(d.mean())
    return low, high


def minimum_detectable_difference(n: int, second_moment: float, alpha: float = 0.05,
                                  power: float = 0.8) -> float | None:
    """Smallest true difference ``delta`` a two-sided level-``alpha`` paired test detects with ``power``.

    Normal approximation for a mean of per-item differences (Connor 1987 for McNemar's test): the test rejects
    when ``sqrt(n) * |mean| / sigma0 > z_{1-alpha/2}`` with ``sigma0**2 = E[d**2]`` under H0, and under the
    alternative ``mean = delta`` the spread is ``sigma1**2 = E[d**2] - delta**2``, so ``delta`` solves

        sqrt(n) * delta = z_{1-alpha/2} * sqrt(psi) + z_{power} * sqrt(psi - delta**2),
        psi = max(second_moment, delta)

    (``psi`` cannot be below ``delta``: with one seed it is the share of discordant items, which is at least the
    difference; so when the MDE exceeds the observed discordance, as at small n, it no longer depends on it).
    Returns None when no difference up to 1 is detectable (tiny ``n``). This is the normal approximation; the
    exact sign-flip test the study uses is slightly more conservative (by exact enumeration, at n = 130 and
    psi = 0.2 it has 0.76 power at this MDE rather than 0.80), so the MDE is a lower bound for that test.

    Hand-worked: n = 130, psi = 0.2, alpha = 0.05, power = 0.8: at delta = 0.109, 11.402 * 0.109 = 1.2428 and
    1.95996 * 0.44721 + 0.84162 * sqrt(0.2 - 0.01188) = 0.87652 + 0.36502 = 1.2415, so delta ~ 0.109.

    >>> round(minimum_detectable_difference(130, 0.2), 3)
    0.109
    >>> minimum_detectable_difference(3, 0.5) is None
    True
    """
    if n <= 0:
        return None
    z_alpha = float(scipy_stats.norm.ppf(1 - alpha / 2))
    z_power = float(scipy_stats.norm.ppf(power))

    def gap(delta: float) -> float:
        psi = max(second_moment, delta)
        return math.sqrt(n) * delta - z_alpha * math.sqrt(psi) - z_power * math.sqrt(max(psi - delta * delta, 0.0))

    if gap(1.0) < 0:
        return None
    return float(optimize.brentq(gap, 1e-12, 1.0, xtol=1e-10))


def pooled_rate(by_seed: Mapping[int, Sequence[Outcome]]) -> dict[str, Any]:
    """Pass rate pooled over seeds, with the per-seed rates and their spread.

    ``rate`` is the mean over applicable (seed, item) outcomes; ``n`` counts items with any applicable seed (the
    unit of inference), and the Wilson 95% interval uses that ``n`` (repeated seeds do not shrink it).

    >>> r = pooled_rate({0: [True, False, None], 1: [True, True, None]})
    >>> r["rate"], r["n"], r["per_seed"], r["sd"]
    (0.75, 2, {0: 0.5, 1: 1.0}, 0.3536)
    """
    per_seed: dict[int, float] = {}
    passes = total = 0
    n_items = 0
    length = {len(v) for v in by_seed.values()}
    if len(length) > 1:
        raise ValueError(f"every seed needs one outcome per item; got lengths {sorted(length)}")
    for seed, outcomes in sorted(by_seed.items()):
        applicable = [bool(v) for v in outcomes if v is not None]
        if applicable:
            per_seed[seed] = sum(applicable) / len(applicable)
            passes += sum(applicable)
            total += len(applicable)
    if length:
        (size,) = length
        n_items = sum(1 for i in range(size) if any(by_seed[s][i] is not None for s in by_seed))
    if total == 0:
        return {"rate": None, "ci_low": None, "ci_high": None, "n": 0, "per_seed": {}, "sd": None,
                "min": None, "max": None}
    rate = passes / total
    low, high = wilson(rate, n_items)
    values = list(per_seed.values())
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return {"rate": rate, "ci_low": low, "ci_high": high, "n": n_items, "per_seed": per_seed,
            "sd": round(sd, 4), "min": min(values), "max": max(values)}


def wilson(rate: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for an observed proportion ``rate`` over ``n`` units: statsmodels'
    ``proportion_confint(method="wilson")`` with the count ``rate * n``, which need not be whole (a rate pooled
    over seeds). The bounds are pinned to exactly 0.0 / 1.0 at rate 0 / 1, and ``n == 0`` gives ``(0.0, 1.0)``.

    >>> [round(x, 4) for x in wilson(0.8, 10)]
    [0.4902, 0.9433]
    """
    if n <= 0:
        return 0.0, 1.0
    low, high = proportion_confint(rate * n, n, alpha=1 - confidence, method="wilson")
    return (0.0 if rate == 0 else max(0.0, float(low)), 1.0 if rate == 1 else min(1.0, float(high)))


def phi_matrix(rows: Sequence[Mapping[str, Outcome]], names: Sequence[str]) -> list[list[float | None]]:
    """Phi (Pearson correlation of two booleans) between every pair of ``names`` over ``rows``, using the rows
    where both are applicable; None where a column is constant there (phi undefined).

    >>> rows = [{"x": True, "y": True}, {"x": False, "y": False}, {"x": True, "y": False}, {"x": False, "y": True}]
    >>> phi_matrix(rows, ["x", "y"])
    [[1.0, 0.0], [0.0, 1.0]]
    """
    out: list[list[float | None]] = []
    for first in names:
        line: list[float | None] = []
        for second in names:
            pairs = np.asarray([(int(r[first]), int(r[second])) for r in rows
                                if r.get(first) is not None and r.get(second) is not None], dtype=np.float64)
            if pairs.size == 0 or pairs[:, 0].std() == 0 or pairs[:, 1].std() == 0:
                line.append(None)
            else:
                line.append(round(float(np.corrcoef(pairs[:, 0], pairs[:, 1])[0, 1]), 4))
        out.append(line)
    return out
