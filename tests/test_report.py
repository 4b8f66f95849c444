"""Tests for alignkit.report: the self-contained report.html built from synthetic results on a fake run folder.

The results come from :func:`alignkit.eval.results.build_results` on synthetic score rows (five arms, two training
seeds, six items); stages 01, 04 (seed 0 only) and 05 have fake manifests, stages 02 and 03 are missing. Checked:
the pre-registered design comes before any number, every pre-registered contrast appears, cells an arm cannot
pass by design are marked †, figures are embedded as data URIs and written as the same PNG files, every table
heads every column, responses are HTML-escaped, missing stages are shown as missing, the QC numbers of the stages
that ran, the examples, and the notebook frames.
"""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from alignkit import files, report
from alignkit.config import (
    CONTRASTS,
    EVAL_MODELS,
    UNTRAINED_MODELS,
    parse_contrast,
    resolve,
)
from alignkit.eval import results, scoring
from alignkit.report import examples as report_examples
from alignkit.report import tables
from alignkit.report.text import endpoint_label, significance_mark
from alignkit.runs import Run, fingerprint_path

T, F = True, False
SEEDS = (0, 1)
#: Whether each arm answers each of six items correctly (families alternate capitals / arithmetic), per training
#: seed for the trained arms. Untrained arms never emit END (they never saw it); trained arms always do.
CORRECT = {
    ("base_fewshot", None): [F, F, T, F, T, F],
    ("base", None): [F, F, F, F, T, F],
    ("sft", 0): [T, T, F, T, T, F], ("sft", 1): [T, T, T, T, T, F],         # overall 4/6, 5/6 -> 75.0%
    ("sft_dpo", 0): [T, T, T, T, T, F], ("sft_dpo", 1): [T, T, T, T, T, F],  # overall 5/6, 5/6 -> 83.3%
    ("dpo_only", 0): [F, T, F, F, T, F], ("dpo_only", 1): [F, T, F, T, T, F],
}
#: A response that must be escaped, and a harmless one.
HOSTILE = "<script>alert('x')</script> & <b>bold</b>"


def _items() -> list[dict]:
    return [{"id": f"it-{i}", "family": "capitals" if i % 2 == 0 else "arithmetic",
             "instruction": f"Question number {i}?", "reference": str(i), "params": {"key": f"k{i}"}}
            for i in range(6)]


def _scores_and_responses() -> tuple[list[dict], list[dict]]:
    scores, responses = [], []
    for (model, seed), correct in CORRECT.items():
        for item, ok in zip(_items(), correct):
            end = model not in UNTRAINED_MODELS
            row = {"model": model, "seed": seed, "item_id": item["id"], "family": item["family"],
                   **{c: True for c in scoring.CRITERIA}}
            row.update({"ends_with_end": end, "factually_correct": ok})
            row.update({"format": end, "content": ok, "overall": end and ok})
            scores.append(row)
            text = HOSTILE if (model, item["id"]) == ("base", "it-0") else f"{model} answer {item['id']}"
            responses.append({"model": model, "seed": seed, "item_id": item["id"],
                              "prompt": f"Instruction: {item['instruction']}\nResponse:",
                              "raw_output": f" {text}" + ("\nEND" if end else ""), "response": text,
                              "emitted_end": end, "prompt_tokens": 5, "output_tokens": 4})
    return scores, responses


def _write_manifest(run: Run, stage: str, outputs: dict[str, Path], summary: dict) -> None:
    folder = run.stage_dir(stage)
    folder.mkdir(parents=True, exist_ok=True)
    files.write_json(folder / "manifest.json", {
        "stage": stage, "run_id": run.run_id, "status": "complete", "seconds": 1.5,
        "finished": "2026-01-01T00:00:00+00:00", "fingerprint": f"fp-{stage[:2]}", "summary": summary,
        "outputs": {n: {"path": str(p.relative_to(run.dir)), "sha256": fingerprint_path(p), "rows": None}
                    for n, p in outputs.items()}})


def _make_run(root: Path) -> Run:
    cfg = resolve("smoke", overrides=["evaluation.n_examples=4"])
    assert cfg.training_seeds == SEEDS
    run = Run(run_id="synthetic", config=cfg, root=root / "home")
    scores, responses = _scores_and_responses()

    eval_path = run.stage_dir("01_sft_data") / "eval_items.jsonl"
    eval_path.parent.mkdir(parents=True)
    files.write_jsonl(eval_path, _items())
    _write_manifest(run, "01_sft_data", {"eval_items": eval_path}, {
        "wanted": 42, "kept": 40, "candidates": 67, "acceptance_rate": 0.597, "duplicates_removed": 1,
        "dropped": {"no_stop": 20},
        "per_family": {"capitals": {"candidates": 10, "accepted": 9, "dropped": 1, "acceptance_rate": 0.9, "kept": 9},
                       "open_ended": {"candidates": 10, "accepted": 2, "dropped": 8, "acceptance_rate": 0.2,
                                      "kept": 2}}})
    seed0 = run.for_seed(0)
    pairs = seed0.stage_dir("04_preference_pairs") / "pairs.jsonl"
    pairs.parent.mkdir(parents=True)
    pairs.write_text("{}\n")
    _write_manifest(seed0, "04_preference_pairs", {"pairs": pairs}, {
        "pairs": 63, "chosen_sources": {"sft_greedy": 63}, "dropped": {},
        "margins": {"refusal": {"n": 20, "q25": 1.0, "median": 4.0, "q75": 6.0, "share_positive": 0.9}},
        "margin_overall": {"mean": 3.1, "share_positive": 0.8}})
    for view in run.seed_views():
        histories = {}
        for name in ("sft_dpo", "dpo_only"):
            histories[name] = view.stage_dir("05_dpo_training") / f"{name}_log_history.json"
            histories[name].parent.mkdir(parents=True, exist_ok=True)
            files.write_json(histories[name], [{"step": s, "loss": 0.7 - 0.05 * s, "rewards/margins": 0.1 * s,
                                                "rewards/accuracies": min(1.0, 0.5 + 0.1 * s)} for s in range(1, 6)])
        _write_manifest(view, "05_dpo_training", {f"{n}_log_history": p for n, p in histories.items()}, {
            "method": "lora", "beta": 0.1, "loss_type": "sigmoid", "pairs": 63,
            "runs": {n: {"initial_model": f"/x/{n}", "saved": "adapter", "train_reward_accuracy": 0.875,
                         "train_loss_mean": 0.31, "train_seconds": 12.0,
                         "train_by_type": {"refusal": {"n": 20, "margin_mean": 1.25, "accuracy": 0.9,
                                                       "chosen_logp_change": -0.5}}} for n in histories}})

    built = results.build_results(scores, models=list(EVAL_MODELS), seeds=list(SEEDS), contrasts=list(CONTRASTS),
                                  n_bootstrap=200, n_permutations=2000, seed=0)
    built.update({"preset": "smoke", "config": cfg.to_dict(),
                  "provenance": {"split": "test", "items_sha256": "ab" * 32,
                                 "models": {"sft_seed0": {"prompt_style": "template", "sha256": "cd" * 32}},
                                 "stages": {"02_sft_training/seed0": None},
                                 "security": {"trust_remote_code": False, "allow_pickle_weights": False}}})
    info = {
        "items_path": str(eval_path), "models": {"sft_seed0": {"path": "/m/sft", "adapter": None}},
        "memory": {"device": "cpu", "max_models_resident": 1, "resumed_models": [], "method": "sampled every 20 ms",
                   "per_model": {key: {"load_seconds": 0.5, "generate_seconds": 1.25, "rss_baseline_mb": 700.0,
                                       "rss_peak_mb": 800.0, "rss_peak_over_baseline_mb": 100.0,
                                       "rss_after_release_mb": 710.0, "cuda_max_allocated_mb": None,
                                       "resumed": key == "base"}
                                 for key in ("sft_dpo_seed0", "base", "sft_seed1", "base_fewshot")}},
        "versions": {"torch": "2.x"}, "git_commit": "0123456789abcdef"}
    stage = run.stage_dir("06_evaluation")
    stage.mkdir(parents=True)
    files.write_json(stage / "results.json", built)
    files.write_json(stage / "run_info.json", info)
    files.write_jsonl(stage / "scores.jsonl", scores)
    files.write_jsonl(stage / "responses.jsonl", responses)
    _write_manifest(run, "06_evaluation", {"results": stage / "results.json", "run_info": stage / "run_info.json",
                                           "scores": stage / "scores.jsonl", "responses": stage / "responses.jsonl"},
                    {})
    return run


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """``(run, results as read back from results.json, report.html text)``; the report is built once."""
    root = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ALIGNKIT_REPORTS", str(root / "reports"))
        run = _make_run(root)
        path = report.build(run)
        assert path == run.report_dir / "report.html"
        yield run, report.load_results(run), path.read_text(encoding="utf-8")


class _Page(HTMLParser):
    """Tables (header cells, rows of cells with their classes) and image sources of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[dict] = []
        self.images: list[str] = []
        self._cell: dict | None = None
        self._row: list | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if self._cell is not None:  # markup inside a cell separates words
            self._cell["text"] += " "
        if tag == "table":
            self.tables.append({"header": [], "rows": []})
        elif tag == "tr" and self.tables:
            self._row = []
        elif tag in ("th", "td") and self._row is not None:
            self._cell = {"tag": tag, "text": "", "class": attrs.get("class") or ""}
        elif tag == "img":
            self.images.append(attrs["src"])

    def handle_endtag(self, tag):
        if tag in ("th", "td") and self._cell is not None:
            self._row.append(self._cell)
            self._cell = None
        elif tag == "tr" and self._row is not None:
            if all(c["tag"] == "th" for c in self._row):
                self.tables[-1]["header"].append([c["text"].strip() for c in self._row])
            else:
                self.tables[-1]["rows"].append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data


def _page(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    return page


def _text(html: str) -> str:
    """The page's visible text, tags removed and whitespace collapsed (to search sentences)."""
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).replace("&#39;", "'").replace("&amp;", "&")
    return re.sub(r" ([:;,.])", r"\1", text)  # "<b>FORMAT</b>:" reads "FORMAT:"


# ---------------------------------------------------------------------------------------------- the page
def test_design_comes_before_the_first_number(built) -> None:
    _run, res, html = built
    main = html[html.index("<main>") + len("<main>"):]
    assert main.lstrip().startswith('<section id="design"')  # the first thing in the page body
    design = main[:main.index("</section>")]
    rest = main[main.index("</section>"):]
    # No result in the design: no rate, difference or p-value (rates print as 83.3%, differences as +8.3).
    assert not re.search(r"\d+\.\d%|[+-]\d+\.\d\b|p = ", _text(design))
    assert re.search(r"\d+\.\d%", _text(rest))
    # The headline, the first place numbers appear, follows the design.
    assert rest.index('class="headline"') < rest.index("%")
    assert _text(res["headline"]) in _text(rest)


def test_every_pre_registered_contrast_appears(built) -> None:
    _run, res, html = built
    text = _text(html)
    primary_table = _page(html[html.index('id="primary"'):html.index('id="results"')]).tables[0]
    in_table = [(row[0]["text"], row[1]["text"]) for row in primary_table["rows"]]
    for contrast in CONTRASTS:
        a, b, endpoint = parse_contrast(contrast)
        words = results.CONTRAST_WORDS[(a, b)]
        assert f"{b} vs {a} — {words}; primary endpoint {endpoint_label(endpoint)}:" in text  # the design list
        assert (f"{b} vs {a}", endpoint_label(endpoint)) in in_table  # the primary contrasts table
        assert f"({b} vs {a}, {endpoint})" in text  # the headline
    assert len(in_table) == len(CONTRASTS)
    # base -> sft:format cannot be tested (the base never saw END): the design says so.
    assert "sft vs base — what SFT does to the answer format; primary endpoint FORMAT: descriptive, not tested" in text
    assert text.count("primary, tested (Holm over the primaries)") == len(CONTRASTS) - 1


def test_by_design_cells_are_marked(built) -> None:
    _run, res, html = built
    section = html[html.index('id="results"'):html.index('id="families"')]
    table = _page(section).tables[0]
    assert table["header"][0] == ["arm", *(endpoint_label(e) for e in res["endpoints"])]
    assert [row[0]["text"].split()[0] for row in table["rows"]] == list(EVAL_MODELS)
    marked = {}
    for row in table["rows"]:
        model = row[0]["text"].split()[0]
        for endpoint, cell in zip(res["endpoints"], row[1:]):
            has_dagger = "†" in cell["text"]
            assert has_dagger == ("bydesign" in cell["class"].split()), (model, endpoint)
            if has_dagger:
                marked.setdefault(model, set()).add(endpoint)
    assert marked == {"base": {"ends_with_end", "format", "overall"},
                      "base_fewshot": {"ends_with_end", "proper_structure", "no_rambling", "format", "overall"}}
    assert marked == {m: set(r) for m, r in res["by_design"].items()}
    # The disclosure names the reasons.
    assert "Not evidence by design (marked † and hatched): " in _text(html)


def test_figures_are_embedded_and_written_as_png(built) -> None:
    run, _res, html = built
    fig_dir = run.report_dir / "figures"
    pngs = {p.stem: p.read_bytes() for p in fig_dir.glob("*.png")}
    assert set(pngs) == {"forest", "forest_secondary", "composites", "heatmap", "families_content",
                         "families_overall", "phi", "dpo_curves", "dpo_types"}
    assert "sft_curves" not in pngs  # stage 02 missing: no curve invented
    images = _page(html).images
    assert len(images) == len(pngs)
    prefix = "data:image/png;base64,"
    assert all(src.startswith(prefix) for src in images)  # self-contained: nothing loaded from disk
    embedded = sorted(base64.b64decode(src[len(prefix):]) for src in images)
    assert embedded == sorted(pngs.values())  # the same bytes as the files
    assert all(data[:8] == b"\x89PNG\r\n\x1a\n" for data in embedded)
    assert 'src="figures/' not in html and "<script" not in html and "<link" not in html
    assert "<style>" in html


def test_every_table_heads_every_column(built) -> None:
    _run, _res, html = built
    page = _page(html)
    assert len(page.tables) >= 10
    for table in page.tables:
        assert len(table["header"]) == 1, table
        width = len(table["header"][0])
        assert all(table["header"][0]), table["header"]  # no empty header cell
        for row in table["rows"]:
            assert len(row) == width, (table["header"], [c["text"] for c in row])


def test_responses_are_html_escaped(built) -> None:
    _run, _res, html = built
    assert "<script>alert" not in html and "<b>bold</b>" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in html


def test_stage_sections_missing_and_present(built) -> None:
    run, _res, html = built
    text = _text(html)
    # Missing: 02 and 03 for both seeds, 04 for seed 1; nothing else.
    missing = re.findall(r"No complete manifest at (\S+)/manifest\.json", text)
    assert sorted(str(Path(m).relative_to(run.dir)) for m in missing) == [
        "02_sft_training/seed0", "02_sft_training/seed1", "03_negatives/seed0", "03_negatives/seed1",
        "04_preference_pairs/seed1"]
    assert "Best-of-N acceptance per family" in text and "90.0%" in text   # stage 01
    assert "Pairs per negative type" in text and "80.0%" in text          # stage 04, share_positive
    assert "87.5%" in text                                                # stage 05, train reward accuracy
    assert "Max models resident: 1" in text
    assert "What is reproducible, and under which seed" in text and "Run size on disk" in text
    # Per-seed spread: sft overall 4/6 and 5/6 -> sd |0.833 - 0.667| / sqrt(2) = 11.8 points, range 67–83.
    assert "sd 11.8 · 67–83" in text


def test_untrained_arms_show_no_seed_spread(built) -> None:
    _run, _res, html = built
    section = _page(html[html.index('id="results"'):html.index('id="families"')]).tables[0]
    for row in section["rows"][:2]:  # base_fewshot and base: generated once
        assert all("untrained: one run serves every seed" in cell["text"] for cell in row[1:]), row[0]["text"]


def test_report_copies_results_json(built) -> None:
    run, res, _html = built
    assert files.read_json(run.report_dir / "results.json") == res


# ---------------------------------------------------------------------------------------------- examples
def test_examples_are_wins_and_failures(built) -> None:
    run, res, _html = built
    scores, responses = _scores_and_responses()
    examples = report_examples.pick_examples(res, responses, scores, {i["id"]: i for i in _items()}, 4)
    # Focus sft_dpo, first seed (0). Wins (passes content, base_fewshot fails it): it-0, it-1, it-3; its one
    # failure: it-5. Half of 4 would be wins, but only one failure exists, so three wins, families alternating.
    assert [(e["kind"], e["item_id"]) for e in examples] == [("win", "it-0"), ("win", "it-1"), ("win", "it-3"),
                                                             ("failure", "it-5")]
    assert examples[0]["instruction"] == "Question number 0?" and examples[0]["reference"] == "0"
    assert [c["label"] for c in examples[0]["models"]] == ["base_fewshot", "base", "sft (seed 0)",
                                                           "sft_dpo (seed 0)", "dpo_only (seed 0)"]
    failed = {c["model"]: c["failed"] for c in examples[3]["models"]}
    assert failed["sft_dpo"] == ["factually_correct"]
    assert failed["base"] == ["ends_with_end", "factually_correct"]
    assert report.run_examples(run, res) == examples  # the run's own files give the same


# ---------------------------------------------------------------------------------------------- frames
def test_frames_for_the_notebook(built) -> None:
    run, res, _html = built
    rates = report.rates_frame(res)
    assert list(rates.index) == list(EVAL_MODELS)
    assert list(rates.columns) == [endpoint_label(e) for e in scoring.ENDPOINTS]
    assert rates.loc["sft_dpo", "OVERALL"].startswith("83.3% [")
    assert rates.loc["sft", "OVERALL"].startswith("75.0% [")
    assert rates.loc["base", "OVERALL"].endswith(" †") and not rates.loc["sft", "OVERALL"].endswith("†")
    primary = report.contrasts_frame(res, "primary")
    assert list(primary.columns) == list(tables.CONTRAST_COLUMNS)
    assert list(primary["contrast"]) == ["sft vs base_fewshot", "sft_dpo vs sft", "dpo_only vs base_fewshot",
                                         "sft_dpo vs dpo_only"]
    descriptive = report.contrasts_frame(res, "descriptive")
    assert ("sft vs base", "FORMAT") in set(zip(descriptive["contrast"], descriptive["endpoint"]))
    assert set(descriptive["p"]) == {"n/a"}
    assert len(report.contrasts_frame(res)) == len(CONTRASTS) * len(scoring.ENDPOINTS)
    assert list(report.family_frame(res).index) == ["arithmetic", "capitals"]
    memory = report.memory_frame(report.load_run_info(run)["memory"])
    assert list(memory.columns) == list(tables.MEMORY_COLUMNS)
    assert list(memory["model"]) == ["base_fewshot", "base", "sft_seed1", "sft_dpo_seed0"]  # arm order
    assert list(memory["responses"]) == ["generated", "resumed from disk", "generated", "generated"]


def test_significance_marks_follow_adjusted_p() -> None:
    assert [significance_mark(p) for p in (0.0009, 0.009, 0.049, 0.05, None)] == ["***", "**", "*", "", ""]


def test_every_criterion_and_composite_is_defined_in_the_report(built) -> None:
    """The reader meets each criterion's definition in the report itself (the scorer's own table of them)."""
    from html import unescape

    from alignkit.eval import scoring

    _, _, html = built
    text = unescape(_text(html))
    for name in scoring.CRITERIA:
        definition = scoring.DEFINITIONS[name]
        assert definition and _text(definition) in text, name


def test_stage_notebook_exports_are_linked_and_every_file_is_readable_by_others(tmp_path) -> None:
    """The report links the notebook exports that exist beside it (and only those), and under a 022 umask every
    file it writes is readable by group and others (a shared reports folder, a web server)."""
    import os
    import stat

    previous = os.umask(0o022)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("ALIGNKIT_REPORTS", str(tmp_path / "reports"))
            run = _make_run(tmp_path)
            run.report_dir.mkdir(parents=True, exist_ok=True)
            for stage in ("01_sft_data", "06_evaluation"):
                (run.report_dir / f"{stage}.html").write_text("<html></html>")
            html = report.build(run).read_text(encoding="utf-8")
    finally:
        os.umask(previous)
    assert 'href="01_sft_data.html"' in html and 'href="06_evaluation.html"' in html
    assert 'href="02_sft_training.html"' not in html
    written = [p for p in run.report_dir.rglob("*") if p.is_file() and not p.name.endswith("_data.html")
               and p.name != "06_evaluation.html"]
    assert {p.name for p in written} >= {"report.html", "results.json"}
    for path in written:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o044 == 0o044, f"{path.name}: mode {oct(mode)}"
