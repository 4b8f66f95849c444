"""Stages 01-05 in the report: data quality and training, read from each stage's manifest (per training seed for
stages 02-05). A stage without a complete manifest is shown as missing, never filled in."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from alignkit import files
from alignkit.config import FAMILIES, NEGATIVE_TYPES, PER_SEED_STAGES, STAGES
from alignkit.report.text import STAGE_TITLES, fixed, num, pct, rank
from alignkit.runs import Run, StageInputError

log = logging.getLogger(__name__)


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]], caption: str = "") -> dict[str, Any]:
    """A table as the template renders it (every column headed)."""
    return {"columns": list(columns), "rows": [list(r) for r in rows], "caption": caption}


def _pairs(mapping: Mapping[str, Any] | None) -> str:
    return ", ".join(f"{k}: {v}" for k, v in (mapping or {}).items()) or "none"


def stage_01(summary: Mapping[str, Any]) -> tuple[list[tuple[str, Any]], list[dict[str, Any]]]:
    splits, dev = summary.get("splits") or {}, summary.get("dev") or {}
    facts = [("SFT examples kept / wanted", f"{summary.get('kept')} / {summary.get('wanted')}"),
             ("candidates", summary.get("candidates")), ("acceptance rate", pct(summary.get("acceptance_rate"))),
             ("duplicates removed", summary.get("duplicates_removed")), ("dropped", _pairs(summary.get("dropped"))),
             ("dev SFT examples kept / wanted", f"{dev.get('kept')} / {dev.get('wanted')}"),
             ("splits (disjoint by key and near-duplicate)",
              f"train {splits.get('train_examples')} examples, dev {splits.get('dev_items')} items, "
              f"test {splits.get('test_items')} items, {splits.get('fewshot_shots')} few-shot exemplars")]
    per_family = summary.get("per_family") or {}
    rows = [(f, v.get("candidates"), v.get("accepted"), v.get("dropped"), pct(v.get("acceptance_rate")), v.get("kept"))
            for f, v in sorted(per_family.items(), key=lambda kv: rank(kv[0], FAMILIES))]
    tables = [table(("family", "candidates", "accepted", "dropped", "acceptance", "kept"), rows,
                    "Best-of-N acceptance per family (verified with the evaluation scorer)")] if rows else []
    return facts, tables


def stage_02(summary: Mapping[str, Any]) -> tuple[list[tuple[str, Any]], list[dict[str, Any]]]:
    masks = summary.get("masks") or {}
    end_rate = (summary.get("samples") or {}).get("end_emission_rate") or {}
    facts = [("method", summary.get("method")), ("examples", summary.get("examples")), ("steps", summary.get("steps")),
             ("training loss first → last (mean)", f"{num(summary.get('loss_first'))} → {num(summary.get('loss_last'))}"
                                                 f" ({num(summary.get('train_loss_mean'))})"),
             ("dev loss per epoch", ", ".join(str(num(x)) for x in summary.get("dev_loss_per_epoch") or []) or "–"),
             ("loss masks checked", f"{masks.get('examples_checked')} examples, {masks.get('failures')} failures; "
                                    f"{masks.get('trainer_batch_rows_checked')} rows of the trainer's own batches"),
             ("END emitted on unseen instructions", ", ".join(f"{k}: {pct(v)}" for k, v in end_rate.items()) or "–"),
             ("train time", f"{summary.get('train_seconds')} s")]
    return facts, []


def stage_03(summary: Mapping[str, Any]) -> tuple[list[tuple[str, Any]], list[dict[str, Any]]]:
    used, applied = summary.get("mix_used") or {}, summary.get("mix_applied") or {}
    methods, on_policy = summary.get("by_type_method") or {}, summary.get("on_policy_share") or {}
    observed, end_less = summary.get("observed_failure_rates") or {}, summary.get("end_less") or {}
    rows = [(t, pct(used.get(t)), pct(applied.get(t)), sum((methods.get(t) or {}).values()), pct(on_policy.get(t)),
             end_less.get(t, 0), pct(observed.get(t)), _pairs(methods.get(t)))
            for t in sorted(dict.fromkeys([*used, *applied]), key=lambda t: rank(t, NEGATIVE_TYPES))]
    facts = [("negatives (dev)", f"{summary.get('total')} ({(summary.get('dev') or {}).get('total')})"),
             ("mix", summary.get("mix_declared")), ("candidates dropped (not bad in their own way)",
                                                    summary.get("dropped_total")),
             ("SFT greedy END rate", pct(summary.get("sft_greedy_end_rate"))),
             ("SFT greedy correct rate", pct(summary.get("sft_greedy_correct_rate")))]
    return facts, [table(("type", "mix used", "applied", "count", "on-policy", "without END",
                          "SFT failure rate", "how it was made"), rows,
                         "Negatives per type: on-policy = the SFT model's own outputs")] if rows else []


def stage_04(summary: Mapping[str, Any]) -> tuple[list[tuple[str, Any]], list[dict[str, Any]]]:
    margins, defects = summary.get("margins") or {}, summary.get("defects") or {}
    rows = [(t, m.get("n"), (defects.get(t) or {}).get("rejected_without_end"),
             (defects.get(t) or {}).get("shared_prefix"), (defects.get(t) or {}).get("divergence_token_median"),
             num(m.get("q25")), num(m.get("median")), num(m.get("q75")), pct(m.get("share_positive")))
            for t, m in sorted(margins.items(), key=lambda kv: rank(kv[0], NEGATIVE_TYPES))]
    overall = summary.get("margin_overall") or {}
    facts = [("pairs (dev pairs)", f"{summary.get('pairs')} ({(summary.get('dev') or {}).get('pairs')})"),
             ("mean margin (SFT log-prob chosen − rejected)", num(overall.get("mean"))),
             ("pairs the SFT model already prefers", pct(overall.get("share_positive"))),
             ("chosen from", _pairs(summary.get("chosen_sources"))), ("dropped", _pairs(summary.get("dropped")))]
    return facts, [table(("negative type", "pairs", "rejected without END", "share a prefix with chosen",
                          "divergence token (median)", "margin q25", "median", "q75", "margin > 0"), rows,
                         "Pairs per negative type: kept defects and the reference margin")] if rows else []


def stage_05(summary: Mapping[str, Any]) -> tuple[list[tuple[str, Any]], list[dict[str, Any]]]:
    runs = summary.get("runs") or {}
    rows = []
    for name, r in runs.items():
        check = r.get("reference_check") or {}
        dev_eval = (r.get("dev_eval") or [{}])[-1]
        rows.append((name, r.get("saved"), f"{check.get('max_abs_diff_nats')} ({'ok' if check.get('ok') else 'FAIL'})",
                     num(r.get("train_loss_mean")), pct(r.get("train_reward_accuracy")),
                     f"{num(r.get('chosen_logp_first'))} → {num(r.get('chosen_logp_last'))}",
                     pct(r.get("dev_reward_accuracy")), num(dev_eval.get("eval_loss")), r.get("train_seconds")))
    facts = [("method / loss / beta", f"{summary.get('method')} / {summary.get('loss_type')} / {summary.get('beta')}"),
             ("learning rate / epochs", f"{summary.get('learning_rate')} / {summary.get('epochs')}"),
             ("pairs (dev pairs)", f"{summary.get('pairs')} ({summary.get('dev_pairs')})")]
    by_type_rows = [(name, t, stats.get("n"), num(stats.get("margin_mean")), pct(stats.get("accuracy")),
                     num(stats.get("chosen_logp_change")))
                    for name, r in runs.items() for t, stats in (r.get("train_by_type") or {}).items()]
    return facts, [
        table(("run", "saved", "reference check |Δ| nats", "mean train loss", "train reward accuracy (final)",
               "policy log p(chosen) first → last step", "dev reward accuracy", "last dev loss", "train s"), rows,
              "Both runs: same pairs, settings and seed; the reference check compares the reference log-probs "
              "with the initial policy's before the first step"),
        table(("run", "negative type", "pairs", "implicit reward margin", "accuracy", "Δ log p(chosen)"),
              by_type_rows, "Per negative type, training pairs: from the initial and the final policy"),
    ] if rows else []


QC = {"01_sft_data": stage_01, "02_sft_training": stage_02, "03_negatives": stage_03,
      "04_preference_pairs": stage_04, "05_dpo_training": stage_05}


def _section(view: Run, stage: str, title: str) -> dict[str, Any]:
    manifest = view.manifest(stage)
    entry: dict[str, Any] = {"stage": stage, "title": title, "manifest": str(view.stage_dir(stage) / "manifest.json")}
    if manifest is None:
        return {**entry, "missing": True}
    try:
        facts, tables = QC[stage](manifest.get("summary") or {})
    except (TypeError, AttributeError, ValueError, KeyError) as error:  # an older or newer summary layout
        log.warning("%s: summary not understood (%s); showing it raw", stage, error)
        facts, tables = [("summary", files.to_json(manifest.get("summary")))], []
    adopted = (manifest.get("adopted_from") or {}).get("run_id")
    if adopted:
        facts = [*facts, ("shared from run", adopted)]
    return {**entry, "missing": False, "facts": list(facts), "tables": tables, "seconds": manifest.get("seconds"),
            "finished": manifest.get("finished"), "fingerprint": manifest.get("fingerprint")}


def sections(run: Run) -> list[dict[str, Any]]:
    """One entry per stage 01-05 (and per training seed for 02-05)."""
    out = []
    for stage in STAGES[:5]:
        if stage in PER_SEED_STAGES:
            out.extend(_section(view, stage, f"{STAGE_TITLES[stage]} · seed {view.training_seed}")
                       for view in run.seed_views())
        else:
            out.append(_section(run, stage, STAGE_TITLES[stage]))
    return out


def histories(run: Run) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """``{"sft": {"sft seed 0": history, ...}, "dpo": {"sft_dpo seed 0": history, ...}}`` for what exists."""
    out: dict[str, dict[str, list[dict[str, Any]]]] = {"sft": {}, "dpo": {}}
    for view in run.seed_views():
        seed = view.training_seed
        try:
            out["sft"][f"sft seed {seed}"] = files.read_json(view.output("02_sft_training", "log_history"))
        except StageInputError:
            pass
        for name in ("sft_dpo", "dpo_only"):
            try:
                out["dpo"][f"{name} seed {seed}"] = files.read_json(view.output("05_dpo_training",
                                                                                f"{name}_log_history"))
            except StageInputError:
                pass
    return out


def dpo_type_margins(run: Run) -> dict[str, dict[str, dict[str, Any]]]:
    """``{"sft_dpo seed 0": {type: stats}}``: the per-type implicit reward margins stage 05 recorded."""
    out = {}
    for view in run.seed_views():
        manifest = view.manifest("05_dpo_training")
        for name, summary in ((manifest or {}).get("summary", {}).get("runs") or {}).items():
            out[f"{name} seed {view.training_seed}"] = summary.get("train_by_type") or {}
    return out


def disk_usage(run: Run) -> dict[str, Any]:
    """Bytes on disk per stage folder (and how much of it is training checkpoints), plus the report."""
    rows = []
    for stage in STAGES:
        folder = run.dir / stage
        if not folder.is_dir():
            continue
        checkpoints = sum(_tree_bytes(p) for p in folder.rglob("checkpoints*") if p.is_dir())
        rows.append({"stage": stage, "bytes": _tree_bytes(folder), "checkpoint_bytes": checkpoints})
    return {"stages": rows, "total_bytes": sum(r["bytes"] for r in rows), "report_bytes": _tree_bytes(run.report_dir)}


def _tree_bytes(path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def reproducibility_rows(config: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """Which outputs are deterministic, and under which seed."""
    seed, seeds = config.get("seed"), config.get("seeds") or [config.get("seed")]
    build_seed = (config.get("base_build") or {}).get("seed")
    return [
        ("embedded base model (tokenizer + weights)", "deterministic build for its seed; cached by build config",
         f"base_build.seed={build_seed}"),
        ("01 splits, sft.jsonl, dev_sft.jsonl", "byte-identical for the same data seed on the CPU", f"seed={seed}"),
        ("02 SFT, 03 negatives, 04 pairs, 05 DPO", "once per training seed; data files byte-identical for the same "
         "seed on the CPU, weights for the same seed, device and library versions", f"training seeds {seeds}"),
        ("06 responses", "greedy decoding: deterministic for the same weights and device", "no sampling"),
        ("06 intervals and permutation p-values", "seeded resampling: identical for the same scores", f"seed={seed}"),
    ]


def fixed_or_dash(value: Any) -> str:
    return fixed(value) if isinstance(value, (int, float)) else "–"
