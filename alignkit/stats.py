"""Paired statistics for boolean per-item outcomes of models evaluated on the same prompts.

Every model answers the same held-out instructions, so each criterion gives one boolean per
(model, item); a comparison between two models is *paired* over items. An outcome of ``None`` means
"criterion not applicable to this item" and is excluded, pairwise, from every computation.

Direction convention used throughout: a contrast is ``a -> b`` ("b compared with a"), so a positive
difference or Cohen's h means ``b`` passes more often than ``a``.

Functions are pure: inputs are never modified, and the only randomness (the bootstrap) is drawn from a
``numpy.random.Generator`` seeded by an explicit argument.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats as _scipy_stats

Outcome = bool | None

ADJUST_METHODS = ("holm", "bh")
MCNEMAR_EXACT = "mcnemar_exact"
MCNEMAR_CHI2 = "mcnemar_chi2_cc"

# Bound on the bootstrap index matrix per chunk (elements; int64 -> 32 MiB) so that many items times many
# resamples never allocates gigabytes at once.
_BOOTSTRAP_CHUNK_ELEMENTS = 1 << 22


# ---------------------------------------------------------------------------------------------- validation
def _check_outcome(value: Any, name: str, index: int) -> Outcome:
    """Return ``value`` as bool/None, rejecting anything else (ints, floats, strings are likely bugs)."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise ValueError(
        f"{name}[{index}] is {value!r} ({type(value).__name__}); expected True, False or None "
        "(None = criterion not applicable)"
    )


def _outcomes(values: Sequence[Outcome], name: str) -> list[Outcome]:
    return [_check_outcome(v, name, i) for i, v in enumerate(values)]


def _paired(a: Sequence[Outcome], b: Sequence[Outcome]) -> tuple[np.ndarray, np.ndarray]:
    """Items where both outcomes are applicable, as two equal-length int arrays of 0/1 (shape [n_pairs])."""
    if len(a) != len(b):
        raise ValueError(
            f"paired outcomes must have equal lengths (one entry per shared item): len(a)={len(a)}, len(b)={len(b)}"
        )
    xa, xb = _outcomes(a, "a"), _outcomes(b, "b")
    keep = [(int(u), int(v)) for u, v in zip(xa, xb) if u is not None and v is not None]
    if not keep:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    arr = np.asarray(keep, dtype=np.int64)
    return arr[:, 0], arr[:, 1]


def _check_count(value: Any, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer count, got {value!r} ({type(value).__name__})")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return int(value)


def _check_confidence(confidence: float) -> float:
    if not (isinstance(confidence, (int, float)) and 0.0 < confidence < 1.0):
        raise ValueError(f"confidence must be a float strictly between 0 and 1 (e.g. 0.95), got {confidence!r}")
    return float(confidence)


def _check_p_values(p_values: Sequence[float]) -> np.ndarray:
    p = np.asarray(list(p_values), dtype=float)
    if p.ndim != 1:
        raise ValueError(f"p_values must be a flat sequence of numbers, got shape {p.shape}")
    bad = [i for i, x in enumerate(p) if not (0.0 <= x <= 1.0)]  # also catches NaN
    if bad:
        i = bad[0]
        raise ValueError(f"p_values[{i}] = {p[i]!r} is not a probability in [0, 1] ({len(bad)} invalid value(s))")
    return p


# ---------------------------------------------------------------------------------------------- one model
def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``successes / n``.

    With ``n == 0`` there is no information, so the whole range ``(0.0, 1.0)`` is returned. The bounds are
    exactly 0.0 when ``successes == 0`` and exactly 1.0 when ``successes == n``.

    >>> lo, hi = wilson_interval(8, 10)
    >>> round(lo, 4), round(hi, 4)
    (0.4902, 0.9433)
    >>> wilson_interval(0, 0)
    (0.0, 1.0)
    """
    successes = _check_count(successes, "successes")
    n = _check_count(n, "n")
    if successes > n:
        raise ValueError(f"successes ({successes}) cannot exceed n ({n})")
    confidence = _check_confidence(confidence)
    if n == 0:
        return (0.0, 1.0)
    z = float(_scipy_stats.norm.ppf(1.0 - (1.0 - confidence) / 2.0))
    p_hat = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    center = (p_hat + z2 / (2.0 * n)) / denom
    half = (z / denom) * math.sqrt(p_hat * (1.0 - p_hat) / n + z2 / (4.0 * n * n))
    # At the boundaries center == half mathematically; pin them so rounding never yields -1e-17 or 1+1e-16.
    low = 0.0 if successes == 0 else max(0.0, center - half)
    high = 1.0 if successes == n else min(1.0, center + half)
    return (low, high)


def rate_summary(outcomes: Sequence[Outcome], confidence: float = 0.95) -> dict[str, Any]:
    """Pass rate with a Wilson interval; ``None`` outcomes are "not applicable" and excluded from ``n``.

    Returns ``{"rate", "ci_low", "ci_high", "n", "successes"}``; with no applicable items the rate and
    interval are ``None`` (not 0, which would read as "always fails").

    >>> rate_summary([True, False, None, True])["n"], rate_summary([True, False, None, True])["successes"]
    (3, 2)
    >>> rate_summary([None])
    {'rate': None, 'ci_low': None, 'ci_high': None, 'n': 0, 'successes': 0}
    """
    values = [v for v in _outcomes(outcomes, "outcomes") if v is not None]
    n = len(values)
    successes = sum(values)
    if n == 0:
        return {"rate": None, "ci_low": None, "ci_high": None, "n": 0, "successes": 0}
    low, high = wilson_interval(successes, n, confidence)
    return {"rate": successes / n, "ci_low": low, "ci_high": high, "n": n, "successes": successes}


# ---------------------------------------------------------------------------------------------- two models
def discordant_counts(a: Sequence[Outcome], b: Sequence[Outcome]) -> tuple[int, int, int]:
    """Discordant pair counts ``(n01, n10, n_pairs)`` over items where both outcomes are applicable.

    ``n01`` counts items where ``a`` fails and ``b`` passes (b improves on a); ``n10`` counts items where
    ``a`` passes and ``b`` fails (b regresses); ``n_pairs`` is the number of items with both applicable.

    >>> discordant_counts([False, True, True, None], [True, False, True, True])
    (1, 1, 3)
    """
    xa, xb = _paired(a, b)
    n01 = int(np.sum((xa == 0) & (xb == 1)))
    n10 = int(np.sum((xa == 1) & (xb == 0)))
    return n01, n10, int(xa.size)


def mcnemar_test(n01: int, n10: int, exact_threshold: int = 25) -> tuple[float, str]:
    """Two-sided McNemar test of "a and b pass equally often" from the discordant counts.

    When ``n01 + n10 < exact_threshold`` the exact test is used: a two-sided binomial test of
    ``n10 ~ Binomial(n01 + n10, 0.5)``, p = min(1, 2 * P(X <= min(n01, n10))). Otherwise the
    continuity-corrected chi-square statistic ``max(|n01 - n10| - 1, 0)**2 / (n01 + n10)`` with 1 df
    (the max keeps a tie at statistic 0 rather than letting the correction overshoot). With no discordant
    pairs there is no evidence of a difference: ``(1.0, "mcnemar_exact")``.

    Returns ``(p_value, method)`` with method ``"mcnemar_exact"`` or ``"mcnemar_chi2_cc"``.

    >>> mcnemar_test(1, 6)  # 2 * (C(7,0) + C(7,1)) / 2**7 = 2 * 8 / 128
    (0.125, 'mcnemar_exact')
    """
    n01 = _check_count(n01, "n01")
    n10 = _check_count(n10, "n10")
    exact_threshold = _check_count(exact_threshold, "exact_threshold")
    n = n01 + n10
    if n == 0:
        return (1.0, MCNEMAR_EXACT)
    if n < exact_threshold:
        p = 2.0 * float(_scipy_stats.binom.cdf(min(n01, n10), n, 0.5))
        return (min(1.0, p), MCNEMAR_EXACT)
    statistic = max(abs(n01 - n10) - 1, 0) ** 2 / n
    return (float(_scipy_stats.chi2.sf(statistic, 1)), MCNEMAR_CHI2)


def cohens_h(p1: float, p2: float) -> float:
    """Cohen's h effect size for two proportions, signed as the effect of b (``p2``) over a (``p1``).

    ``h = 2*asin(sqrt(p2)) - 2*asin(sqrt(p1))``; |h| of 0.2 / 0.5 / 0.8 is conventionally small / medium /
    large.

    >>> round(cohens_h(0.2, 0.5), 4)  # pi/2 - 2*atan(1/2)
    0.6435
    >>> cohens_h(0.5, 0.5)
    0.0
    """
    for name, p in (("p1", p1), ("p2", p2)):
        if not (isinstance(p, (int, float, np.floating)) and 0.0 <= p <= 1.0):
            raise ValueError(f"{name} must be a proportion in [0, 1], got {p!r}")
    return 2.0 * math.asin(math.sqrt(p2)) - 2.0 * math.asin(math.sqrt(p1))


def paired_bootstrap_diff(
    a: Sequence[Outcome],
    b: Sequence[Outcome],
    n_resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """Difference of pass rates ``mean(b) - mean(a)`` with a paired percentile-bootstrap interval.

    Only items where both outcomes are applicable are used. Each resample draws item indices with
    replacement (the same indices for a and b, which keeps the pairing) from ``numpy.random.default_rng(seed)``;
    the interval is the (1-confidence)/2 and (1+confidence)/2 quantiles of the resampled differences.
    Raises ``ValueError`` when no item has both outcomes applicable (the difference is undefined).

    Returns ``(diff, ci_low, ci_high)``.

    >>> paired_bootstrap_diff([False, False, None], [True, True, False])
    (1.0, 1.0, 1.0)
    """
    n_resamples = _check_count(n_resamples, "n_resamples")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    confidence = _check_confidence(confidence)
    xa, xb = _paired(a, b)
    n = int(xa.size)
    if n == 0:
        raise ValueError("no item has both outcomes applicable (not None); the paired difference is undefined")
    d = (xb - xa).astype(np.float64)  # per-item difference in {-1, 0, 1}, shape [n]
    diff = float(d.mean())
    rng = np.random.default_rng(seed)
    rows_per_chunk = max(1, _BOOTSTRAP_CHUNK_ELEMENTS // n)
    resampled = np.empty(n_resamples, dtype=np.float64)
    for start in range(0, n_resamples, rows_per_chunk):
        stop = min(n_resamples, start + rows_per_chunk)
        idx = rng.integers(0, n, size=(stop - start, n))  # [chunk, n] item indices
        resampled[start:stop] = d[idx].mean(axis=1)
    alpha = 1.0 - confidence
    low, high = np.quantile(resampled, [alpha / 2.0, 1.0 - alpha / 2.0])
    return diff, float(low), float(high)


# ---------------------------------------------------------------------------------------------- many tests
def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni step-down adjusted p-values, in the original order.

    Sorted ascending, the i-th smallest (1-based) becomes ``max_{j<=i} min(1, (m - j + 1) * p_(j))``,
    so adjusted values are monotone in the raw ones and capped at 1.

    >>> [round(x, 6) for x in holm_adjust([0.01, 0.04, 0.03])]
    [0.03, 0.06, 0.06]
    """
    p = _check_p_values(p_values)
    m = p.size
    if m == 0:
        return []
    order = np.argsort(p, kind="stable")
    scaled = (m - np.arange(m)) * p[order]  # multipliers m, m-1, ..., 1
    adjusted_sorted = np.minimum(1.0, np.maximum.accumulate(scaled))
    out = np.empty(m, dtype=float)
    out[order] = adjusted_sorted
    return [float(x) for x in out]


def benjamini_hochberg_adjust(p_values: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg step-up adjusted p-values (false discovery rate), in the original order.

    Sorted ascending, the i-th smallest (1-based) becomes ``min_{j>=i} min(1, m / j * p_(j))``, so adjusted
    values are monotone in the raw ones and capped at 1.

    >>> [round(x, 6) for x in benjamini_hochberg_adjust([0.01, 0.04, 0.03])]
    [0.03, 0.04, 0.04]
    """
    p = _check_p_values(p_values)
    m = p.size
    if m == 0:
        return []
    order = np.argsort(p, kind="stable")
    scaled = p[order] * m / np.arange(1, m + 1)
    adjusted_sorted = np.minimum(1.0, np.minimum.accumulate(scaled[::-1])[::-1])
    out = np.empty(m, dtype=float)
    out[order] = adjusted_sorted
    return [float(x) for x in out]


def adjust(p_values: Sequence[float], method: str) -> list[float]:
    """Multiple-comparison adjustment by name: ``"holm"`` (family-wise error) or ``"bh"`` (false discovery rate).

    >>> [round(x, 6) for x in adjust([0.01, 0.04, 0.03], "bh")]
    [0.03, 0.04, 0.04]
    """
    if method == "holm":
        return holm_adjust(p_values)
    if method == "bh":
        return benjamini_hochberg_adjust(p_values)
    raise ValueError(f"unknown p-value adjustment method {method!r}; allowed: {', '.join(ADJUST_METHODS)}")


# ---------------------------------------------------------------------------------------------- k models
def cochran_q(outcomes: Sequence[Sequence[Outcome]]) -> tuple[float, int, float]:
    """Cochran's Q test that k >= 2 models pass a criterion equally often; rows are items, columns models.

    Items (rows) with any ``None`` are dropped, since Q needs every model's outcome on an item. Rows where
    all models agree contribute nothing. If no row has disagreement the statistic is undefined (0/0) and
    ``Q = 0, p = 1`` is returned. ``p`` is the chi-square(k - 1) upper tail. For k = 2, Q equals McNemar's
    uncorrected statistic ``(n01 - n10)**2 / (n01 + n10)``.

    Returns ``(Q, df, p_value)`` with ``df = k - 1``.

    >>> q, df, p = cochran_q([[True, True, True], [True, True, False], [True, False, False],
    ...                       [True, True, False], [False, False, False], [True, False, True]])
    >>> q, df, round(p, 6)  # 2 * (3*38 - 10**2) / (3*10 - 22) = 28/8; chi2(2) tail = exp(-1.75)
    (3.5, 2, 0.173774)
    """
    rows = list(outcomes)
    if not rows:
        raise ValueError("cochran_q needs at least one item (row); got an empty table")
    k = len(rows[0])
    if k < 2:
        raise ValueError(f"cochran_q needs at least 2 models (columns) per row, got {k}")
    kept: list[list[int]] = []
    for i, row in enumerate(rows):
        if len(row) != k:
            raise ValueError(f"row {i} has {len(row)} outcomes but row 0 has {k}; every item needs one per model")
        values = [_check_outcome(v, f"outcomes[{i}]", j) for j, v in enumerate(row)]
        if any(v is None for v in values):
            continue
        kept.append([int(v) for v in values])
    df = k - 1
    if not kept:
        return (0.0, df, 1.0)
    x = np.asarray(kept, dtype=np.int64)  # [items, k]
    col = x.sum(axis=0)  # passes per model, shape [k]
    row = x.sum(axis=1)  # passes per item, shape [items]
    total = int(col.sum())
    denominator = k * total - int(np.sum(row * row))  # = sum_i R_i (k - R_i); 0 iff every row is unanimous
    if denominator == 0:
        return (0.0, df, 1.0)
    q = (k - 1) * (k * int(np.sum(col * col)) - total * total) / denominator
    return (float(q), df, float(_scipy_stats.chi2.sf(q, df)))


# ---------------------------------------------------------------------------------------------- one contrast
def compare(
    a: Sequence[Outcome],
    b: Sequence[Outcome],
    *,
    n_resamples: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """All paired statistics for one contrast ``a -> b`` on one criterion.

    Returns ``{"diff", "ci_low", "ci_high", "p_value", "test", "cohens_h", "n01", "n10", "n"}`` where
    ``diff`` and ``cohens_h`` are b minus a over the ``n`` items with both outcomes applicable, the interval
    is the paired bootstrap one, and ``p_value``/``test`` come from :func:`mcnemar_test`. With ``n == 0``
    the effect fields are ``None`` and ``p_value`` is 1.0 (no evidence), so the p-value can still enter a
    multiple-comparison adjustment.

    >>> r = compare([False, False, True, None], [True, True, True, True])
    >>> r["diff"], r["n01"], r["n10"], r["n"], r["test"], r["p_value"]  # exact: 2 * P(X<=0 | 2, .5) = 0.5
    (0.6666666666666666, 2, 0, 3, 'mcnemar_exact', 0.5)
    """
    n01, n10, n = discordant_counts(a, b)
    p_value, test = mcnemar_test(n01, n10)
    diff: float | None = None
    low: float | None = None
    high: float | None = None
    h: float | None = None
    if n > 0:
        diff, low, high = paired_bootstrap_diff(a, b, n_resamples=n_resamples, seed=seed)
        xa, xb = _paired(a, b)
        h = cohens_h(float(xa.mean()), float(xb.mean()))
    return {
        "diff": diff,
        "ci_low": low,
        "ci_high": high,
        "p_value": p_value,
        "test": test,
        "cohens_h": h,
        "n01": n01,
        "n10": n10,
        "n": n,
    }


def seed_spread(per_seed: Mapping[int, Mapping[str, float | None]]) -> dict[str, dict[str, Any]]:
    """Spread of one number per model over training seeds: mean, sample SD, min, max and the values.

    ``per_seed`` maps seed -> {model: value}; models missing for a seed (or None) are left out of that model's
    spread.

    >>> seed_spread({0: {"sft": 0.3}, 1: {"sft": 0.5}})["sft"]
    {'n_seeds': 2, 'mean': 0.4, 'sd': 0.1414, 'min': 0.3, 'max': 0.5, 'values': {0: 0.3, 1: 0.5}}
    """
    models = sorted({m for values in per_seed.values() for m in values})
    spread: dict[str, dict[str, Any]] = {}
    for model in models:
        values = {seed: v[model] for seed, v in sorted(per_seed.items()) if v.get(model) is not None}
        xs = list(values.values())
        if not xs:
            continue
        mean = sum(xs) / len(xs)
        sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
        spread[model] = {"n_seeds": len(xs), "mean": round(mean, 4), "sd": round(sd, 4), "min": min(xs),
                         "max": max(xs), "values": values}
    return spread
