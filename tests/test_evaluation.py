"""Tests for alignkit.evaluation: one-model-at-a-time generation with resume, the stage on a fake run, and the
statistics built from hand-worked synthetic scores.

Models are a tiny random Llama (and a random LoRA adapter on it) saved to a temporary folder; no network.
"""

from __future__ import annotations

import math
import random
import shutil
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from alignkit import evaluation, files, modeling, records, template, world
from alignkit.config import EVAL_MODELS, resolve
from alignkit.evaluation import ModelSpec
from alignkit.runs import Run, fingerprint_path

Z95 = 1.959963984540054  # standard normal 97.5% quantile


# --------------------------------------------------------------------------------------------------
# Tiny models on disk
# --------------------------------------------------------------------------------------------------


def _tokenizer() -> PreTrainedTokenizerFast:
    rng = random.Random(0)
    words = "the cat sat on a mat what is capital of egypt cairo write word bread list three body parts".split()
    corpus = [template.full_text(" ".join(rng.choice(words) for _ in range(6)), rng.choice(words)) for _ in range(200)]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<eos>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", pad_token="<pad>")


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory) -> dict[str, Path]:
    """A random 2-layer Llama folder and a random (non-identity) LoRA adapter for it."""
    from peft import LoraConfig, get_peft_model

    root = tmp_path_factory.mktemp("tiny")
    tokenizer = _tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=None)
    model = LlamaForCausalLM(config)
    base = root / "base"
    model.save_pretrained(base, safe_serialization=True)
    tokenizer.save_pretrained(base)
    peft_model = get_peft_model(LlamaForCausalLM.from_pretrained(base),
                                LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                           init_lora_weights=False))
    adapter = root / "adapter"
    peft_model.save_pretrained(adapter)
    return {"base": base, "adapter": adapter}


def _cfg(base: Path, *overrides: str):
    return resolve("smoke", overrides=[f"model.base={base}", "model.device=cpu", "evaluation.max_new_tokens=6",
                                       "evaluation.batch_size=4", *overrides])


@pytest.fixture(scope="module")
def items() -> list[world.Item]:
    return world.heldout_items(0, 7)


# --------------------------------------------------------------------------------------------------
# Generation, one model at a time, and resume
# --------------------------------------------------------------------------------------------------


def test_generate_one_model_at_a_time_writes_valid_files(tiny_dirs, items, tmp_path) -> None:
    cfg = _cfg(tiny_dirs["base"])
    specs = {"base": ModelSpec(tiny_dirs["base"]), "base_raw": ModelSpec(tiny_dirs["base"], None, "raw"),
             "sft_dpo": ModelSpec(tiny_dirs["base"], tiny_dirs["adapter"])}
    memory = evaluation.generate_responses(specs, items, cfg, tmp_path, progress=False)

    assert memory["max_models_resident"] == 1
    assert memory["models_loaded_this_process"] == 3
    assert memory["resumed_models"] == []
    for name, spec in specs.items():
        sidecar = files.read_json(tmp_path / f"responses_{name}.json")
        assert sidecar["sha256"] == files.sha256_file(tmp_path / f"responses_{name}.jsonl")
        rows, defects = records.validate_file(tmp_path / f"responses_{name}.jsonl", "responses")
        assert defects == []
        assert [r["item_id"] for r in rows] == [item.id for item in items]
        expected = [template.prompt(i.instruction) if spec.prompt_style == "template" else i.instruction + "\n"
                    for i in items]
        assert [r["prompt"] for r in rows] == expected
        for r in rows:
            assert (r["response"], r["emitted_end"]) == template.split_output(r["raw_output"])
            assert 1 <= r["output_tokens"] <= 6
        m = memory["per_model"][name]
        assert m["resident_while_loaded"] == 1 and m["resident_after_release"] == 0
        assert m["rss_peak_mb"] >= m["rss_baseline_mb"] > 0
        assert m["cuda_max_allocated_mb"] is None  # CPU run
    assert modeling.TRACKER.resident() == 0
    # The adapter is applied (random LoRA weights change the outputs of at least one prompt).
    base_rows = files.read_jsonl(tmp_path / "responses_base.jsonl")
    dpo_rows = files.read_jsonl(tmp_path / "responses_sft_dpo.jsonl")
    assert [r["raw_output"] for r in base_rows] != [r["raw_output"] for r in dpo_rows]

    path, combined = evaluation.combine_responses(tmp_path, list(specs))
    assert len(combined) == 3 * len(items)
    assert records.validate_file(path, "responses")[1] == []
    assert [r["model"] for r in combined[:: len(items)]] == list(specs)


def test_resume_skips_only_complete_current_models(tiny_dirs, items, tmp_path) -> None:
    cfg = _cfg(tiny_dirs["base"])
    specs = {"base": ModelSpec(tiny_dirs["base"]), "base_raw": ModelSpec(tiny_dirs["base"], None, "raw")}
    first = evaluation.generate_responses(specs, items, cfg, tmp_path, progress=False)
    before = (tmp_path / "responses_base.jsonl").read_bytes()

    again = evaluation.generate_responses(specs, items, cfg, tmp_path, progress=False)
    assert again["models_loaded_this_process"] == 0
    assert again["resumed_models"] == ["base", "base_raw"]
    assert again["max_models_resident"] == 1  # carried over from the run that generated them
    assert again["per_model"]["base"]["rss_peak_mb"] == first["per_model"]["base"]["rss_peak_mb"]
    assert (tmp_path / "responses_base.jsonl").read_bytes() == before

    # A truncated file (a kill mid-write cannot produce one, but a hand edit can) is regenerated.
    lines = (tmp_path / "responses_base_raw.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "responses_base_raw.jsonl").write_text("".join(lines[:-1]))
    third = evaluation.generate_responses(specs, items, cfg, tmp_path, progress=False)
    assert third["models_loaded_this_process"] == 1
    assert third["resumed_models"] == ["base"]
    assert len(files.read_jsonl(tmp_path / "responses_base_raw.jsonl")) == len(items)

    # A missing sidecar (deleted by hand; a kill cannot leave a responses file without one) means regenerate.
    (tmp_path / "responses_base.json").unlink()
    assert evaluation.generate_responses(specs, items, cfg, tmp_path, progress=False)["resumed_models"] == ["base_raw"]

    # Other generation settings: nothing is reused.
    changed = evaluation.generate_responses(specs, items, _cfg(tiny_dirs["base"], "evaluation.max_new_tokens=5"),
                                            tmp_path, progress=False)
    assert changed["resumed_models"] == [] and changed["models_loaded_this_process"] == 2


def test_duplicate_item_ids_are_refused(tiny_dirs, items, tmp_path) -> None:
    with pytest.raises(ValueError, match="appears more than once"):
        evaluation.generate_responses({"base": ModelSpec(tiny_dirs["base"])}, [items[0], items[0]],
                                      _cfg(tiny_dirs["base"]), tmp_path, progress=False)


def test_rss_monitor_sees_an_allocation() -> None:
    with evaluation.RSSMonitor(interval_s=0.005) as monitor:
        block = torch.ones(64 * 1024 * 1024 // 4)  # 64 MiB, touched
        block += 1
        del block
    assert monitor.peak - monitor.baseline > 32 * 1024 * 1024
    assert monitor.samples >= 1


# --------------------------------------------------------------------------------------------------
# Model specs and the stage on a fake run (manifests written here, models from the tiny folders)
# --------------------------------------------------------------------------------------------------


def _fake_manifest(run: Run, stage: str, outputs: dict[str, Path], summary: dict) -> None:
    folder = run.stage_dir(stage)
    folder.mkdir(parents=True, exist_ok=True)
    entries = {name: {"path": str(path.relative_to(run.dir)), "sha256": fingerprint_path(path), "rows": None}
               for name, path in outputs.items()}
    files.write_json(folder / "manifest.json", {"stage": stage, "run_id": run.run_id, "status": "complete",
                                                "outputs": entries, "summary": summary})


@pytest.fixture()
def fake_run(tiny_dirs, items, tmp_path, monkeypatch) -> Run:
    """Stages 01, 02 and 05 'done': eval items, a full SFT model folder and two LoRA adapters."""
    monkeypatch.setenv("ALIGNKIT_REPORTS", str(tmp_path / "reports"))
    base = tmp_path / "base"
    shutil.copytree(tiny_dirs["base"], base)
    run = Run(run_id="fake", config=_cfg(base), root=tmp_path / "home")
    eval_path = run.stage_dir("01_sft_data") / "eval_items.jsonl"
    eval_path.parent.mkdir(parents=True)
    files.write_jsonl(eval_path, [item.to_record() for item in items])
    _fake_manifest(run, "01_sft_data", {"eval_items": eval_path}, {})
    sft_dir = run.stage_dir("02_sft_training") / "model"
    shutil.copytree(tiny_dirs["base"], sft_dir)
    _fake_manifest(run, "02_sft_training", {"model": sft_dir}, {"saved": "full"})
    outputs, summary = {}, {}
    for name, initial in (("sft_dpo", sft_dir), ("dpo_only", base)):
        outputs[name] = run.stage_dir("05_dpo_training") / name
        shutil.copytree(tiny_dirs["adapter"], outputs[name])
        summary[name] = {"saved": "adapter", "initial_model": str(initial), "initial_adapter": None,
                         "initial_model_sha256": fingerprint_path(initial)}
    _fake_manifest(run, "05_dpo_training", outputs, {"runs": summary})
    return run


def test_model_specs_maps_every_model_to_its_weights(fake_run) -> None:
    specs = evaluation.model_specs(fake_run)
    base = Path(fake_run.config.model.base).resolve()
    sft_dir = fake_run.stage_dir("02_sft_training") / "model"
    assert list(specs) == list(EVAL_MODELS)
    assert specs["base"] == ModelSpec(base, None, "template")
    assert specs["base_raw"] == ModelSpec(base, None, "raw")
    assert specs["sft"] == ModelSpec(sft_dir, None, "template")
    assert specs["sft_dpo"] == ModelSpec(sft_dir, fake_run.stage_dir("05_dpo_training") / "sft_dpo", "template")
    assert specs["dpo_only"] == ModelSpec(base, fake_run.stage_dir("05_dpo_training") / "dpo_only", "template")
    assert sorted(evaluation.model_inputs(specs)) == ["base_weights", "dpo_only_adapter", "sft_dpo_adapter",
                                                      "sft_weights"]


def test_model_specs_refuses_adapter_on_changed_weights(fake_run) -> None:
    config = fake_run.stage_dir("02_sft_training") / "model" / "config.json"
    config.write_text(config.read_text() + "\n")
    with pytest.raises(evaluation.ModelMismatchError, match=r"sft_dpo: .*initial_model_sha256"):
        evaluation.model_specs(fake_run)


@pytest.mark.slow  # five model loads, scoring, statistics and the report: ~3 s on an idle CPU, more under load
def test_stage_runs_caches_and_reports(fake_run) -> None:
    manifest = evaluation.run(fake_run)
    assert manifest["status"] == "complete"
    stage_dir = fake_run.stage_dir("06_evaluation")
    results = files.read_json(stage_dir / "results.json")
    assert results["memory"]["max_models_resident"] == 1
    assert results["model_order"] == list(EVAL_MODELS)
    assert set(results["models"]["sft"]["criteria"]) == set(evaluation.all_criteria())
    assert len(results["contrasts"]) == 5 * len(evaluation.all_criteria())
    assert results["correction"]["method"] == "holm"
    assert results["provenance"]["models"]["sft_dpo"]["sha256"] is not None
    assert results["provenance"]["stages"]["03_negatives"] is None
    assert manifest["summary"]["max_models_resident"] == 1
    assert len(files.read_jsonl(stage_dir / "scores.jsonl")) == 5 * 7
    assert (fake_run.report_dir / "results.json").read_bytes() == (stage_dir / "results.json").read_bytes()
    assert results["headline"] in (fake_run.report_dir / "report.html").read_text().replace("&#39;", "'")

    again = evaluation.run(fake_run)  # cached: same fingerprint, nothing regenerated
    assert again["finished"] == manifest["finished"]


# --------------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------------


def test_score_responses_uses_the_item_and_the_end_flag() -> None:
    item = world.get_family("capitals").make_item("capitals:france", random.Random(0), "it-1")
    rows = evaluation.score_responses([item], [
        {"model": "sft", "item_id": "it-1", "response": "Paris", "emitted_end": True},
        {"model": "base", "item_id": "it-1", "response": "Paris", "emitted_end": False},
    ])
    assert [(r["model"], r["family"], r["overall"], r["ends_with_end"]) for r in rows] == [
        ("sft", "capitals", True, True), ("base", "capitals", False, False)]
    assert set(rows[0]) == {"model", "item_id", "family", *evaluation.all_criteria()}
    with pytest.raises(ValueError, match="item_id 'nope' is not among the evaluation items"):
        evaluation.score_responses([item], [{"model": "sft", "item_id": "nope", "response": "x", "emitted_end": True}])


# --------------------------------------------------------------------------------------------------
# Statistics from synthetic scores (hand-worked)
# --------------------------------------------------------------------------------------------------

T, F = True, False
OVERALL_BY_MODEL = {
    "base": [F, F, F, F, F, F, T, T],     # 2/8
    "sft": [T, T, T, F, F, F, T, T],      # 5/8
    "sft_dpo": [T, T, T, T, T, F, T, F],  # 6/8
}
C1_BY_MODEL = {"base": [T, None, T, T, T, T, T, T], "sft": [T] * 8, "sft_dpo": [T] * 8}


def _rows() -> list[dict]:
    rows = []
    for model, outcomes in OVERALL_BY_MODEL.items():
        for i, value in enumerate(outcomes):
            rows.append({"model": model, "item_id": f"i{i}", "family": "capitals" if i < 4 else "arithmetic",
                         "c1": C1_BY_MODEL[model][i], "overall": value})
    return rows


def _wilson(k: int, n: int) -> tuple[float, float]:
    p = k / n
    denom = 1 + Z95**2 / n
    center = (p + Z95**2 / (2 * n)) / denom
    half = Z95 / denom * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n))
    return center - half, center + half


def _results(correction: str = "holm") -> dict:
    return evaluation.build_results(_rows(), models=["base", "sft", "sft_dpo"], criteria=["c1", "overall"],
                                    correction=correction, n_bootstrap=400, seed=0)


def test_rates_with_wilson_intervals_and_families() -> None:
    results = _results()
    dpo = results["models"]["sft_dpo"]["criteria"]["overall"]
    assert dpo["rate"] == 0.75 and dpo["n"] == 8
    assert (round(dpo["ci_low"], 4), round(dpo["ci_high"], 4)) == (0.4093, 0.9285)  # hand-worked Wilson 6/8
    assert (dpo["ci_low"], dpo["ci_high"]) == pytest.approx(_wilson(6, 8))
    base = results["models"]["base"]["criteria"]["overall"]
    assert (base["rate"], base["ci_low"], base["ci_high"]) == pytest.approx((0.25, 1 - 0.9285, 1 - 0.4093), abs=1e-4)
    assert set(dpo) == {"rate", "ci_low", "ci_high", "n"}
    assert results["models"]["base"]["criteria"]["c1"]["n"] == 7  # None = not applicable
    assert results["models"]["sft"]["families"]["capitals"]["overall"]["rate"] == 0.75  # T T T F
    assert results["models"]["sft"]["families"]["arithmetic"]["overall"]["rate"] == 0.5  # F F T T
    assert results["families"] == ["arithmetic", "capitals"]  # the world's family order
    assert results["n_items"] == 8


def test_contrasts_mcnemar_effects_and_holm() -> None:
    results = _results()
    rows = {(r["a"], r["b"], r["criterion"]): r for r in results["contrasts"]}
    # dpo_only is not evaluated: its two contrasts are skipped; 3 contrasts x 2 criteria remain, in order.
    assert [k for k in rows] == [("base", "sft", "c1"), ("base", "sft", "overall"), ("sft", "sft_dpo", "c1"),
                                 ("sft", "sft_dpo", "overall"), ("base", "sft_dpo", "c1"),
                                 ("base", "sft_dpo", "overall")]
    a = rows[("base", "sft", "overall")]
    assert (a["n01"], a["n10"], a["diff"], a["test"]) == (3, 0, 0.375, "mcnemar_exact")
    assert a["p_value"] == pytest.approx(0.25)  # 2 * (1/2)**3
    assert a["cohens_h"] == pytest.approx(2 * math.asin(math.sqrt(5 / 8)) - 2 * math.asin(math.sqrt(1 / 4)))
    assert a["ci_low"] <= a["diff"] <= a["ci_high"]
    b = rows[("sft", "sft_dpo", "overall")]
    assert (b["n01"], b["n10"], b["p_value"]) == (2, 1, 1.0)  # min(1, 2 * P(X<=1 | 3)) = min(1, 2 * 4/8)
    c = rows[("base", "sft_dpo", "overall")]
    assert (c["n01"], c["n10"], c["diff"]) == (5, 1, 0.5)
    assert c["p_value"] == pytest.approx(14 / 64)  # 2 * (1 + 6) / 2**6
    assert rows[("base", "sft", "c1")]["p_value"] == 1.0 and rows[("base", "sft", "c1")]["diff"] == 0.0
    # Holm over the six raw p-values [1, .25, 1, 1, 1, .21875]: 6 * .21875 and 5 * .25 both exceed 1.
    assert [r["p_adjusted"] for r in results["contrasts"]] == [1.0] * 6
    assert results["correction"]["method"] == "holm" and results["correction"]["n_tests"] == 6
    assert set(a) >= {"a", "b", "criterion", "diff", "ci_low", "ci_high", "p_value", "p_adjusted", "cohens_h",
                      "n01", "n10", "test"}


def test_benjamini_hochberg_correction() -> None:
    adjusted = {(r["a"], r["b"], r["criterion"]): r["p_adjusted"] for r in _results("bh")["contrasts"]}
    # Sorted raw p: .21875 (x6/1 = 1.3125), .25 (x6/2 = .75), then 1s; step-up minimum gives .75 to both.
    assert adjusted[("base", "sft", "overall")] == pytest.approx(0.75)
    assert adjusted[("base", "sft_dpo", "overall")] == pytest.approx(0.75)
    assert adjusted[("sft", "sft_dpo", "overall")] == 1.0


def test_cochran_q_on_overall() -> None:
    q = _results()["cochran_q"]
    # Columns base/sft/sft_dpo pass 2/5/6 (T = 13, sum C^2 = 65); row totals give sum R^2 = 27.
    # Q = (k-1)(k sum C^2 - T^2) / (k T - sum R^2) = 2 * (195 - 169) / (39 - 27) = 13/3; chi2(2) tail = exp(-Q/2).
    assert q["models"] == ["base", "sft", "sft_dpo"] and q["df"] == 2 and q["n_items"] == 8
    assert q["q"] == pytest.approx(13 / 3)
    assert q["p_value"] == pytest.approx(math.exp(-13 / 6))


def test_headline_is_honest_when_nothing_is_significant() -> None:
    results = _results()
    assert results["best_model"] == "sft_dpo"
    text = results["headline"]
    assert "sft_dpo scores highest at 75.0% (95% CI 40.9%–92.9%, n=8)" in text
    assert "+50.0 points" in text
    assert "not statistically significant after Holm correction (adjusted p = 1)" in text
    assert "do not show that it beats the base model" in text
    assert "runner-up sft (62.5%) is not significant" in text


def test_headline_for_a_significant_winner_and_for_ties() -> None:
    rows = [{"model": m, "item_id": f"i{i}", "family": "capitals", "overall": m == "sft"}
            for m in ("base", "sft") for i in range(30)]
    results = evaluation.build_results(rows, models=["base", "sft"], criteria=["overall"], n_bootstrap=200)
    contrast = results["contrasts"][0]
    assert (contrast["n01"], contrast["test"]) == (30, "mcnemar_chi2_cc")  # 30 discordant pairs >= 25
    # Continuity-corrected statistic (|30 - 0| - 1)**2 / 30; the chi2(1) tail of x is erfc(sqrt(x / 2)).
    assert contrast["p_value"] == pytest.approx(math.erfc(math.sqrt(29**2 / 30 / 2)))
    assert "sft scores highest at 100.0%" in results["headline"]
    assert "+100.0 points" in results["headline"]
    assert ", significant after Holm correction (adjusted p = 1.2e-07)." in results["headline"]

    tie_rows = [{**r, "model": "sft_dpo"} for r in rows if r["model"] == "sft"] + rows
    tie = evaluation.build_results(tie_rows, models=["base", "sft", "sft_dpo"], criteria=["overall"], n_bootstrap=50)
    assert "sft and sft_dpo tie for the highest rate at 100.0%" in tie["headline"]
    assert "sft differs by +100.0 points" in tie["headline"] and "sft_dpo differs by +100.0 points" in tie["headline"]

    nothing = [{**r, "overall": False} for r in rows]
    zero = evaluation.build_results(nothing, models=["base", "sft"], criteria=["overall"], n_bootstrap=50)
    assert "no model passes a single item" in zero["headline"] and "no winner" in zero["headline"]

    base_best = [{**r, "overall": r["model"] == "base"} for r in rows]
    flat = evaluation.build_results(base_best, models=["base", "sft"], criteria=["overall"], n_bootstrap=50)
    assert "base scores highest" in flat["headline"] and "No trained model beats" in flat["headline"]


def test_unpaired_scores_are_refused() -> None:
    rows = [r for r in _rows() if not (r["model"] == "sft" and r["item_id"] == "i3")]
    with pytest.raises(ValueError, match="model 'sft' lacks 1 item"):
        evaluation.build_results(rows, models=["base", "sft", "sft_dpo"], criteria=["overall"])
