"""Tests for alignkit.eval.results: the statistics of results.json built from synthetic score rows.

Covers the seed-pooled contrast against a hand-worked case (per-item differences averaged over two seeds, exact
sign-flip p by enumeration), the roles of the pre-registered contrasts (primary / secondary / descriptive: an
endpoint an arm cannot pass by design is never tested and never joins a family), Holm over the primaries and the
secondary correction within each contrast (by hand), the headline's sentences, untrained arms (rows with seed
None) serving every training seed, and the errors for unpaired scores.
"""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

from alignkit.config import CONTRASTS, EVAL_MODELS
from alignkit.eval import contrast_stats, results, scoring

T, F = True, False


def _rows(model: str, seed: int | None, outcomes: dict[str, list[bool]], n: int,
          family=lambda i: "capitals" if i % 2 == 0 else "arithmetic") -> list[dict]:
    """Score rows for one arm and seed: every endpoint passes unless ``outcomes`` says otherwise."""
    rows = []
    for i in range(n):
        row = {"model": model, "seed": seed, "item_id": f"i{i}", "family": family(i)}
        row.update({e: outcomes[e][i] if e in outcomes else True for e in scoring.ENDPOINTS})
        rows.append(row)
    return rows


def _by_key(res: dict) -> dict[tuple[str, str, str], dict]:
    return {(r["a"], r["b"], r["endpoint"]): r for r in res["contrasts"]}


# ---------------------------------------------------------------------------------------------- seed pooling
#: sft -> sft_dpo on ``overall``, two seeds, five items. Per item and seed d = sft_dpo - sft:
#:   item 0: seed 0: 1 - 0, seed 1: 1 - 0  -> d = 1
#:   item 1: seed 0: 1 - 0, seed 1: 1 - 1  -> d = 0.5
#:   item 2: seed 0: 1 - 1, seed 1: 1 - 0  -> d = 0.5
#:   item 3: seed 0: 0 - 1, seed 1: 1 - 1  -> d = -0.5
#:   item 4: seed 0: 1 - 1, seed 1: 1 - 1  -> d = 0
POOLED = {
    ("sft", 0): [F, F, T, T, T], ("sft", 1): [F, T, F, T, T],
    ("sft_dpo", 0): [T, T, T, F, T], ("sft_dpo", 1): [T, T, T, T, T],
}


def _pooled_results(**kwargs) -> dict:
    rows = [row for (model, seed), overall in POOLED.items() for row in _rows(model, seed, {"overall": overall}, 5)]
    return results.build_results(rows, models=["sft", "sft_dpo"], seeds=[0, 1], contrasts=["sft->sft_dpo:overall"],
                                 n_bootstrap=500, n_permutations=20000, seed=0, **kwargs)


def test_seed_pooled_contrast_by_hand():
    res = _pooled_results()
    row = _by_key(res)[("sft", "sft_dpo", "overall")]
    d = np.array([1.0, 0.5, 0.5, -0.5, 0.0])
    # Difference: mean d = 1.5 / 5 = 0.3 = pooled rates 9/10 - 6/10.
    assert row["diff"] == pytest.approx(0.3)
    assert (row["rate_a"], row["rate_b"]) == (pytest.approx(0.6), pytest.approx(0.9))
    assert row["n_items"] == 5  # items are the unit: two seeds do not make it 10
    # Exact sign-flip p: of the 2**4 sign patterns of (1, .5, .5, -.5), 8 have |sum| >= 1.5 -> p = 0.5.
    nonzero = d[d != 0]
    extreme = sum(abs(np.dot(s, nonzero)) >= 1.5 - 1e-12 for s in itertools.product((-1, 1), repeat=4))
    assert extreme == 8
    assert row["p_value"] == pytest.approx(0.5)
    assert row["p_adjusted"] == pytest.approx(0.5)  # the only primary: Holm over one test changes nothing
    # Second moment mean d^2 = (1 + .25 + .25 + .25 + 0) / 5 = 0.35, and the MDE for it at n = 5.
    assert row["second_moment"] == 0.35
    assert row["mde"] == contrast_stats.minimum_detectable_difference(5, 0.35, 0.05, 0.8)
    # The interval resamples the five items (each with both seeds).
    assert (row["ci_low"], row["ci_high"]) == contrast_stats.bootstrap_mean_ci(d, 500, 0)
    assert row["ci_low"] <= row["diff"] <= row["ci_high"]
    assert (row["role"], row["family"], row["named_primary"]) == ("primary", "primary", True)


def test_pooled_rates_per_seed_and_spread():
    res = _pooled_results()
    sft = res["models"]["sft"]["endpoints"]["overall"]
    # seed 0: 3/5, seed 1: 3/5 -> pooled 6/10, sd 0; n = 5 items.
    assert (sft["rate"], sft["n"], sft["per_seed"], sft["sd"]) == (pytest.approx(0.6), 5, {0: 0.6, 1: 0.6}, 0.0)
    dpo = res["models"]["sft_dpo"]["endpoints"]["overall"]
    # seed 0: 4/5, seed 1: 5/5 -> pooled 9/10; sd |1 - 0.8| / sqrt(2) = 0.1414.
    assert (dpo["rate"], dpo["per_seed"], dpo["sd"], dpo["min"], dpo["max"]) == (
        pytest.approx(0.9), {0: 0.8, 1: 1.0}, 0.1414, 0.8, 1.0)
    assert (dpo["ci_low"], dpo["ci_high"]) == contrast_stats.wilson(0.9, 5)
    # Families: items 0, 2, 4 are capitals: sft_dpo passes 3/3 under seed 0 and 3/3 under seed 1.
    assert res["models"]["sft_dpo"]["families"]["capitals"]["overall"]["rate"] == 1.0
    assert res["families"] == ["arithmetic", "capitals"]  # config.FAMILIES order
    assert res["seeds"] == [0, 1] and res["n_items"] == 5
    assert res["models"]["sft"]["trained"] is True and res["models"]["sft"]["by_design"] == {}


# ---------------------------------------------------------------------------------------------- the study design
#: Twelve items, one seed, every arm; outcomes chosen so each primary has a known McNemar table
#: (n01 = only b passes, n10 = only a passes):
#:   base_fewshot -> sft      : content (6, 0) -> p = 2 / 2**6 = 0.03125
#:   sft -> sft_dpo           : overall (5, 0) -> p = 2 / 2**5 = 0.0625
#:   base_fewshot -> dpo_only : content (3, 0) -> p = 2 / 2**3 = 0.25
#:   dpo_only -> sft_dpo      : overall (2, 2) -> p = 1
#:   base -> sft              : format  -> descriptive (base cannot emit END)
#: and two secondaries of sft -> sft_dpo: coherent (6, 0) -> 0.03125 and on_topic (5, 0) -> 0.0625.
STUDY = {
    "base_fewshot": {"content": [F] * 6 + [T] * 6},
    "base": {"ends_with_end": [F] * 12, "format": [F] * 12, "overall": [F] * 12},
    "sft": {"content": [T] * 12, "overall": [F] * 5 + [T] * 5 + [F] * 2,
            "coherent": [F] * 6 + [T] * 6, "on_topic": [F] * 5 + [T] * 7},
    "sft_dpo": {"overall": [T] * 10 + [F] * 2},
    "dpo_only": {"content": [T] * 3 + [F] * 3 + [T] * 6, "overall": [F] * 2 + [T] * 10},
}


def _study(correction: str = "holm") -> dict:
    rows = []
    for model in EVAL_MODELS:
        rows += _rows(model, None if model in ("base", "base_fewshot") else 0, STUDY[model], 12)
    return results.build_results(rows, models=list(EVAL_MODELS), seeds=[0], contrasts=list(CONTRASTS),
                                 correction=correction, n_bootstrap=200, n_permutations=20000, seed=0)


def test_by_design_endpoints_are_descriptive_and_untested():
    res = _study()
    assert set(res["models"]["base"]["by_design"]) == {"ends_with_end", "format", "overall"}
    assert set(res["models"]["base_fewshot"]["by_design"]) == {"ends_with_end", "proper_structure", "no_rambling",
                                                                "format", "overall"}
    assert res["models"]["sft"]["by_design"] == {}
    rows = _by_key(res)
    for (a, b, endpoint), row in rows.items():
        by_design = endpoint in res["by_design"].get(a, {}) or endpoint in res["by_design"].get(b, {})
        assert (row["role"] == "descriptive") == by_design, (a, b, endpoint)
        if by_design:
            assert row["p_value"] is None and row["p_adjusted"] is None and row["family"] is None
            assert row["significant"] is False and row["verdict"].startswith("descriptive only: ")
    # The named primary base -> sft:format is one of them: still reported (with its difference), never tested.
    named = rows[("base", "sft", "format")]
    assert (named["role"], named["named_primary"], named["p_value"]) == ("descriptive", True, None)
    assert named["diff"] == pytest.approx(1.0)  # 0% -> 100%, shown but not evidence
    assert "never saw END" in named["by_design"]


def test_primary_family_is_the_named_contrasts_that_are_evidence_with_holm_by_hand():
    res = _study()
    primaries = [r for r in res["contrasts"] if r["role"] == "primary"]
    # Five named contrasts, one of them by design: four primaries, all in family "primary".
    assert [(r["a"], r["b"], r["endpoint"]) for r in primaries] == [
        ("base_fewshot", "sft", "content"), ("sft", "sft_dpo", "overall"), ("base_fewshot", "dpo_only", "content"),
        ("dpo_only", "sft_dpo", "overall")]
    assert len(primaries) == sum(1 for r in res["contrasts"] if r["named_primary"] and r["role"] != "descriptive")
    assert all(r["family"] == "primary" and r["named_primary"] for r in primaries)
    assert [r["p_value"] for r in primaries] == pytest.approx([0.03125, 0.0625, 0.25, 1.0])
    # Holm over m = 4 (the by-design primary is not counted): sorted p times 4, 3, 2, 1, running maximum:
    # 0.03125 * 4 = 0.125, 0.0625 * 3 = 0.1875, 0.25 * 2 = 0.5, 1 * 1 = 1.
    assert [r["p_adjusted"] for r in primaries] == pytest.approx([0.125, 0.1875, 0.5, 1.0])
    # The MDE of a primary is at the Bonferroni level of its family: 0.05 / 4.
    assert {r["mde_alpha"] for r in primaries} == {0.0125}
    assert not any(r["significant"] for r in primaries)


def test_secondary_families_are_per_contrast_with_the_chosen_correction():
    res = _study()
    families: dict[str, int] = {}
    for row in res["contrasts"]:
        if row["role"] == "secondary":
            families[row["family"]] = families.get(row["family"], 0) + 1
    # 12 endpoints minus the primary minus the endpoints an arm cannot pass by design.
    assert families == {"base_fewshot->sft": 12 - 1 - 5, "sft->sft_dpo": 11, "base_fewshot->dpo_only": 12 - 1 - 5,
                        "dpo_only->sft_dpo": 11, "base->sft": 12 - 3}  # base->sft: its primary is by design
    # sft -> sft_dpo: coherent p 0.03125, on_topic p 0.0625, nine others 1 (no discordance). Holm over 11:
    # 0.03125 * 11 = 0.34375, 0.0625 * 10 = 0.625, the rest 1.
    secondary = {r["endpoint"]: r for r in res["contrasts"] if r["family"] == "sft->sft_dpo"}
    assert (secondary["coherent"]["p_value"], secondary["on_topic"]["p_value"]) == pytest.approx((0.03125, 0.0625))
    assert secondary["coherent"]["p_adjusted"] == pytest.approx(0.34375)
    assert secondary["on_topic"]["p_adjusted"] == pytest.approx(0.625)
    assert secondary["factually_correct"]["p_adjusted"] == 1.0
    assert [r["mde_alpha"] for r in secondary.values()] == pytest.approx([0.05 / 11] * 11)
    # Benjamini-Hochberg instead: 0.03125 * 11 / 1 = 0.34375 and 0.0625 * 11 / 2 = 0.34375 (step-up minimum).
    bh = {r["endpoint"]: r for r in _study("bh")["contrasts"] if r["family"] == "sft->sft_dpo"}
    assert (bh["coherent"]["p_adjusted"], bh["on_topic"]["p_adjusted"]) == pytest.approx((0.34375, 0.34375))
    # ...while the primaries stay Holm whatever the secondary correction.
    bh_primary = [r["p_adjusted"] for r in _study("bh")["contrasts"] if r["role"] == "primary"]
    assert bh_primary == pytest.approx([0.125, 0.1875, 0.5, 1.0])
    assert _study("bh")["correction"]["primary"] == "holm" and _study("bh")["correction"]["secondary"] == "bh"


def _sentence(headline: str, marker: str) -> str:
    """The headline's sentence containing ``marker`` (sentences start with a capital after '. ')."""
    start = headline.index(marker)
    start = headline.rfind(". ", 0, start) + 2
    following = re.search(r"\.\s[A-Z]", headline[start:])
    return headline[start:start + following.start() + 1] if following else headline[start:]


def test_headline_names_every_contrast_and_says_what_it_can_and_cannot_show():
    res = _study()
    text = res["headline"]
    assert text.startswith("On 12 held-out test items, one training seed. ")
    for a, b, endpoint in (c.replace("->", ":").split(":") for c in CONTRASTS):
        assert f"({b} vs {a}, {endpoint})" in text
    # The by-design primary: its rates, and "not tested" with the reason, no p-value.
    by_design = _sentence(text, "(sft vs base, format)")
    assert "What SFT does to the answer format (sft vs base, format): 100.0% vs 0.0%; not tested, because" \
           in by_design
    assert "never saw END" in by_design and "p =" not in by_design
    # dpo_only -> sft_dpo: 10/12 vs 10/12, diff 0 < MDE, adjusted p 1.
    row = _by_key(res)[("dpo_only", "sft_dpo", "overall")]
    assert row["mde"] is not None and abs(row["diff"]) < row["mde"] and not row["significant"]
    same = _sentence(text, "(sft_dpo vs dpo_only, overall)")
    assert same.startswith("Whether the SFT foundation matters for DPO (sft_dpo vs dpo_only, overall): "
                           "83.3% vs 83.3%, +0.0 points")
    assert "Holm-adjusted p = 1;" in same
    assert same.endswith(": not distinguishable from no effect at this n (the difference is below the minimum "
                         "detectable difference).")
    # base_fewshot -> sft content: 100% vs 50%, +50 points, Holm p 0.125.
    sft = _sentence(text, "(sft vs base_fewshot, content)")
    assert "100.0% vs 50.0%, +50.0 points" in sft and "Holm-adjusted p = 0.125" in sft


def test_headline_says_which_arm_is_higher_when_significant():
    # 30 items, sft passes content on all and base_fewshot on none: exact McNemar p = 2 / 2**30, beyond what
    # 2000 Monte Carlo sign flips resolve: scipy's floor (0 + 1) / (2000 + 1) per side, doubled = 2 / 2001.
    rows = _rows("base_fewshot", None, {"content": [F] * 30}, 30) + _rows("sft", 1, {}, 30)
    res = results.build_results(rows, models=["base_fewshot", "sft"], seeds=[1],
                                contrasts=["base_fewshot->sft:content"], n_bootstrap=100, n_permutations=2000)
    row = _by_key(res)[("base_fewshot", "sft", "content")]
    assert row["p_adjusted"] == pytest.approx(2 / 2001) and row["significant"]
    assert row["diff"] == 1.0
    assert row["verdict"] == "sft is higher than base_fewshot"
    assert res["headline"].endswith(": sft is higher than base_fewshot.")


def test_a_significant_difference_below_the_mde_is_not_claimed():
    # 100 items, sft passes content on all, base_fewshot fails 7: diff 0.07, exact two-sided sign-flip p =
    # 2 / 2**7 = 0.016; the MDE solves 10 d = 1.960 sqrt(psi) + 0.842 sqrt(psi - d^2) with psi = max(0.07, d) = d:
    # at d = 0.0767, 0.767 = 1.960 x 0.2769 + 0.842 x 0.2660 = 0.5427 + 0.2240, so MDE 0.0767 > 0.07.
    rows = _rows("base_fewshot", None, {"content": [F] * 7 + [T] * 93}, 100) + _rows("sft", 1, {}, 100)
    res = results.build_results(rows, models=["base_fewshot", "sft"], seeds=[1],
                                contrasts=["base_fewshot->sft:content"], n_bootstrap=100, n_permutations=20000)
    row = _by_key(res)[("base_fewshot", "sft", "content")]
    assert row["diff"] == pytest.approx(0.07)
    assert row["mde"] == pytest.approx(0.0767, abs=5e-4)
    assert row["significant"] and row["p_adjusted"] == pytest.approx(1 / 64, abs=0.004)
    assert not row["distinguishable"]
    assert row["verdict"] == ("not distinguishable from no effect at this n (the difference is below the minimum "
                              "detectable difference, although p < 0.05)")


# ---------------------------------------------------------------------------------------------- untrained arms
def test_untrained_arm_rows_serve_every_seed():
    # base (seed None) overall F T F F; sft seed 0: T T F F, seed 1: T T T F.
    # d per item: (1 + 1) / 2, (0 + 0) / 2, (0 + 1) / 2, 0 -> (1, 0, .5, 0), mean 0.375.
    base = _rows("base", None, {"overall": [F, T, F, F], "coherent": [T, F, F, F], "on_topic": [T, F, T, F]}, 4)
    sft = (_rows("sft", 0, {"overall": [T, T, F, F], "coherent": [T, T, F, F], "on_topic": [T, T, F, F]}, 4)
           + _rows("sft", 1, {"overall": [T, T, T, F], "coherent": [T, T, F, F], "on_topic": [F, F, F, F]}, 4))
    score_rows = base + sft
    res = results.build_results(score_rows, models=["base", "sft"], seeds=[0, 1], contrasts=["base->sft:overall"],
                                n_bootstrap=200, n_permutations=2000)
    rate = res["models"]["base"]["endpoints"]["overall"]
    # Generated once: one rate, no per-seed spread (its copies under every seed are not repeated measures).
    assert (rate["rate"], rate["n"], rate["per_seed"], rate["sd"]) == (0.25, 4, {0: 0.25}, 0.0)
    assert res["models"]["base"]["trained"] is False
    # overall is by design for base: descriptive, but its difference is the seed-pooled one.
    row = _by_key(res)[("base", "sft", "overall")]
    assert row["role"] == "descriptive" and row["diff"] == pytest.approx(0.375)
    tested = _by_key(res)[("base", "sft", "content")]  # every content outcome passes: no discordance
    assert (tested["role"], tested["diff"], tested["p_value"]) == ("secondary", 0.0, 1.0)
    # phi counts each response once: the base rows once, not once per seed. (coherent, on_topic) over the 12
    # responses: base TT FF FT FF, sft seed 0 TT TT FF FF, seed 1 TF TF FF FF -> a = 3, b = 2, c = 1, d = 6,
    # phi = (18 - 2) / sqrt(5 * 7 * 4 * 8) = 0.4781; with base counted twice (a 4, b 2, c 2, d 8) it would be
    # (32 - 4) / sqrt(6 * 10 * 6 * 10) = 0.4667.
    coherent, on_topic = scoring.CRITERIA.index("coherent"), scoring.CRITERIA.index("on_topic")
    assert res["phi"]["matrix"][coherent][on_topic] == 0.4781
    assert res["phi"]["matrix"] == contrast_stats.phi_matrix(score_rows, scoring.CRITERIA)


# ---------------------------------------------------------------------------------------------- unpaired scores
def _pair_rows() -> list[dict]:
    return [*_rows("base", None, {}, 4), *_rows("sft", 0, {}, 4), *_rows("sft", 1, {}, 4)]


def test_missing_seed_is_a_clear_error():
    rows = [r for r in _pair_rows() if not (r["model"] == "sft" and r["seed"] == 1)]
    with pytest.raises(ValueError, match=r"model 'sft' has no rows for seed 1 \(seeds \[0, 1\]\)"):
        results.build_results(rows, models=["base", "sft"], seeds=[0, 1], contrasts=["base->sft:content"])


def test_missing_item_is_a_clear_error():
    rows = [r for r in _pair_rows() if not (r["model"] == "sft" and r["seed"] == 1 and r["item_id"] == "i2")]
    with pytest.raises(ValueError, match=r"model 'sft' seed 1 lacks 1 item\(s\), e\.g\. 'i2'"):
        results.build_results(rows, models=["base", "sft"], seeds=[0, 1], contrasts=["base->sft:content"])


def test_duplicate_row_is_a_clear_error():
    rows = _pair_rows() + _rows("sft", 0, {}, 1)
    with pytest.raises(ValueError, match=r"model 'sft' seed 0 has item 'i0' twice"):
        results.build_results(rows, models=["base", "sft"], seeds=[0, 1], contrasts=["base->sft:content"])


def test_missing_model_is_a_clear_error():
    rows = [r for r in _pair_rows() if r["model"] != "base"]
    with pytest.raises(ValueError, match=r"model 'base' has no rows for seed 0"):
        results.build_results(rows, models=["base", "sft"], seeds=[0, 1], contrasts=["base->sft:content"])
