"""Tests for alignkit.report: the HTML report built from a synthetic results.json and fake stage manifests."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from alignkit import evaluation, files, report
from alignkit.config import resolve
from alignkit.runs import Run, fingerprint_path

T, F = True, False
MODELS = ("base", "base_raw", "sft", "sft_dpo", "dpo_only")
#: Overall outcome per model on six items (families alternate capitals / arithmetic).
OVERALL = {
    "base": [F, F, F, F, T, F],
    "base_raw": [F, F, F, F, F, F],
    "sft": [T, T, F, T, T, F],
    "sft_dpo": [T, T, T, T, T, F],
    "dpo_only": [F, T, F, F, T, F],
}


def _write_manifest(run: Run, stage: str, outputs: dict[str, Path], summary: dict) -> None:
    folder = run.stage_dir(stage)
    folder.mkdir(parents=True, exist_ok=True)
    files.write_json(folder / "manifest.json", {
        "stage": stage, "run_id": run.run_id, "status": "complete", "seconds": 1.5,
        "finished": "2026-01-01T00:00:00+00:00", "fingerprint": f"fp-{stage[:2]}", "summary": summary,
        "outputs": {n: {"path": str(p.relative_to(run.dir)), "sha256": fingerprint_path(p), "rows": None}
                    for n, p in outputs.items()}})


def _scores_and_responses() -> tuple[list[dict], list[dict], list[dict]]:
    items, scores, responses = [], [], []
    for i in range(6):
        family = "capitals" if i % 2 == 0 else "arithmetic"
        items.append({"id": f"it-{i}", "family": family, "instruction": f"Question number {i}?",
                      "reference": str(i), "params": {"key": f"k{i}"}})
    for model in MODELS:
        for i, item in enumerate(items):
            passed = OVERALL[model][i]
            scores.append({"model": model, "item_id": item["id"], "family": item["family"],
                           "ends_with_end": passed or model == "sft", "factually_correct": passed, "overall": passed})
            text = f"<b>{model} answer {i}</b>" if model == "base" and i == 0 else f"{model} answer {i}"
            responses.append({"model": model, "item_id": item["id"], "prompt": f"Instruction: Question number {i}?\n"
                              "Response:", "raw_output": f" {text}\nEND", "response": text, "emitted_end": passed,
                              "prompt_tokens": 5, "output_tokens": 4})
    return items, scores, responses


@pytest.fixture()
def run(tmp_path, monkeypatch) -> Run:
    """A run with stages 01, 04, 05 and 06 'done' (02 and 03 missing) and synthetic evaluation outputs."""
    monkeypatch.setenv("ALIGNKIT_REPORTS", str(tmp_path / "reports"))
    cfg = resolve("smoke", overrides=["evaluation.n_examples=4"])
    run = Run(run_id="synthetic", config=cfg, root=tmp_path / "home")
    items, scores, responses = _scores_and_responses()

    eval_path = run.stage_dir("01_sft_data") / "eval_items.jsonl"
    eval_path.parent.mkdir(parents=True)
    files.write_jsonl(eval_path, items)
    _write_manifest(run, "01_sft_data", {"eval_items": eval_path}, {
        "wanted": 42, "kept": 40, "candidates": 67, "acceptance_rate": 0.597, "duplicates_removed": 1,
        "dropped": {"no_stop": 20},
        "per_family": {"capitals": {"candidates": 10, "accepted": 9, "dropped": 1, "acceptance_rate": 0.9, "kept": 9},
                       "open_ended": {"candidates": 10, "accepted": 2, "dropped": 8, "acceptance_rate": 0.2,
                                      "kept": 2}}})
    pairs = run.stage_dir("04_preference_pairs") / "pairs.jsonl"
    pairs.parent.mkdir(parents=True)
    pairs.write_text("{}\n")
    _write_manifest(run, "04_preference_pairs", {"pairs": pairs}, {
        "pairs": 63, "types": {"refusal": 20, "verbose": 43}, "chosen_sources": {"sft_greedy": 63},
        "margins": {"refusal": {"n": 20, "mean": 4.25, "median": 4.0, "min": -1.5, "max": 9.0, "share_positive": 0.9}},
        "margin_overall": {"mean": 3.1, "share_positive": 0.8}, "dropped": {}})
    histories = {}
    for name in ("sft_dpo", "dpo_only"):
        histories[name] = run.stage_dir("05_dpo_training") / f"{name}_log_history.json"
        histories[name].parent.mkdir(parents=True, exist_ok=True)
        files.write_json(histories[name], [{"step": s, "loss": 0.7 - 0.05 * s, "rewards/margins": 0.1 * s,
                                            "rewards/accuracies": min(1.0, 0.5 + 0.1 * s)} for s in range(1, 6)])
    _write_manifest(run, "05_dpo_training", {f"{n}_log_history": p for n, p in histories.items()}, {
        "method": "lora", "beta": 0.1, "loss_type": "sigmoid", "pairs": 63,
        "runs": {n: {"initial_model": f"/x/{n}", "saved": "adapter", "final_reward_accuracy": 0.875,
                     "final_reward_margin": 1.25, "final_loss": 0.31, "train_seconds": 12.0} for n in histories}})

    results = evaluation.build_results(scores, models=list(MODELS),
                                       criteria=["ends_with_end", "factually_correct", "overall"],
                                       correction="holm", n_bootstrap=200, seed=0)
    results.update({"preset": "smoke", "config": cfg.to_dict(),
                    "memory": {"device": "cpu", "max_models_resident": 1, "resumed_models": [], "method": "sampled",
                               "per_model": {m: {"rss_peak_mb": 800.0, "rss_baseline_mb": 700.0, "resumed": False}
                                             for m in MODELS}},
                    "provenance": {"eval_items": {"path": str(eval_path), "sha256": "ab" * 32},
                                   "models": {"sft": {"path": "/m/sft", "adapter": None, "prompt_style": "template",
                                                      "sha256": "cd" * 32}},
                                   "stages": {"02_sft_training": None}, "versions": {"torch": "2.x"},
                                   "git_commit": "0123456789abcdef", "security": {"trust_remote_code": False,
                                                                                   "allow_pickle_weights": False}}})
    stage = run.stage_dir("06_evaluation")
    stage.mkdir(parents=True)
    files.write_json(stage / "results.json", results)
    files.write_jsonl(stage / "scores.jsonl", scores)
    files.write_jsonl(stage / "responses.jsonl", responses)
    _write_manifest(run, "06_evaluation", {"results": stage / "results.json", "scores": stage / "scores.jsonl",
                                           "responses": stage / "responses.jsonl"}, {})
    return run


def _text(html: str) -> str:
    """The page's visible text, tags removed and whitespace collapsed (to search sentences)."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).replace("&#39;", "'").replace("&amp;", "&")


def test_report_has_headline_tables_and_figures(run) -> None:
    path = report.build(run)
    assert path == run.report_dir / "report.html"
    html = path.read_text(encoding="utf-8")
    text = _text(html)
    results = report.load_results(run)
    assert results["best_model"] == "sft_dpo"
    assert results["headline"] and _text(results["headline"]) in text
    for figure in ("heatmap", "overall", "families", "dpo_curves"):
        assert f'src="figures/{figure}.png"' in html
        png = run.report_dir / "figures" / f"{figure}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (run.report_dir / "figures" / "sft_curves.png").exists()  # stage 02 missing: no curve invented
    assert "SFT log history: missing" in text
    # Models x criteria table: sft_dpo passes 5 of 6 overall.
    assert "83.3%" in text
    # Contrasts: every tested pair appears; holm named.
    for a, b in (("base", "sft"), ("sft", "sft_dpo"), ("base", "dpo_only"), ("dpo_only", "sft_dpo"),
                 ("base", "sft_dpo")):
        assert f"{a} → {b}" in text
    assert "Holm-adjusted" in text
    # Stages 02 and 03 are shown as missing, the others with their numbers.
    assert text.count("No complete manifest at") == 2
    assert "Best-of-N acceptance per family" in text and "90.0%" in text
    assert "Pair margins per negative type" in text
    assert "87.5%" in text  # final reward accuracy from stage 05
    # Base wrapped vs raw, memory, reproducibility and disk sections.
    assert "base_raw (bare instruction)" in text
    assert "max models resident: 1" in text
    assert "What is reproducible, and under which seed" in text
    assert "Run size on disk" in text
    assert "<style>" in html and "<script" not in html


def test_examples_are_wins_and_failures_and_escaped(run) -> None:
    results = report.load_results(run)
    items, scores, responses = _scores_and_responses()
    examples = report.pick_examples(results, responses, scores, {i["id"]: i for i in items}, 4)
    # Focus sft_dpo (best overall). Wins, where it passes and base fails: it-0..it-3; its one failure: it-5.
    # Half of 4 are wins, but only one failure exists, so three wins, alternating families (capitals, arithmetic).
    assert [(e["kind"], e["item_id"]) for e in examples] == [("win", "it-0"), ("win", "it-1"), ("win", "it-2"),
                                                             ("failure", "it-5")]
    assert examples[0]["instruction"] == "Question number 0?" and examples[0]["reference"] == "0"
    assert [c["model"] for c in examples[0]["models"]] == list(MODELS)
    failed = {c["model"]: c["failed"] for c in examples[3]["models"]}
    assert failed["sft_dpo"] == ["ends with END", "factually correct"]
    html = report.build(run).read_text(encoding="utf-8")
    assert "&lt;b&gt;base answer 0&lt;/b&gt;" in html and "<b>base answer 0</b>" not in html


def test_frames_for_the_notebook(run) -> None:
    results = report.load_results(run)
    table = report.criteria_frame(results)
    assert list(table.index) == [report.model_label(m) for m in MODELS]
    assert table.loc["sft_dpo", "overall"].startswith("83.3% [")
    contrasts = report.contrasts_frame(results, "overall")
    assert list(contrasts["contrast"]) == ["base → sft", "sft → sft_dpo", "base → dpo_only", "dpo_only → sft_dpo",
                                           "base → sft_dpo"]
    assert list(report.family_frame(results).index) == ["arithmetic", "capitals"]


def test_significance_marks_follow_adjusted_p() -> None:
    assert [report.significance_mark(p) for p in (0.0009, 0.009, 0.049, 0.05)] == ["***", "**", "*", ""]


def test_build_spread_over_seeds(tmp_path, monkeypatch):
    """seeds: [..] -> spread.json/spread.html with each model's overall rate per seed, mean, SD and range."""
    from alignkit import files, report

    monkeypatch.setenv("ALIGNKIT_REPORTS", str(tmp_path))
    for seed, rate in ((0, 0.3), (1, 0.5)):
        files.write_json(tmp_path / f"r-seed{seed}" / "results.json",
                         {"models": {"sft": {"criteria": {"overall": {"rate": rate}}}}})
    path = report.build_spread("r", {0: "r-seed0", 1: "r-seed1"})
    spread = files.read_json(tmp_path / "r" / "spread.json")["spread"]["sft"]
    # mean (0.3 + 0.5) / 2 = 0.4; SD = sqrt(((0.1)^2 + (0.1)^2) / 1) = 0.1414
    assert (spread["mean"], spread["sd"], spread["min"], spread["max"]) == (0.4, 0.1414, 0.3, 0.5)
    assert "seed 1" in path.read_text() and "r-seed0/report.html" in path.read_text()
