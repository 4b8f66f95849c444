"""The statistics of results.json, built from score rows (no model, no I/O): rates with per-seed spread, the
pre-registered contrasts with their primary endpoints, secondary families, power, and the headline.

A score row is ``{"model", "seed", "item_id", "family", <endpoint>: True/False/None ...}``; ``seed`` is None for
an arm that is not trained (its outcomes serve every seed). Endpoints are :data:`alignkit.eval.scoring.ENDPOINTS`.

**Not evidence by design.** An arm cannot pass some endpoints whatever it answers: the base model never saw the
study's ``END`` (``ends_with_end``, hence ``format`` and ``overall``, are 0% by construction), and the base in its
own few-shot format is also cut by its own stop strings, so its run-on is never generated (its whole format
composite is settled by the prompt, not the model). :data:`BY_DESIGN` lists these; their rates are reported but
marked, and a contrast on them is descriptive, never tested.

**Tests.** Each pre-registered contrast ``a->b:endpoint`` names its primary endpoint; the primaries that are
evidence form one family, adjusted with Holm. Every other endpoint of a contrast is secondary, adjusted within
that contrast's family with ``evaluation.correction``. The test, interval and minimum detectable difference
are those of :mod:`alignkit.eval.contrast_stats` (items the unit, seeds nested).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from alignkit.config import FAMILIES, UNTRAINED_MODELS, parse_contrast
from alignkit.eval import contrast_stats, scoring, stats

#: Endpoints each untrained arm cannot pass (or cannot fail) by the way it is prompted, with the reason.
BY_DESIGN: dict[str, dict[str, str]] = {
    "base": {name: "the base model never saw END, so it cannot emit it: 0% by construction"
             for name in ("ends_with_end", "format", "overall")},
    "base_fewshot": {
        **{name: "prompted in its own Q:/A: format with its own stop strings: it never sees END and its run-on "
                 "is cut before it is generated, so format is settled by the prompt, not the model"
           for name in ("ends_with_end", "proper_structure", "no_rambling", "format")},
        "overall": "includes ends_with_end, which it cannot pass (never saw END)",
    },
}
#: Plain words for the study's contrasts (headline and report); other contrasts read "b vs a".
CONTRAST_WORDS: dict[tuple[str, str], str] = {
    ("base_fewshot", "sft"): "what SFT adds beyond the base model prompted the way it was trained",
    ("sft", "sft_dpo"): "what DPO adds on top of SFT",
    ("base_fewshot", "dpo_only"): "what DPO alone adds to the base model",
    ("dpo_only", "sft_dpo"): "whether the SFT foundation matters for DPO",
    ("base", "sft"): "what SFT does to the answer format",
}
TEST_NAME = ("two-sided sign-flip permutation test over items of the per-item difference averaged over training "
             "seeds (with one seed: McNemar's exact test)")
INTERVAL_NAME = "percentile bootstrap over items, each item keeping all its seeds"


def by_design(model: str, endpoint: str) -> str | None:
    """Why ``model`` cannot pass ``endpoint`` by design, or None when its rate is evidence.

    >>> by_design("base", "format") is not None, by_design("sft", "format")
    (True, None)
    """
    return BY_DESIGN.get(model, {}).get(endpoint)


def outcome_table(score_rows: Sequence[Mapping[str, Any]], models: Sequence[str],
                  seeds: Sequence[int]) -> tuple[list[str], dict[str, str], dict[str, dict[int, list[dict]]]]:
    """``(item_ids, family_of, {model: {seed: rows in item order}})``; untrained arms (rows with seed None) are
    repeated for every seed. Every model needs every item under every seed (paired statistics)."""
    order: dict[str, None] = {}
    family_of: dict[str, str] = {}
    grouped: dict[str, dict[Any, dict[str, Mapping[str, Any]]]] = defaultdict(lambda: defaultdict(dict))
    for row in score_rows:
        if row["model"] not in models:
            continue
        cell = grouped[row["model"]][row.get("seed")]
        if row["item_id"] in cell:
            raise ValueError(f"scores: model {row['model']!r} seed {row.get('seed')} has item {row['item_id']!r} "
                             "twice")
        cell[row["item_id"]] = row
        order.setdefault(row["item_id"], None)
        family_of[row["item_id"]] = row["family"]
    item_ids = list(order)
    table: dict[str, dict[int, list[dict]]] = {}
    for model in models:
        by_seed = grouped.get(model, {})
        table[model] = {}
        for seed in seeds:
            cell = by_seed.get(None) if None in by_seed else by_seed.get(seed)
            if cell is None:
                raise ValueError(f"scores: model {model!r} has no rows for seed {seed} (seeds {list(seeds)}); "
                                 "paired statistics need every model scored under every seed")
            missing = [i for i in item_ids if i not in cell]
            if missing:
                raise ValueError(f"scores: model {model!r} seed {seed} lacks {len(missing)} item(s), e.g. "
                                 f"{missing[0]!r}; paired statistics need every model scored on the same items")
            table[model][seed] = [cell[i] for i in item_ids]
    return item_ids, family_of, table


def _outcomes(rows_by_seed: Mapping[int, Sequence[Mapping[str, Any]]], endpoint: str,
              keep: Sequence[bool] | None = None) -> dict[int, list[Any]]:
    return {seed: [row[endpoint] for k, row in enumerate(rows) if keep is None or keep[k]]
            for seed, rows in rows_by_seed.items()}


def model_rates(table: Mapping[str, Mapping[int, Sequence[Mapping[str, Any]]]], item_ids: Sequence[str],
                family_of: Mapping[str, str], endpoints: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per model: pooled rate, Wilson interval (n = items), per-seed rates and spread, for every endpoint overall
    and per family; ``by_design`` names the endpoints that are not evidence for this model."""
    families = sorted(set(family_of.values()), key=lambda f: (FAMILIES.index(f) if f in FAMILIES else 99, f))
    out: dict[str, dict[str, Any]] = {}
    for model, rows_by_seed in table.items():
        if model in UNTRAINED_MODELS:  # generated once: its copies under every seed are not a spread
            first = next(iter(rows_by_seed))
            rows_by_seed = {first: rows_by_seed[first]}
        per_family = {}
        for family in families:
            keep = [family_of[i] == family for i in item_ids]
            per_family[family] = {e: contrast_stats.pooled_rate(_outcomes(rows_by_seed, e, keep)) for e in endpoints}
        out[model] = {
            "trained": model not in UNTRAINED_MODELS, "n_items": len(item_ids),
            "endpoints": {e: contrast_stats.pooled_rate(_outcomes(rows_by_seed, e)) for e in endpoints},
            "families": per_family,
            "by_design": {e: reason for e in endpoints if (reason := by_design(model, e))},
        }
    return out


def _contrast(table, a: str, b: str, endpoint: str, *, n_bootstrap: int, n_permutations: int, seed: int,
              alpha_for_mde: float, power: float) -> dict[str, Any]:
    d = contrast_stats.item_differences(_outcomes(table[a], endpoint), _outcomes(table[b], endpoint))
    row: dict[str, Any] = {"a": a, "b": b, "endpoint": endpoint, "n_items": int(d.size)}
    if d.size == 0:
        return {**row, "diff": None, "ci_low": None, "ci_high": None, "p_value": 1.0, "second_moment": None,
                "mde": None, "cohens_h": None}
    low, high = contrast_stats.bootstrap_mean_ci(d, n_bootstrap, seed)
    rate_a = contrast_stats.pooled_rate(_outcomes(table[a], endpoint))["rate"]
    rate_b = contrast_stats.pooled_rate(_outcomes(table[b], endpoint))["rate"]
    second = float(np.mean(d * d))
    return {**row, "diff": float(d.mean()), "ci_low": low, "ci_high": high,
            "p_value": contrast_stats.sign_flip_p(d, n_permutations, seed), "second_moment": round(second, 4),
            "mde": contrast_stats.minimum_detectable_difference(int(d.size), second, alpha_for_mde, power),
            "cohens_h": stats.cohens_h(rate_a, rate_b) if rate_a is not None and rate_b is not None else None,
            "rate_a": rate_a, "rate_b": rate_b}


def verdict(row: Mapping[str, Any], alpha: float) -> str:
    """What a tested contrast shows, in words. A difference smaller than the minimum detectable difference is
    reported as not distinguishable from no effect even when its p-value is below alpha: the study is not powered
    to tell a difference that small from noise, so it does not claim one.

    >>> verdict({"p_adjusted": 0.01, "diff": 0.2, "mde": 0.1, "b": "sft", "a": "base"}, 0.05)
    'sft is higher than base'
    >>> verdict({"p_adjusted": 0.4, "diff": 0.05, "mde": 0.12, "b": "sft", "a": "base"}, 0.05)
    'not distinguishable from no effect at this n (the difference is below the minimum detectable difference)'
    >>> verdict({"p_adjusted": 0.02, "diff": -0.05, "mde": 0.08, "b": "sft_dpo", "a": "sft"}, 0.05)
    'not distinguishable from no effect at this n (the difference is below the minimum detectable difference, although p < 0.05)'
    """
    if row.get("p_adjusted") is None:
        return "descriptive only: " + (row.get("by_design") or "not tested")
    if row.get("mde") is None or abs(row["diff"] or 0.0) < row["mde"]:
        below = "the difference is below the minimum detectable difference"
        if row["p_adjusted"] < alpha:
            below += f", although p < {alpha:g}"
        return f"not distinguishable from no effect at this n ({below})"
    if row["p_adjusted"] < alpha:
        return f"{row['b']} is {'higher' if row['diff'] > 0 else 'lower'} than {row['a']}"
    return "not significant after correction, although the difference exceeds the minimum detectable difference"


def distinguishable(row: Mapping[str, Any], alpha: float) -> bool:
    """Whether a tested contrast shows a difference: significant after correction and at least the minimum
    detectable difference (what the report colours as an effect).

    >>> distinguishable({"p_adjusted": 0.02, "diff": -0.05, "mde": 0.08}, 0.05)
    False
    """
    return (row.get("p_adjusted") is not None and row["p_adjusted"] < alpha and row.get("mde") is not None
            and abs(row["diff"] or 0.0) >= row["mde"])


def contrast_rows(table, contrasts: Sequence[str], endpoints: Sequence[str], *, correction: str, alpha: float,
                  power: float, n_bootstrap: int, n_permutations: int, seed: int) -> list[dict[str, Any]]:
    """Every pre-registered contrast on every endpoint, with its role, family and adjusted p-value.

    ``role`` is ``primary`` (the contrast's named endpoint), ``secondary`` or ``descriptive`` (an endpoint one of
    the two arms cannot pass by design: not tested). The primaries form family ``primary`` (Holm); each
    contrast's secondaries form family ``a->b`` (``correction``). The MDE is at the Bonferroni level
    ``alpha / tests in the family`` (Holm's strictest step).
    """
    parsed = [parse_contrast(text) for text in contrasts]
    plan = []
    for a, b, primary in parsed:
        for endpoint in endpoints:
            reason = by_design(a, endpoint) or by_design(b, endpoint)
            role = "descriptive" if reason else ("primary" if endpoint == primary else "secondary")
            plan.append((a, b, endpoint, role, reason))
    family_size: dict[str, int] = defaultdict(int)
    for a, b, _e, role, _r in plan:
        if role != "descriptive":
            family_size["primary" if role == "primary" else f"{a}->{b}"] += 1
    rows = []
    for a, b, endpoint, role, reason in plan:
        family = "primary" if role == "primary" else (f"{a}->{b}" if role == "secondary" else None)
        level = alpha / family_size[family] if family else alpha
        row = _contrast(table, a, b, endpoint, n_bootstrap=n_bootstrap, n_permutations=n_permutations, seed=seed,
                        alpha_for_mde=level, power=power)
        row.update({"role": role, "family": family, "by_design": reason, "mde_alpha": level,
                    "p_value": None if role == "descriptive" else row["p_value"], "p_adjusted": None})
        rows.append(row)
    for family in family_size:
        members = [row for row in rows if row["family"] == family]
        method = "holm" if family == "primary" else correction
        for row, adjusted in zip(members, stats.adjust([row["p_value"] for row in members], method)):
            row["p_adjusted"] = adjusted
    for row in rows:
        row["significant"] = row["p_adjusted"] is not None and row["p_adjusted"] < alpha
        row["distinguishable"] = distinguishable(row, alpha)
        row["verdict"] = verdict(row, alpha)
    return rows


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _pts(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:+.1f}"


def headline(rates: Mapping[str, Mapping[str, Any]], rows: Sequence[Mapping[str, Any]], alpha: float,
             n_seeds: int, split: str = "test") -> str:
    """One sentence per pre-registered contrast, from the numbers: what was compared, on which primary endpoint,
    the difference with its interval, Holm-adjusted p and minimum detectable difference, and the verdict. A
    descriptive (by-design) primary says so instead of a test."""
    sentences = []
    for row in rows:
        if row["role"] not in ("primary",) and not (row["role"] == "descriptive" and _is_named_primary(row)):
            continue
        a, b, endpoint = row["a"], row["b"], row["endpoint"]
        words = CONTRAST_WORDS.get((a, b), f"{b} vs {a}")
        rate_a = rates[a]["endpoints"][endpoint]["rate"]
        rate_b = rates[b]["endpoints"][endpoint]["rate"]
        start = f"{words[0].upper()}{words[1:]} ({b} vs {a}, {endpoint}): {_pct(rate_b)} vs {_pct(rate_a)}"
        if row["role"] == "descriptive":
            sentences.append(f"{start}; not tested, because {row['by_design']}.")
            continue
        mde = "n/a" if row["mde"] is None else f"{100 * row['mde']:.1f} points"
        sentences.append(f"{start}, {_pts(row['diff'])} points (95% CI {_pts(row['ci_low'])} to "
                         f"{_pts(row['ci_high'])}; Holm-adjusted p = {format_p(row['p_adjusted'])}; minimum "
                         f"detectable difference {mde}): {row['verdict']}.")
    if not sentences:
        return "No pre-registered contrast could be computed in this run."
    seeds = f"{n_seeds} training seeds pooled" if n_seeds > 1 else "one training seed"
    items = "held-out test items" if split == "test" else "dev items (a selection run, not the study's result)"
    return f"On {rows[0]['n_items'] if rows else 0} {items}, {seeds}. " + " ".join(sentences)


def _is_named_primary(row: Mapping[str, Any]) -> bool:
    return bool(row.get("named_primary"))


def format_p(p: float | None) -> str:
    """A p-value for prose and tables.

    >>> [format_p(p) for p in (0.5, 0.04321, 0.000012, 1.0, None)]
    ['0.5', '0.0432', '1.2e-05', '1', 'n/a']
    """
    if p is None or (isinstance(p, float) and np.isnan(p)):
        return "n/a"
    if p < 1e-4:
        return f"{p:.1e}"
    return f"{p:.3g}"


def build_results(score_rows: Sequence[Mapping[str, Any]], *, models: Sequence[str], seeds: Sequence[int],
                  contrasts: Sequence[str], correction: str = "holm", alpha: float = 0.05, power: float = 0.8,
                  n_bootstrap: int = 2000, n_permutations: int = 20000, seed: int = 0,
                  split: str = "test") -> dict[str, Any]:
    """The statistics part of results.json from score rows."""
    endpoints = scoring.ENDPOINTS
    item_ids, family_of, table = outcome_table(score_rows, models, seeds)
    rates = model_rates(table, item_ids, family_of, endpoints)
    rows = contrast_rows(table, contrasts, endpoints, correction=correction, alpha=alpha, power=power,
                         n_bootstrap=n_bootstrap, n_permutations=n_permutations, seed=seed)
    named = {(a, b, e) for a, b, e in (parse_contrast(text) for text in contrasts)}
    for row in rows:
        row["named_primary"] = (row["a"], row["b"], row["endpoint"]) in named
    # Each response once: an untrained arm's rows serve every seed but were generated once.
    evidence_rows = [row for m in models for s in (seeds[:1] if m in UNTRAINED_MODELS else seeds)
                     for row in table[m][s]]
    return {
        "model_order": list(models), "endpoints": list(endpoints), "criteria": list(scoring.CRITERIA),
        "composites": {name: list(parts) for name, parts in scoring.COMPOSITES.items()},
        "seeds": list(seeds), "n_items": len(item_ids),
        "families": sorted(set(family_of.values()), key=lambda f: (FAMILIES.index(f) if f in FAMILIES else 99, f)),
        "models": rates, "by_design": BY_DESIGN, "contrasts": rows,
        "pre_registered": list(contrasts),
        "correction": {"primary": "holm", "secondary": correction, "alpha": alpha, "power": power,
                       "test": TEST_NAME, "interval": INTERVAL_NAME, "bootstrap_resamples": n_bootstrap,
                       "permutation_resamples": n_permutations, "random_seed": seed,
                       "families": "primary: the named endpoint of each pre-registered contrast (Holm); "
                                   "secondary: every other endpoint of one contrast, adjusted within that contrast",
                       "mde": "minimum detectable difference at the stated power and at the Bonferroni level "
                              "alpha / tests in the family, for the observed discordance"},
        "phi": {"names": list(scoring.CRITERIA),
                "matrix": contrast_stats.phi_matrix(evidence_rows, scoring.CRITERIA)},
        "split": split, "headline": headline(rates, rows, alpha, len(seeds), split),
    }
