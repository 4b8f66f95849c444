"""Paired statistics for boolean per-item outcomes of models evaluated on the same prompts.

Every model answers the same held-out instructions, so each criterion gives one boolean per
(model, item); a comparison between two models is *paired* over items. An outcome of ``None`` means
"criterion not applicable to this item" and is excluded, pairwise, from every computation.

Direction convention used throughout: a contrast is ``a -> b`` ("b compared with a"), so a positive
difference or Cohen's h means ``b`` passes more often than ``a``.

The arithmetic is scipy's and statsmodels'; written here is only what they leave to the caller: validation,
pairwise exclusion of ``None``, the direction convention, and the degenerate cases the libraries answer with
NaN, a warning or an error (each named in its function's docstring).

Functions are pure: inputs are never modified, and the only randomness (the bootstrap) is drawn from a
``numpy.random.Generator`` seeded by an explicit argument.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats as _scipy_stats
from statsmodels.stats import contingency_tables as _tables
from statsmodels.stats.multitest import multipletests as _multipletests
from statsmodels.stats.proportion import proportion_confint as _proportion_confint
from statsmodels.stats.proportion import proportion_effectsize as _proportion_effectsize

Outcome = bool | None

ADJUST_METHODS = ("holm", "bh")
MCNEMAR_EXACT = "mcnemar_exact"
MCNEMAR_CHI2 = "mcnemar_chi2_cc"

# Bound on the bootstrap index matrix per batch (elements; int64 -> 32 MiB) so that many items times many
# resamples never allocates gigabytes at once; passed to scipy.stats.bootstrap as ``batch``.
_BOOTSTRAP_CHUNK_ELEMENTS = 1 << 22


# ---------------------------------------------------------------------------------------------- validation
def _check_outcome(value: Any, name: str, index: int) -> Outcome:
    """Return ``value`` as bool/None, rejecting anything else (ints, floats, strings are likely bugs)."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise ValueError(f"{name}[{index}] is {value!r} ({type(value).__name__}); expected True, False or None "
                     "(None = criterion not applicable)")


def _outcomes(values: Sequence[Outcome], name: str) -> list[Outcome]:
    return [_check_outcome(v, name, i) for i, v in enumerate(values)]


def _paired(a: Sequence[Outcome], b: Sequence[Outcome]) -> tuple[np.ndarray, np.ndarray]:
    """Items where both outcomes are applicable, as two equal-length int arrays of 0/1 (shape [n_pairs])."""
    if len(a) != len(b):
        raise ValueError(f"paired outcomes must have equal lengths (one entry per shared item): "
                         f"len(a)={len(a)}, len(b)={len(b)}")
    keep = [(int(u), int(v)) for u, v in zip(_outcomes(a, "a"), _outcomes(b, "b")) if u is not None and v is not None]
    arr = np.asarray(keep, dtype=np.int64).reshape(-1, 2)
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
        raise ValueError(f"p_values[{bad[0]}] = {p[bad[0]]!r} is not a probability in [0, 1] "
                         f"({len(bad)} invalid value(s))")
    return p


# ---------------------------------------------------------------------------------------------- one model
def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for ``successes / n``: statsmodels ``proportion_confint(method="wilson")``.

    Added here: with ``n == 0`` (statsmodels divides by zero) the whole range ``(0.0, 1.0)`` is returned,
    and the bounds are pinned to exactly 0.0 when ``successes == 0`` and 1.0 when ``successes == n``
    (mathematically exact there, but floating point can leave e.g. 1e-17).

    >>> lo, hi = wilson_interval(8, 10)
    >>> round(lo, 4), round(hi, 4)
    (0.4902, 0.9433)
    >>> wilson_interval(0, 0)
    (0.0, 1.0)
    """
    successes, n = _check_count(successes, "successes"), _check_count(n, "n")
    if successes > n:
        raise ValueError(f"successes ({successes}) cannot exceed n ({n})")
    confidence = _check_confidence(confidence)
    if n == 0:
        return (0.0, 1.0)
    low, high = _proportion_confint(successes, n, alpha=1.0 - confidence, method="wilson")
    return (0.0 if successes == 0 else float(low), 1.0 if successes == n else float(high))


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
    n, successes = len(values), sum(values)
    if n == 0:
        return {"rate": None, "ci_low": None, "ci_high": None, "n": 0, "successes": 0}
    low, high = wilson_interval(successes, n, confidence)
    return {"rate": successes / n, "ci_low": low, "ci_high": high, "n": n, "successes": successes}


# ---------------------------------------------------------------------------------------------- two models
def discordant_counts(a: Sequence[Outcome], b: Sequence[Outcome]) -> tuple[int, int, int]:
    """Discordant pair counts ``(n01, n10, n_pairs)`` over items where both outcomes are applicable.

    ``n01``: ``a`` fails and ``b`` passes (b improves on a); ``n10``: ``a`` passes and ``b`` fails (b regresses).

    >>> discordant_counts([False, True, True, None], [True, False, True, True])
    (1, 1, 3)
    """
    xa, xb = _paired(a, b)
    return int(np.sum((xa == 0) & (xb == 1))), int(np.sum((xa == 1) & (xb == 0))), int(xa.size)


def mcnemar_test(n01: int, n10: int, exact_threshold: int = 25) -> tuple[float, str]:
    """Two-sided McNemar test of "a and b pass equally often": statsmodels ``contingency_tables.mcnemar``.

    When ``n01 + n10 < exact_threshold`` the exact test is used (``exact=True``: p = min(1, 2 * P(X <=
    min(n01, n10))) with X ~ Binomial(n01 + n10, 0.5)). Otherwise the continuity-corrected chi-square
    ``max(|n01 - n10| - 1, 0)**2 / (n01 + n10)`` with 1 df. statsmodels' ``correction=True`` computes
    ``(|n01 - n10| - 1)**2 / n``, which on a tie overshoots to ``1 / n`` (p < 1 for identical counts), so the
    correction is requested only when the counts differ; that gives the max(..., 0) statistic exactly.
    With no discordant pairs there is no evidence of a difference: ``(1.0, "mcnemar_exact")``.

    Returns ``(p_value, method)`` with method ``"mcnemar_exact"`` or ``"mcnemar_chi2_cc"``.

    >>> mcnemar_test(1, 6)  # 2 * (C(7,0) + C(7,1)) / 2**7 = 2 * 8 / 128
    (0.125, 'mcnemar_exact')
    """
    n01, n10 = _check_count(n01, "n01"), _check_count(n10, "n10")
    exact_threshold = _check_count(exact_threshold, "exact_threshold")
    if n01 + n10 == 0:
        return (1.0, MCNEMAR_EXACT)
    exact = n01 + n10 < exact_threshold
    result = _tables.mcnemar([[0, n01], [n10, 0]], exact=exact, correction=n01 != n10)
    return (float(result.pvalue), MCNEMAR_EXACT if exact else MCNEMAR_CHI2)


def cohens_h(p1: float, p2: float) -> float:
    """Cohen's h for two proportions, signed as the effect of b (``p2``) over a (``p1``).

    ``h = 2*asin(sqrt(p2)) - 2*asin(sqrt(p1))``, i.e. statsmodels ``proportion_effectsize(p2, p1)``; |h| of
    0.2 / 0.5 / 0.8 is conventionally small / medium / large.

    >>> round(cohens_h(0.2, 0.5), 4)  # pi/2 - 2*atan(1/2)
    0.6435
    >>> cohens_h(0.5, 0.5)
    0.0
    """
    for name, p in (("p1", p1), ("p2", p2)):
        if not (isinstance(p, (int, float, np.floating)) and 0.0 <= p <= 1.0):
            raise ValueError(f"{name} must be a proportion in [0, 1], got {p!r}")
    return float(_proportion_effectsize(p2, p1))


def _mean_paired_difference(xa: np.ndarray, xb: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(xb - xa, axis=axis)


def paired_bootstrap_diff(a: Sequence[Outcome], b: Sequence[Outcome], n_resamples: int = 2000, seed: int = 0,
                          confidence: float = 0.95) -> tuple[float, float, float]:
    """Difference of pass rates ``mean(b) - mean(a)`` with a paired percentile-bootstrap interval.

    ``scipy.stats.bootstrap(paired=True, method="percentile")`` over the items where both outcomes are
    applicable: each resample draws item indices with replacement (the same for a and b) from
    ``numpy.random.default_rng(seed)``; the interval is the (1-confidence)/2 and (1+confidence)/2 quantiles.
    Added here: a single item (scipy needs two) has every resample equal to it, so ``(d, d, d)``; and
    ``ValueError`` when no item has both outcomes applicable (the difference is undefined).

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
    diff = float(_mean_paired_difference(xa, xb))
    if n == 1:
        return diff, diff, diff
    result = _scipy_stats.bootstrap(
        (xa, xb), _mean_paired_difference, paired=True, vectorized=True, method="percentile",
        n_resamples=n_resamples, confidence_level=confidence, batch=max(1, _BOOTSTRAP_CHUNK_ELEMENTS // n),
        random_state=np.random.default_rng(seed),  # keyword accepted by every scipy >= 1.11 (``rng`` needs 1.15)
    )
    return diff, float(result.confidence_interval.low), float(result.confidence_interval.high)


# ---------------------------------------------------------------------------------------------- many tests
def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni step-down adjusted p-values in the original order (``adjust(p_values, "holm")``).

    >>> [round(x, 6) for x in holm_adjust([0.01, 0.04, 0.03])]
    [0.03, 0.06, 0.06]
    """
    return adjust(p_values, "holm")


def benjamini_hochberg_adjust(p_values: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg (false discovery rate) adjusted p-values in the original order (``adjust(.., "bh")``).

    >>> [round(x, 6) for x in benjamini_hochberg_adjust([0.01, 0.04, 0.03])]
    [0.03, 0.04, 0.04]
    """
    return adjust(p_values, "bh")


def adjust(p_values: Sequence[float], method: str) -> list[float]:
    """Multiple-comparison adjustment by name: ``"holm"`` (family-wise error) or ``"bh"`` (false discovery rate).

    statsmodels ``multipletests(method="holm" / "fdr_bh")``. Sorted ascending, the i-th smallest of m
    p-values becomes ``max_{j<=i} (m - j + 1) * p_(j)`` (Holm) or ``min_{j>=i} m / j * p_(j)`` (BH), capped
    at 1, so adjusted values keep the ranking of the raw ones. Added here: range checks on the p-values, and
    an empty list gives ``[]`` (multipletests rejects an empty array).

    >>> [round(x, 6) for x in adjust([0.01, 0.04, 0.03], "bh")]
    [0.03, 0.04, 0.04]
    """
    if method not in ADJUST_METHODS:
        raise ValueError(f"unknown p-value adjustment method {method!r}; allowed: {', '.join(ADJUST_METHODS)}")
    p = _check_p_values(p_values)
    if p.size == 0:
        return []
    return [float(x) for x in _multipletests(p, method={"holm": "holm", "bh": "fdr_bh"}[method])[1]]


# ---------------------------------------------------------------------------------------------- k models
def cochran_q(outcomes: Sequence[Sequence[Outcome]]) -> tuple[float, int, float]:
    """Cochran's Q test that k >= 2 models pass equally often (rows items, columns models): statsmodels
    ``cochrans_q``; ``p`` is the chi-square(k - 1) upper tail. Returns ``(Q, df, p_value)``, ``df = k - 1``.

    Items (rows) with any ``None`` are dropped, since Q needs every model's outcome on an item; rows where
    all models agree contribute nothing. If no row has disagreement Q is 0/0 (statsmodels gives NaN and a
    warning) and ``Q = 0, p = 1`` is returned. For k = 2, Q is McNemar's uncorrected ``(n01 - n10)**2 / n``.

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
        if all(v is not None for v in values):
            kept.append([int(v) for v in values])
    x = np.asarray(kept, dtype=np.int64).reshape(-1, k)  # [items, k]
    if not np.any(x.min(axis=1) != x.max(axis=1)):  # no row with disagreement
        return (0.0, k - 1, 1.0)
    result = _tables.cochrans_q(x)
    return (float(result.statistic), int(result.df), float(result.pvalue))


# ---------------------------------------------------------------------------------------------- one contrast
def compare(a: Sequence[Outcome], b: Sequence[Outcome], *, n_resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
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
    out: dict[str, Any] = {"diff": None, "ci_low": None, "ci_high": None, "p_value": p_value, "test": test,
                           "cohens_h": None, "n01": n01, "n10": n10, "n": n}
    if n > 0:
        out["diff"], out["ci_low"], out["ci_high"] = paired_bootstrap_diff(a, b, n_resamples=n_resamples, seed=seed)
        xa, xb = _paired(a, b)
        out["cohens_h"] = cohens_h(float(xa.mean()), float(xb.mean()))
    return out
