"""``alignkit summary``: what a finished run measured, as the Markdown table the README shows.

    alignkit summary --run-id tiny          (make readme-numbers)

Every number comes from the run's manifests and ``results.json``; nothing is typed by hand, so the README's table
is whatever the last fresh run produced.
"""

from __future__ import annotations

from typing import Any

from alignkit import files
from alignkit.config import PER_SEED_STAGES, STAGES
from alignkit.runs import Run, StageInputError


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def stage_seconds(run: Run) -> dict[str, float]:
    """Seconds each stage took (summed over training seeds), from the manifests; 0 for a shared stage."""
    out = {}
    for stage in STAGES:
        views = run.seed_views() if stage in PER_SEED_STAGES else [run]
        manifests = [view.manifest(stage) for view in views]
        if all(m is not None for m in manifests):
            out[stage] = round(sum(0.0 if m.get("adopted_from") else float(m.get("seconds") or 0) for m in manifests), 1)
    return out


def rows(run: Run) -> list[tuple[str, str]]:
    """``(what, measured)`` rows for the README."""
    results = files.read_json(run.output("06_evaluation", "results"))
    first = run.seed_views()[0]
    data = run.require("01_sft_data")["summary"]
    negatives = first.require("03_negatives")["summary"]
    pairs = first.require("04_preference_pairs")["summary"]
    seeds = results["seeds"]
    table = [("stage times (s, summed over seeds)", ", ".join(f"{s[:2]} {v:.0f}" for s, v in stage_seconds(run).items())),
             ("stage 01", f"{data['kept']} SFT examples from {data['candidates']} candidates (acceptance "
                          f"{_pct(data['acceptance_rate'])}); {data['dev']['kept']} dev examples; splits "
                          f"{data['splits']}"),
             ("stage 03 (seed {})".format(first.training_seed),
              f"{negatives['total']} negatives, mix {negatives['mix_declared']}, on-policy share per type "
              + ", ".join(f"{t} {_pct(v)}" for t, v in negatives["on_policy_share"].items())),
             ("stage 04 (seed {})".format(first.training_seed),
              f"{pairs['pairs']} pairs; rejected without END: "
              + ", ".join(f"{t} {d['rejected_without_end']}" for t, d in pairs["defects"].items())
              + f"; reference prefers chosen on {_pct(pairs['margin_overall']['share_positive'])}")]
    for view in run.seed_views():
        for name, r in view.require("05_dpo_training")["summary"]["runs"].items():
            table.append((f"stage 05 {name} seed {view.training_seed}",
                          f"train reward accuracy {_pct(r['train_reward_accuracy'])}, dev {_pct(r['dev_reward_accuracy'])};"
                          f" reference check: largest gap {r['reference_check']['max_abs_diff_nats']} nats"))
    for model in results["model_order"]:
        e = results["models"][model]["endpoints"]
        table.append((f"{model} (seeds {seeds})", ", ".join(f"{k} {_pct(e[k]['rate'])}" for k in
                                                             ("format", "content", "overall"))))
    for row in results["contrasts"]:
        if row.get("named_primary"):
            value = "descriptive (by design)" if row["role"] == "descriptive" else (
                f"{100 * row['diff']:+.1f} pts (95% CI {100 * row['ci_low']:+.1f} to {100 * row['ci_high']:+.1f}), "
                f"Holm p {row['p_adjusted']:.3g}, MDE {100 * row['mde']:.1f} pts: {row['verdict']}")
            table.append((f"{row['b']} vs {row['a']} ({row['endpoint']})", value))
    return table


def markdown(run: Run) -> str:
    lines = ["| what | measured |", "|---|---|"]
    lines += [f"| {what} | {value} |" for what, value in rows(run)]
    return "\n".join(lines)


def main(args: Any) -> int:
    from alignkit.runs import open_run

    run = open_run(args.preset, args.config_file, args.overrides, args.run_id)
    try:
        print(markdown(run))
    except StageInputError as error:
        raise StageInputError(f"{error} (alignkit summary needs a finished run)") from None
    return 0
