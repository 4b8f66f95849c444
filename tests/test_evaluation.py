"""Tests for alignkit.stages.evaluation: prompts per arm (the study template, and the base model's few-shot format with
training-split exemplars only), the generation configs, one-model-at-a-time generation with resume keyed by arm
and training seed, the arms of a fake run (untrained arms once, trained arms per seed, DPO adapters checked
against the weights stage 05 trained on), the stage itself, and scoring.

The statistics built from the score rows are tested in test_results.py and test_contrast_stats.py.
Models are a tiny random Llama (and a random LoRA adapter on it) saved to a temporary folder; no network.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from alignkit import (
    artifacts,
    files,
    modeling,
    report,
    schemas,
    template,
    world,
)
from alignkit.config import CONTRASTS, EVAL_MODELS, resolve
from alignkit.eval import memory, scoring
from alignkit.generation import Generation, cut_at_stop
from alignkit.runs import Run, StageInputError, fingerprint_path
from alignkit.stages import evaluation, sft_data
from alignkit.stages.evaluation import Arm, ModelSpec
from alignkit.world import fewshot

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


@pytest.fixture(scope="module")
def shots(items) -> list[world.Item]:
    """Few-shot exemplars from the training split (disjoint from ``items``), two per family."""
    return world.training_items(7919, 14, exclude=items)


def _fewshot_parts(prompt: str) -> tuple[list[tuple[str, str]], str]:
    """``([(exemplar question, answer)], asked question)`` of a few-shot Q:/A: prompt."""
    blocks = prompt.split("\n\n")
    exemplars = []
    for block in blocks[:-1]:
        question, answer = block.split("\n")
        assert question.startswith("Q: ") and answer.startswith("A: "), block
        exemplars.append((question[3:], answer[3:]))
    question, answer = blocks[-1].split("\n")
    assert question.startswith("Q: ") and answer == "A:", blocks[-1]
    return exemplars, question[3:]


# --------------------------------------------------------------------------------------------------
# Prompts and generation settings per arm
# --------------------------------------------------------------------------------------------------


def test_arm_keys_name_the_seed_of_trained_arms() -> None:
    spec = ModelSpec(Path("."))
    assert [Arm("sft", 1, spec).key, Arm("sft_dpo", 0, spec).key, Arm("base", None, spec).key] == [
        "sft_seed1", "sft_dpo_seed0", "base"]
    with pytest.raises(ValueError, match="prompt_style must be 'template' or 'fewshot'"):
        ModelSpec(Path("."), None, "raw")


def test_template_prompts_are_the_study_template(items) -> None:
    assert evaluation.build_prompts(items, "template", [], None) == [template.prompt(i.instruction) for i in items]


def test_fewshot_prompts_use_only_training_split_shots() -> None:
    """base_fewshot's exemplars come from stage 01's training-split shots, never from the evaluated items."""
    cfg = resolve("smoke")
    test, dev, shots = sft_data.splits(cfg)
    shot_pairs = {(s.instruction, s.reference) for s in shots}
    answered_families = {s.family for s in shots if s.reference is not None}
    assert "open_ended" not in answered_families and len(answered_families) == 6
    for evaluated in (test, dev):
        held_out = {i.instruction for i in evaluated}
        prompts = evaluation.build_prompts(evaluated, "fewshot", shots, cfg)
        assert len(prompts) == len(evaluated)
        for item, prompt in zip(evaluated, prompts):
            exemplars, asked = _fewshot_parts(prompt)
            assert asked == item.instruction
            assert len(exemplars) == cfg.sft_data.few_shot  # 4 shots per family in the pool, 4 asked for
            for question, answer in exemplars:
                assert (question, answer) in shot_pairs  # a training-split shot with its reference answer
                assert question not in held_out  # no evaluation item is ever an exemplar
            # Exemplars of the item's own family where the pool has answered ones (open-ended has no reference
            # answers, so its items get exemplars of other families).
            families = {s.instruction: s.family for s in shots}
            if item.family in answered_families:
                assert {families[q] for q, _ in exemplars} == {item.family}
            else:
                assert item.family not in {families[q] for q, _ in exemplars}
    # Deterministic for the data seed.
    assert evaluation.build_prompts(test, "fewshot", shots, cfg) == evaluation.build_prompts(test, "fewshot",
                                                                                           shots, cfg)
    with pytest.raises(ValueError, match="unknown prompt style 'raw'"):
        evaluation.build_prompts(test, "raw", shots, cfg)


def test_fewshot_exemplars_come_only_from_the_shots_given(items, shots) -> None:
    # The exemplars are drawn from ``shots`` only, never from the items being prompted: with a pool holding one
    # family's shots, every item (whatever its family) gets exactly those exemplars.
    cfg = _cfg(Path("."))
    capitals = [s for s in shots if s.family == "capitals"]
    for prompt in evaluation.build_prompts(items, "fewshot", capitals, cfg):
        exemplars, _asked = _fewshot_parts(prompt)
        assert {q for q, _ in exemplars} <= {s.instruction for s in capitals}
        assert len(exemplars) == len(capitals) == 2


def test_generation_config_per_prompt_style() -> None:
    cfg = _cfg(Path("."))
    plain = evaluation.generation_config(cfg, "template")
    assert plain.stop_strings == (template.STOP_STRING,)
    few = evaluation.generation_config(cfg, "fewshot")
    # The few-shot arm stops where its next Q:/A: pair would start (and on END, should it write one).
    assert set(fewshot.STOP_STRINGS) <= set(few.stop_strings)
    assert few.stop_strings == (*fewshot.STOP_STRINGS, template.STOP_STRING)
    for gen in (plain, few):  # one greedy config otherwise
        assert (gen.do_sample, gen.max_new_tokens, gen.batch_size, gen.seed) == (False, 6, 4, cfg.seed)


def test_response_record_per_prompt_style() -> None:
    template_arm = Arm("sft", 1, ModelSpec(Path(".")))
    fewshot_arm = Arm("base_fewshot", None, ModelSpec(Path("."), None, "fewshot"))
    gen = Generation("P", " Paris\nEND", "Paris", True, "\nEND", 4, 3)
    record = evaluation.response_record(template_arm, "it-1", gen)
    assert (record["model"], record["seed"], record["item_id"], record["response"], record["emitted_end"]) == (
        "sft", 1, "it-1", "Paris", True)
    # Few-shot: the response ends at the arm's own stop string, and END was not written.
    run_on = Generation("Q: x\nA:", " Paris\n\nQ: next", "Paris", True, "\n\n", 4, 5)
    record = evaluation.response_record(fewshot_arm, "it-2", run_on)
    assert (record["seed"], record["response"], record["emitted_end"]) == (None, "Paris", False)
    assert schemas.check_record("responses", record) == []


# --------------------------------------------------------------------------------------------------
# Generation, one model at a time, and resume
# --------------------------------------------------------------------------------------------------


def test_generate_one_model_at_a_time_writes_valid_files(tiny_dirs, items, shots, tmp_path) -> None:
    cfg = _cfg(tiny_dirs["base"])
    arm_list = [Arm("base", None, ModelSpec(tiny_dirs["base"])),
                Arm("base_fewshot", None, ModelSpec(tiny_dirs["base"], None, "fewshot")),
                Arm("sft_dpo", 0, ModelSpec(tiny_dirs["base"], tiny_dirs["adapter"]))]
    mem = evaluation.generate_responses(arm_list, items, shots, cfg, tmp_path, progress=False)

    assert mem["max_models_resident"] == 1
    assert mem["models_loaded_this_process"] == 3
    assert mem["resumed_models"] == []
    assert list(mem["per_model"]) == ["base", "base_fewshot", "sft_dpo_seed0"]
    for arm in arm_list:
        sidecar = files.read_json(tmp_path / f"responses_{arm.key}.json")
        assert sidecar["sha256"] == files.sha256_file(tmp_path / f"responses_{arm.key}.jsonl")
        assert (sidecar["model"], sidecar["seed"], sidecar["rows"]) == (arm.name, arm.seed, len(items))
        rows, defects = schemas.validate_file(tmp_path / f"responses_{arm.key}.jsonl", "responses")
        assert defects == []
        assert [r["item_id"] for r in rows] == [item.id for item in items]
        assert {(r["model"], r["seed"]) for r in rows} == {(arm.name, arm.seed)}
        assert [r["prompt"] for r in rows] == evaluation.build_prompts(items, arm.spec.prompt_style, shots, cfg)
        stops = evaluation.generation_config(cfg, arm.spec.prompt_style).stop_strings
        for r in rows:
            if arm.spec.prompt_style == "template" or r["emitted_end"]:
                assert (r["response"], r["emitted_end"]) == template.split_output(r["raw_output"])
            else:  # few-shot without END: cut at its own stop strings
                assert r["response"] == cut_at_stop(r["raw_output"], stops)[0]
                assert not any(stop in r["response"] for stop in fewshot.STOP_STRINGS)
            assert 1 <= r["output_tokens"] <= 6
        m = mem["per_model"][arm.key]
        assert m["resident_while_loaded"] == 1 and m["resident_after_release"] == 0
        assert m["rss_peak_mb"] >= m["rss_baseline_mb"] > 0
        assert m["cuda_max_allocated_mb"] is None  # CPU run
    assert modeling.TRACKER.resident() == 0
    # The adapter is applied (random LoRA weights change the outputs of at least one prompt).
    base_rows = files.read_jsonl(tmp_path / "responses_base.jsonl")
    dpo_rows = files.read_jsonl(tmp_path / "responses_sft_dpo_seed0.jsonl")
    assert [r["raw_output"] for r in base_rows] != [r["raw_output"] for r in dpo_rows]

    path, combined = evaluation.combine_responses(tmp_path, [arm.key for arm in arm_list])
    assert len(combined) == 3 * len(items)
    assert schemas.validate_file(path, "responses")[1] == []
    assert [(r["model"], r["seed"]) for r in combined[:: len(items)]] == [("base", None), ("base_fewshot", None),
                                                                         ("sft_dpo", 0)]


def test_resume_skips_only_complete_current_models(tiny_dirs, items, shots, tmp_path) -> None:
    cfg = _cfg(tiny_dirs["base"])
    spec = ModelSpec(tiny_dirs["base"])
    arm_list = [Arm("base", None, spec), Arm("sft", 0, spec), Arm("sft", 1, spec)]
    first = evaluation.generate_responses(arm_list, items, shots, cfg, tmp_path, progress=False)
    assert first["models_loaded_this_process"] == 3
    before = (tmp_path / "responses_sft_seed0.jsonl").read_bytes()

    again = evaluation.generate_responses(arm_list, items, shots, cfg, tmp_path, progress=False)
    assert again["models_loaded_this_process"] == 0
    assert again["resumed_models"] == ["base", "sft_seed0", "sft_seed1"]
    assert again["max_models_resident"] == 1  # carried over from the run that generated them
    assert again["per_model"]["sft_seed0"]["rss_peak_mb"] == first["per_model"]["sft_seed0"]["rss_peak_mb"]
    assert (tmp_path / "responses_sft_seed0.jsonl").read_bytes() == before

    # A truncated file (a kill mid-write cannot produce one, but a hand edit can) is regenerated.
    lines = (tmp_path / "responses_sft_seed1.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "responses_sft_seed1.jsonl").write_text("".join(lines[:-1]))
    third = evaluation.generate_responses(arm_list, items, shots, cfg, tmp_path, progress=False)
    assert third["models_loaded_this_process"] == 1
    assert third["resumed_models"] == ["base", "sft_seed0"]
    assert len(files.read_jsonl(tmp_path / "responses_sft_seed1.jsonl")) == len(items)

    # One seed's complete files do not count for another seed of the same weights (the seed is in the key).
    for suffix in ("jsonl", "json"):
        shutil.copyfile(tmp_path / f"responses_sft_seed0.{suffix}", tmp_path / f"responses_sft_seed1.{suffix}")
    swapped = evaluation.generate_responses(arm_list, items, shots, cfg, tmp_path, progress=False)
    assert swapped["resumed_models"] == ["base", "sft_seed0"]
    assert {r["seed"] for r in files.read_jsonl(tmp_path / "responses_sft_seed1.jsonl")} == {1}

    # A missing sidecar (deleted by hand; a kill cannot leave a responses file without one) means regenerate.
    (tmp_path / "responses_base.json").unlink()
    assert evaluation.generate_responses(arm_list, items, shots, cfg, tmp_path,
                                         progress=False)["resumed_models"] == ["sft_seed0", "sft_seed1"]

    # Other generation settings: nothing is reused.
    changed = evaluation.generate_responses(arm_list, items, shots, _cfg(tiny_dirs["base"],
                                                                         "evaluation.max_new_tokens=5"),
                                            tmp_path, progress=False)
    assert changed["resumed_models"] == [] and changed["models_loaded_this_process"] == 3


def test_resume_of_the_fewshot_arm_depends_on_its_shots(tiny_dirs, items, shots, tmp_path) -> None:
    cfg = _cfg(tiny_dirs["base"])
    arm_list = [Arm("base_fewshot", None, ModelSpec(tiny_dirs["base"], None, "fewshot"))]
    evaluation.generate_responses(arm_list, items, shots, cfg, tmp_path, progress=False)
    assert evaluation.generate_responses(arm_list, items, shots, cfg, tmp_path,
                                         progress=False)["resumed_models"] == ["base_fewshot"]
    # Other exemplars make other prompts: generated again.
    other = world.training_items(1, 14, exclude=items)
    assert evaluation.generate_responses(arm_list, items, other, cfg, tmp_path,
                                         progress=False)["resumed_models"] == []


def test_duplicate_item_ids_are_refused(tiny_dirs, items, tmp_path) -> None:
    with pytest.raises(ValueError, match="appears more than once"):
        evaluation.generate_responses([Arm("base", None, ModelSpec(tiny_dirs["base"]))], [items[0], items[0]], [],
                                      _cfg(tiny_dirs["base"]), tmp_path, progress=False)


def test_rss_monitor_sees_an_allocation() -> None:
    with memory.RSSMonitor(interval_s=0.005) as monitor:
        block = torch.ones(64 * 1024 * 1024 // 4)  # 64 MiB, touched
        block += 1
        del block
    assert monitor.peak - monitor.baseline > 32 * 1024 * 1024
    assert monitor.samples >= 1


# --------------------------------------------------------------------------------------------------
# Arms and the stage on a fake run (manifests written here, models from the tiny folders)
# --------------------------------------------------------------------------------------------------


def _fake_manifest(run: Run, stage: str, outputs: dict[str, Path], summary: dict) -> None:
    folder = run.stage_dir(stage)
    folder.mkdir(parents=True, exist_ok=True)
    entries = {name: {"path": str(path.relative_to(run.dir)), "sha256": fingerprint_path(path), "rows": None}
               for name, path in outputs.items()}
    files.write_json(folder / "manifest.json", {"stage": stage, "run_id": run.run_id, "status": "complete",
                                                "outputs": entries, "summary": summary})


@pytest.fixture()
def fake_run(tiny_dirs, items, shots, tmp_path, monkeypatch) -> Run:
    """Stage 01 'done' (test items, dev items, few-shot shots) and, per training seed (smoke: 0 and 1), stage 02
    (a full SFT model folder) and stage 05 (two LoRA adapters, with the hash of the weights each started from)."""
    monkeypatch.setenv("ALIGNKIT_REPORTS", str(tmp_path / "reports"))
    base = tmp_path / "base"
    shutil.copytree(tiny_dirs["base"], base)
    run = Run(run_id="fake", config=_cfg(base), root=tmp_path / "home")
    stage_01 = run.stage_dir("01_sft_data")
    stage_01.mkdir(parents=True)
    dev = world.dev_items(0, 7, exclude=items)
    outputs_01 = {}
    for name, rows in (("eval_items", items), ("dev_items", dev), ("fewshot_shots", shots)):
        outputs_01[name] = stage_01 / f"{name}.jsonl"
        files.write_jsonl(outputs_01[name], [item.to_record() for item in rows])
    _fake_manifest(run, "01_sft_data", outputs_01, {})
    for view in run.seed_views():
        sft_dir = view.stage_dir("02_sft_training") / "model"
        shutil.copytree(tiny_dirs["base"], sft_dir)
        _fake_manifest(view, "02_sft_training", {"model": sft_dir}, {"saved": "full"})
        outputs, summary = {}, {}
        for name, initial in (("sft_dpo", sft_dir), ("dpo_only", base)):
            outputs[name] = view.stage_dir("05_dpo_training") / name
            shutil.copytree(tiny_dirs["adapter"], outputs[name])
            summary[name] = {"saved": "adapter", "initial_model": str(initial), "initial_adapter": None,
                             "initial_model_sha256": fingerprint_path(initial)}
        _fake_manifest(view, "05_dpo_training", outputs, {"runs": summary})
    return run


def test_arms_untrained_once_trained_per_seed(fake_run) -> None:
    arm_list = artifacts.arms(fake_run)
    base = Path(fake_run.config.model.base).resolve()
    seed_dir = {s: fake_run.for_seed(s) for s in (0, 1)}
    sft = {s: v.stage_dir("02_sft_training") / "model" for s, v in seed_dir.items()}
    adapter = {(name, s): v.stage_dir("05_dpo_training") / name for s, v in seed_dir.items()
               for name in ("sft_dpo", "dpo_only")}
    assert [(a.name, a.seed) for a in arm_list] == [
        ("base_fewshot", None), ("base", None), ("sft", 0), ("sft", 1), ("sft_dpo", 0), ("sft_dpo", 1),
        ("dpo_only", 0), ("dpo_only", 1)]
    specs = {a.key: a.spec for a in arm_list}
    assert specs["base_fewshot"] == ModelSpec(base, None, "fewshot")
    assert specs["base"] == ModelSpec(base, None, "template")
    for s in (0, 1):
        assert specs[f"sft_seed{s}"] == ModelSpec(sft[s], None, "template")
        # Each seed's DPO adapter goes on that seed's SFT model (sft_dpo) or on the base (dpo_only).
        assert specs[f"sft_dpo_seed{s}"] == ModelSpec(sft[s], adapter[("sft_dpo", s)], "template")
        assert specs[f"dpo_only_seed{s}"] == ModelSpec(base, adapter[("dpo_only", s)], "template")
    # Each local weights folder and adapter once (the base serves base_fewshot, base and dpo_only).
    assert sorted(artifacts.model_inputs(arm_list)) == [
        "base_fewshot_weights", "dpo_only_seed0_adapter", "dpo_only_seed1_adapter", "sft_dpo_seed0_adapter",
        "sft_dpo_seed1_adapter", "sft_seed0_weights", "sft_seed1_weights"]


def test_arms_refuse_adapter_on_changed_weights(fake_run) -> None:
    config = fake_run.for_seed(1).stage_dir("02_sft_training") / "model" / "config.json"
    config.write_text(config.read_text() + "\n")
    with pytest.raises(artifacts.ModelMismatchError, match=r"sft_dpo: .*initial_model_sha256"):
        artifacts.arms(fake_run)


def test_arms_need_every_seed_trained(fake_run) -> None:
    (fake_run.for_seed(1).stage_dir("05_dpo_training") / "manifest.json").unlink()
    with pytest.raises(StageInputError, match=r"05_dpo_training/seed1/manifest.json: missing or incomplete"):
        artifacts.arms(fake_run)


@pytest.mark.slow  # eight model loads, scoring, statistics and the report: a few seconds on an idle CPU
def test_stage_runs_caches_and_reports(fake_run) -> None:
    manifest = evaluation.run(fake_run)
    assert manifest["status"] == "complete"
    stage_dir = fake_run.stage_dir("06_evaluation")
    results = files.read_json(stage_dir / "results.json")
    keys = ["base_fewshot", "base", "sft_seed0", "sft_seed1", "sft_dpo_seed0", "sft_dpo_seed1", "dpo_only_seed0",
            "dpo_only_seed1"]
    assert sorted(p.name for p in stage_dir.glob("responses_*.jsonl")) == sorted(f"responses_{k}.jsonl"
                                                                                 for k in keys)
    info = files.read_json(stage_dir / "run_info.json")  # paths, memory, versions: kept out of results.json
    assert info["memory"]["max_models_resident"] == 1
    assert sorted(info["memory"]["per_model"]) == sorted(keys)
    assert "memory" not in results and "path" not in files.to_json(results["provenance"])
    assert results["model_order"] == list(EVAL_MODELS)
    assert results["seeds"] == [0, 1] and results["split"] == "test" and results["n_items"] == 7
    assert set(results["models"]["sft"]["endpoints"]) == set(scoring.ENDPOINTS)
    assert set(results["models"]["sft"]["endpoints"]["overall"]["per_seed"]) == {"0", "1"}  # JSON keys
    assert len(results["contrasts"]) == len(CONTRASTS) * len(scoring.ENDPOINTS)
    assert results["correction"]["primary"] == "holm"
    # Model folders are hashed in run_info.json: their config files name absolute paths, so results.json keeps
    # only the arm, seed and prompt style of each model and stays the same bytes in another home.
    assert "sha256" not in results["provenance"]["models"]["sft_dpo_seed1"]
    assert info["models"]["sft_dpo_seed1"]["sha256"] is not None
    assert results["provenance"]["stages"]["03_negatives/seed0"] is None
    assert manifest["summary"]["max_models_resident"] == 1
    # Untrained arms once, trained arms once per seed: (2 + 3 * 2) models x 7 items.
    scores = files.read_jsonl(stage_dir / "scores.jsonl")
    assert len(scores) == 8 * 7
    assert {(r["model"], r["seed"]) for r in scores} == {("base_fewshot", None), ("base", None)} | {
        (m, s) for m in ("sft", "sft_dpo", "dpo_only") for s in (0, 1)}
    # base_fewshot was prompted with stage 01's training-split shots, never with a test item.
    shot_questions = {r["instruction"] for r in files.read_jsonl(fake_run.stage_dir("01_sft_data")
                                                                 / "fewshot_shots.jsonl")}
    test_questions = {r["instruction"] for r in files.read_jsonl(fake_run.stage_dir("01_sft_data")
                                                                 / "eval_items.jsonl")}
    for row in files.read_jsonl(stage_dir / "responses_base_fewshot.jsonl"):
        exemplars, asked = _fewshot_parts(row["prompt"])
        assert asked in test_questions and exemplars
        assert {q for q, _ in exemplars} <= shot_questions and not {q for q, _ in exemplars} & test_questions

    again = evaluation.run(fake_run)  # cached: same fingerprint, nothing regenerated
    assert again["finished"] == manifest["finished"]

    # The report is rendered from the stage's results afterwards.
    html = report.build(fake_run).read_text()
    assert (fake_run.report_dir / "results.json").read_bytes() == (stage_dir / "results.json").read_bytes()
    assert results["headline"] in html.replace("&#39;", "'")


# --------------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------------


def test_score_responses_uses_the_item_the_end_flag_and_keeps_the_seed() -> None:
    item = world.get_family("capitals").make_item("capitals:france", random.Random(0), "it-1")
    rows = evaluation.score_responses([item], [
        {"model": "sft", "seed": 1, "item_id": "it-1", "response": "Paris", "emitted_end": True},
        {"model": "base", "seed": None, "item_id": "it-1", "response": "Paris", "emitted_end": False},
    ])
    assert [(r["model"], r["seed"], r["family"], r["overall"], r["ends_with_end"], r["content"]) for r in rows] == [
        ("sft", 1, "capitals", True, True, True), ("base", None, "capitals", False, False, True)]
    assert set(rows[0]) == {"model", "seed", "item_id", "family", *scoring.ENDPOINTS}
    with pytest.raises(ValueError, match="item_id 'nope' is not among the evaluation items"):
        evaluation.score_responses([item], [{"model": "sft", "item_id": "nope", "response": "x", "emitted_end": True}])
