"""``alignkit summary``: what a finished run measured, as the Markdown table the README shows.

    alignkit summary --run-id tiny          (make readme-numbers)

Every number comes from the run's manifests and ``results.json``; nothing is typed by hand, so the README's table
is whatever the last fresh run produced.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from alignkit import files
from alignkit.config import PER_SEED_STAGES, STAGES
from alignkit.runs import MANIFEST, Run, StageInputError


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


@contextlib.contextmanager
def _reading(source: object) -> Iterator[None]:
    """A field missing from ``source`` (written by another alignkit version) as one actionable line."""
    try:
        yield
    except (KeyError, TypeError, IndexError) as error:
        raise StageInputError(f"{source}: field {error} is missing or has another shape than this alignkit "
                              "writes (an older run?); re-run the study with --force") from None


def rows(run: Run) -> list[tuple[str, str]]:
    """``(what, measured)`` rows for the README."""
    results_path = run.output("06_evaluation", "results")
    results = files.read_json(results_path)
    first = run.seed_views()[0]
    table = [("stage times (s, summed over seeds)", ", ".join(f"{s[:2]} {v:.0f}" for s, v in stage_seconds(run).items()))]
    with _reading(run.stage_dir("01_sft_data") / MANIFEST):
        data = run.require("01_sft_data")["summary"]
        table.append(("stage 01", f"{data['kept']} SFT examples from {data['candidates']} candidates (acceptance "
                                  f"{_pct(data['acceptance_rate'])}); {data['dev']['kept']} dev examples; splits "
                                  f"{data['splits']}"))
    with _reading(first.stage_dir("03_negatives") / MANIFEST):
        negatives = first.require("03_negatives")["summary"]
        table.append((f"stage 03 (seed {first.training_seed})",
                      f"{negatives['total']} negatives, mix {negatives['mix_declared']}, on-policy share per type "
                      + ", ".join(f"{t} {_pct(v)}" for t, v in negatives["on_policy_share"].items())))
    with _reading(first.stage_dir("04_preference_pairs") / MANIFEST):
        pairs = first.require("04_preference_pairs")["summary"]
        table.append((f"stage 04 (seed {first.training_seed})",
                      f"{pairs['pairs']} pairs; rejected without END: "
                      + ", ".join(f"{t} {d['rejected_without_end']}" for t, d in pairs["defects"].items())
                      + f"; reference prefers chosen on {_pct(pairs['margin_overall']['share_positive'])}"))
    for view in run.seed_views():
        with _reading(view.stage_dir("05_dpo_training") / MANIFEST):
            for name, r in view.require("05_dpo_training")["summary"]["runs"].items():
                table.append((f"stage 05 {name} seed {view.training_seed}",
                              f"train reward accuracy {_pct(r['train_reward_accuracy'])}, "
                              f"dev {_pct(r['dev_reward_accuracy'])}; "
                              f"reference check: largest gap {r['reference_check']['max_abs_diff_nats']} nats"))
    with _reading(results_path):
        seeds = results["seeds"]
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
