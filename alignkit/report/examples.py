"""Examples for the report: items answered by every arm side by side, and per criterion one response of this run
that passes it and one that fails it (the criteria section)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from alignkit.eval import scoring

#: Longest response shown in an example, in characters (the rest is counted, not hidden silently).
EXAMPLE_CHARS = 360
#: Arms an example is chosen for, in order of preference (the first evaluated one).
FOCUS_ORDER = ("sft_dpo", "sft", "dpo_only")


def _round_robin(candidates: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """Up to ``n`` candidates, one family at a time, so the examples cover several families.

    >>> [c["id"] for c in _round_robin([{"id": 1, "family": "a"}, {"id": 2, "family": "a"},
    ...                                 {"id": 3, "family": "b"}], 2)]
    [1, 3]
    """
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for candidate in candidates:
        groups[candidate["family"]].append(candidate)
    picked: list[dict[str, Any]] = []
    while len(picked) < n and any(groups.values()):
        for family in list(groups):
            if groups[family] and len(picked) < n:
                picked.append(groups[family].pop(0))
    return picked


def _key(row: Mapping[str, Any]) -> tuple[str, Any, str]:
    return row["model"], row.get("seed"), row["item_id"]


def _shown(text: str) -> tuple[str, int]:
    return text[:EXAMPLE_CHARS], max(0, len(text) - EXAMPLE_CHARS)


def pick_examples(results: Mapping[str, Any], responses: Sequence[Mapping[str, Any]],
                  scores: Sequence[Mapping[str, Any]], items: Mapping[str, Mapping[str, Any]],
                  n: int) -> list[dict[str, Any]]:
    """``n`` items shown for every arm (the first training seed of trained arms): about half where the focus arm
    passes ``content`` and the few-shot base fails it, the rest where the focus arm fails ``overall``; in item
    order, spread over families. Each arm's cell shows the response as generated, END, and the failed criteria."""
    models = results["model_order"]
    focus = next((m for m in FOCUS_ORDER if m in models), models[0] if models else None)
    if focus is None or n <= 0:
        return []
    seed = (results.get("seeds") or [None])[0]
    score = {_key(s): s for s in scores}
    response = {_key(r): r for r in responses}

    def lookup(table, model, item_id):
        return table.get((model, seed, item_id)) or table.get((model, None, item_id))

    baseline = "base_fewshot" if "base_fewshot" in models else None
    order = list(dict.fromkeys(s["item_id"] for s in scores if s["model"] == focus))
    wins, failures = [], []
    for item_id in order:
        own = lookup(score, focus, item_id)
        entry = {"item_id": item_id, "family": own["family"]}
        if own["overall"] is False:
            failures.append({**entry, "kind": "failure"})
        elif own["content"] and (baseline is None or lookup(score, baseline, item_id)["content"] is False):
            wins.append({**entry, "kind": "win"})
    n_wins = min(len(wins), (n + 1) // 2)
    n_failures = min(len(failures), n - n_wins)
    n_wins = min(len(wins), n - n_failures)
    examples = []
    for pick in _round_robin(wins, n_wins) + _round_robin(failures, n_failures):
        item = items.get(pick["item_id"], {})
        cells = []
        for model in models:
            r, s = lookup(response, model, pick["item_id"]), lookup(score, model, pick["item_id"])
            if r is None or s is None:
                continue
            text, cut = _shown(r["response"])
            cells.append({"model": model, "label": model if r.get("seed") is None else f"{model} (seed {r['seed']})",
                          "response": text, "cut": cut, "emitted_end": r["emitted_end"], "overall": s["overall"],
                          "content": s["content"], "focus": model == focus,
                          "failed": [c for c in scoring.CRITERIA if s.get(c) is False]})
        examples.append({**pick, "focus": focus, "instruction": item.get("instruction", pick["item_id"]),
                         "reference": item.get("reference"), "models": cells})
    return examples


def criterion_examples(responses: Sequence[Mapping[str, Any]], scores: Sequence[Mapping[str, Any]],
                       items: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per endpoint, one passing and one failing response of this run (trained arms first, first found in file
    order), each with its instruction: what the criterion means, shown on this run's own outputs."""
    response = {_key(r): r for r in responses}
    ordered = sorted(scores, key=lambda s: (s["model"] in ("base", "base_fewshot"),))
    out: dict[str, dict[str, Any]] = {}
    for endpoint in scoring.ENDPOINTS:
        found: dict[str, Any] = {}
        for row in ordered:
            verdict = row.get(endpoint)
            label = "pass" if verdict is True else "fail" if verdict is False else None
            if label is None or label in found:
                continue
            r = response.get(_key(row))
            if r is None:
                continue
            text, cut = _shown(r["raw_output"].rstrip())
            found[label] = {"model": row["model"], "seed": row.get("seed"), "response": text, "cut": cut,
                            "instruction": items.get(row["item_id"], {}).get("instruction", row["item_id"])}
            if len(found) == 2:
                break
        out[endpoint] = found
    return out
