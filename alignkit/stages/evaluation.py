"""Stage 06: evaluate base_fewshot, base, sft, sft_dpo and dpo_only one model at a time, score, and test.

    alignkit run --preset tiny --stages 06        (or notebooks/06_evaluation.ipynb)

The arms (``evaluation.models``):

- ``base_fewshot``: the base model in its own format, the few-shot ``Q:/A:`` prompt stage 01 uses (exemplars
  from the training split only, ``01_sft_data/fewshot_shots.jsonl``), stopped by its own stop strings: the honest
  baseline for what the base already does (``content``);
- ``base``: the base model in the study template: the format baseline;
- ``sft``, ``sft_dpo`` and ``dpo_only`` (DPO from the base, the control), once per training seed.

Generation (:func:`generate_responses`) loads exactly one model, generates for every item of the evaluated split
(``evaluation.split``: the test items, evaluated once per run; ``dev`` for choosing settings) with one greedy
config (stop at ``"\\nEND"`` or ``evaluation.max_new_tokens``), writes that model's responses to disk atomically,
and frees it (``modeling.loaded``: references dropped, ``gc.collect()``, CUDA cache emptied) before the next
model loads. The untrained arms are generated once: greedy decoding of the same weights gives the same responses
under every training seed. A model whose responses file is already complete for the same items, weights and
generation settings is not generated again, so a killed run resumes from the models already written. DPO
adapters are applied to exactly the weights they were trained on; the hash stage 05 recorded is checked first.

Scoring (no model needed) runs :func:`alignkit.eval.scoring.score_response` on every response; the statistics are
:func:`alignkit.eval.results.build_results`.

Outputs in ``06_evaluation/``: ``responses_<arm>[_seed<N>].jsonl`` (+ ``.json`` sidecar: resume key and memory),
``responses.jsonl``, ``scores.jsonl``, ``results.json`` (the numbers and what they were computed from, as content
hashes: the same bytes for the same study on one machine), ``run_info.json`` (paths, memory, timings, versions)
and ``manifest.json``. The report (``alignkit.report``)
is rendered from them afterwards and copies ``results.json`` next to ``report.html``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from alignkit import files, modeling, schemas, template, world
from alignkit.artifacts import Arm, ModelSpec, PromptStyle, arms, model_inputs
from alignkit.config import StudyConfig, config_hash
from alignkit.eval import memory, results, scoring
from alignkit.generation import GenerationSettings, generate
from alignkit.runs import (
    MANIFEST,
    Run,
    StageContext,
    execute_stage,
    fingerprint_path,
    git_commit,
    library_versions,
)
from alignkit.world import fewshot

log = logging.getLogger(__name__)

STAGE = "06_evaluation"
#: Stage-01 output holding each split's items.
SPLIT_OUTPUTS = {"test": "eval_items", "dev": "dev_items"}


def build_prompts(items: Sequence[world.Item], style: PromptStyle, shots: Sequence[world.Item], cfg) -> list[str]:
    """The exact strings sent for ``items``: the study template, or the base model's few-shot format with
    ``sft_data.few_shot`` exemplars per item from the training-split ``shots`` (seeded by the data seed).

    >>> item = world.get_family("capitals").make_item("capitals:france", __import__("random").Random(0), "x")
    >>> build_prompts([item], "template", [], None)[0].startswith("Instruction: ")
    True
    """
    if style == "template":
        return [template.prompt(item.instruction) for item in items]
    if style == "fewshot":
        return fewshot.prompts_for(items, shots, cfg.sft_data.few_shot, cfg.seed)
    raise ValueError(f"unknown prompt style {style!r}; expected 'template' or 'fewshot'")


def generation_config(cfg: StudyConfig, style: PromptStyle = "template") -> GenerationSettings:
    """The one greedy config every model is evaluated with; the few-shot arm stops where its next Q: would."""
    stops = (template.STOP_STRING,) if style == "template" else (*fewshot.STOP_STRINGS, template.STOP_STRING)
    return GenerationSettings(max_new_tokens=cfg.evaluation.max_new_tokens, do_sample=False,
                            batch_size=cfg.evaluation.batch_size, stop_strings=stops, seed=cfg.seed)


# --------------------------------------------------------------------------------------------------
# Generation, one model at a time
# --------------------------------------------------------------------------------------------------


def responses_path(out_dir: Path, key: str) -> Path:
    return Path(out_dir) / f"responses_{key}.jsonl"


def _sidecar_path(out_dir: Path, key: str) -> Path:
    return Path(out_dir) / f"responses_{key}.json"


def resume_key(arm: Arm, prompts: Sequence[str], gen: GenerationSettings, cfg: StudyConfig) -> str:
    """What decides a model's responses: the model, its weights, the prompts, the generation config, the device."""
    spec = arm.spec
    return config_hash({
        "model": arm.name, "seed": arm.seed, "path": str(spec.path),
        "adapter": str(spec.adapter) if spec.adapter else None, "prompt_style": spec.prompt_style,
        "quantize_4bit": spec.quantize_4bit, "sha256": spec.sha256, "generation": gen.to_dict(),
        "model_config": cfg.section("model"), "device": modeling.device_for(cfg.model),
        "prompts": files.sha256_text("\x00".join(prompts)),
    })


def response_record(arm: Arm, item_id: str, gen: Any) -> dict[str, Any]:
    """One ``responses`` record from a :class:`~alignkit.generation.Generation`.

    In the template, ``response``/``emitted_end`` come from :func:`alignkit.template.split_output` on the raw
    output (the split training and scoring use); in the few-shot format the response ends at the arm's own stop
    string (``gen.response``) and END is only emitted if the model wrote it.

    >>> from alignkit.generation import Generation
    >>> arm = Arm("sft", 0, ModelSpec(Path(".")))
    >>> response_record(arm, "a1", Generation("P", " 5\\nEND", "5", True, "\\nEND", 4, 3))["emitted_end"]
    True
    """
    response, emitted_end = template.split_output(gen.raw_output)
    if arm.spec.prompt_style == "fewshot":
        response = gen.response if not emitted_end else response
    return {"model": arm.name, "seed": arm.seed, "item_id": item_id, "prompt": gen.prompt,
            "raw_output": gen.raw_output, "response": response, "emitted_end": emitted_end,
            "prompt_tokens": int(gen.prompt_tokens), "output_tokens": int(gen.output_tokens)}


def completed_responses(out_dir: Path, arm: Arm, item_ids: Sequence[str], prompts: Sequence[str],
                        key: str) -> dict[str, Any] | None:
    """The sidecar of ``arm``'s responses file if that file is complete and current, else None.

    Complete: the sidecar's key equals ``key`` (same weights, prompts, generation config) and its sha256 equals
    the file's; every line is a valid ``responses`` record of the arm, one per item, in ``item_ids`` order, with
    the expected prompt. Anything else (a missing sidecar after a kill, a changed config) means regenerate.
    """
    path, sidecar_path = responses_path(out_dir, arm.key), _sidecar_path(out_dir, arm.key)
    if not path.is_file() or not sidecar_path.is_file():
        return None
    try:
        sidecar = files.read_json(sidecar_path)
    except ValueError:
        return None
    if sidecar.get("key") != key or sidecar.get("sha256") != files.sha256_file(path):
        return None
    rows, defects = schemas.validate_file(path, "responses")
    if defects or len(rows) != len(item_ids):
        return None
    for row, item_id, prompt in zip(rows, item_ids, prompts):
        if (row["model"], row.get("seed"), row["item_id"], row["prompt"]) != (arm.name, arm.seed, item_id, prompt):
            return None
    return sidecar


@contextlib.contextmanager
def generator(spec: ModelSpec, cfg: StudyConfig, label: str, progress: bool):
    """Load one model with the configured backend and yield ``generate_all(prompts, config)``; on exit the
    model is released (``evaluation.backend``: ``hf`` = alignkit's batched engine, ``vllm`` = vLLM on a GPU)."""
    if cfg.evaluation.backend == "vllm":
        from alignkit.vllm_backend import VLLMGenerator

        engine = VLLMGenerator.load(spec.path, cfg.model, adapter=spec.adapter)
        try:
            yield engine.generate
        finally:
            del engine
            modeling.release()
        return
    with modeling.loaded(spec.path, cfg.model, adapter=spec.adapter, quantize_4bit=spec.quantize_4bit) as handle:
        yield lambda prompts, gen_cfg: generate(handle.model, handle.tokenizer, prompts, gen_cfg,
                                                desc=f"evaluating {label}", progress=progress)


def generate_responses(arm_list: Sequence[Arm], items: Sequence[world.Item], shots: Sequence[world.Item],
                       cfg: StudyConfig, out_dir: Path, *, progress: bool = True) -> dict[str, Any]:
    """Generate every arm's responses to ``items``, one model resident at a time; returns the memory record.

    Each model is loaded inside ``modeling.loaded`` (freed on exit), and a sidecar ``responses_<key>.json``
    (resume key, sha256 of the responses file, memory numbers) then ``out_dir/responses_<key>.jsonl`` are
    written before the next model loads. Arms whose files are complete are skipped.

    Memory per model: absolute RSS before loading (``rss_baseline_mb``), the highest RSS sampled every 20 ms
    during load + generation (``rss_peak_mb``) and their difference, RSS after release, and on a GPU the CUDA
    max allocated (peak stats reset per model). ``max_models_resident`` is the loader's weak-reference count
    (``modeling.TRACKER``, reset here), combined with the values recorded by models generated in earlier runs.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    item_ids = [item.id for item in items]
    if len(set(item_ids)) != len(item_ids):
        duplicate = next(i for i, c in Counter(item_ids).items() if c > 1)
        raise ValueError(f"evaluation items: id {duplicate!r} appears more than once")
    device = modeling.device_for(cfg.model)
    cuda = memory.cuda() if device == "cuda" else None
    modeling.TRACKER.reset()
    per_model: dict[str, dict[str, Any]] = {}
    for arm in arm_list:
        gen_cfg = generation_config(cfg, arm.spec.prompt_style)
        prompts = build_prompts(items, arm.spec.prompt_style, shots, cfg)
        key = resume_key(arm, prompts, gen_cfg, cfg)
        done = completed_responses(out_dir, arm, item_ids, prompts, key)
        if done is not None:
            log.info("%s: responses already complete in %s; not generating again", arm.key,
                     responses_path(out_dir, arm.key))
            per_model[arm.key] = {**done.get("memory", {}), "resumed": True}
            continue
        spec = arm.spec
        log.info("%s: loading %s%s", arm.key, spec.path, f" + adapter {spec.adapter}" if spec.adapter else "")
        if cuda is not None:
            cuda.reset_peak_memory_stats()
        started = time.monotonic()
        with memory.RSSMonitor() as monitor:
            with generator(spec, cfg, arm.key, progress) as generate_all:
                loaded_at = time.monotonic()
                resident_while_loaded = modeling.TRACKER.resident()
                outputs = generate_all(prompts, gen_cfg)
            generated_at = time.monotonic()
        rows = [response_record(arm, item_id, out) for item_id, out in zip(item_ids, outputs)]
        del outputs
        record = {
            "load_seconds": round(loaded_at - started, 2), "generate_seconds": round(generated_at - loaded_at, 2),
            "rss_baseline_mb": memory.mb(monitor.baseline), "rss_peak_mb": memory.mb(monitor.peak),
            "rss_peak_over_baseline_mb": memory.mb(monitor.peak - monitor.baseline),
            "rss_after_release_mb": memory.mb(memory.current_rss()), "rss_samples": monitor.samples,
            "cuda_max_allocated_mb": memory.mb(cuda.max_memory_allocated()) if cuda is not None else None,
            "cuda_allocated_after_release_mb": memory.mb(cuda.memory_allocated()) if cuda is not None else None,
            "resident_while_loaded": resident_while_loaded, "resident_after_release": modeling.TRACKER.resident(),
            "max_models_resident": modeling.TRACKER.max_resident,
            "output_tokens": sum(r["output_tokens"] for r in rows),
            "end_rate": round(sum(r["emitted_end"] for r in rows) / len(rows), 4) if rows else None,
        }
        # The sidecar (with the hash of the exact bytes) goes first and the responses file second, both atomic:
        # once responses_<key>.jsonl exists the model is complete, and a kill between the two writes leaves
        # no responses file, so the model is simply generated again.
        text = "".join(files.to_json(row) + "\n" for row in rows)
        files.write_json(_sidecar_path(out_dir, arm.key), {"key": key, "sha256": files.sha256_text(text),
                                                           "model": arm.name, "seed": arm.seed, "rows": len(rows),
                                                           "memory": record})
        files.write_text(responses_path(out_dir, arm.key), text)
        per_model[arm.key] = {**record, "resumed": False}
        log.info("%s: %d responses, END emitted in %s, peak RSS %.0f MB", arm.key, len(rows), record["end_rate"],
                 record["rss_peak_mb"])
    return memory.memory_summary(per_model, device, modeling.TRACKER.max_resident, modeling.TRACKER.loads)


def combine_responses(out_dir: Path, keys: Sequence[str]) -> tuple[Path, list[dict[str, Any]]]:
    """Concatenate the per-arm files (in ``keys`` order) into ``out_dir/responses.jsonl``."""
    rows: list[dict[str, Any]] = []
    for key in keys:
        rows.extend(schemas.load_records(responses_path(out_dir, key), "responses"))
    path = Path(out_dir) / "responses.jsonl"
    files.write_jsonl(path, rows)
    return path, rows


def score_responses(items: Sequence[world.Item], responses: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One score row per response: ``model``, ``seed``, ``item_id``, ``family`` and every endpoint."""
    by_id = {item.id: item for item in items}
    rows = []
    for index, response in enumerate(responses):
        item = by_id.get(response["item_id"])
        if item is None:
            raise ValueError(f"responses[{index}] (model {response['model']!r}): item_id {response['item_id']!r} "
                             "is not among the evaluation items")
        scores = scoring.score_response(item, response["response"], response["emitted_end"])
        rows.append({"model": response["model"], "seed": response.get("seed"), "item_id": item.id,
                     "family": item.family, **{name: scores[name] for name in scoring.ENDPOINTS}})
    return rows


# --------------------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------------------


def _stage_manifests(run: Run):
    yield "01_sft_data", run.manifest("01_sft_data"), ("sft", "dev_sft", "eval_items", "dev_items")
    for view in run.seed_views():
        for stage, names in (("02_sft_training", ("model",)), ("03_negatives", ("negatives",)),
                             ("04_preference_pairs", ("pairs",)), ("05_dpo_training", ("sft_dpo", "dpo_only"))):
            yield f"{stage}/seed{view.training_seed}", view.manifest(stage), names


def provenance(run: Run, arm_list: Sequence[Arm], items_path: Path) -> dict[str, Any]:
    """What the results were computed from, as content hashes only (no path, time, machine or code detail, so two
    runs of the same study on one machine write the same bytes, and so does a refactoring that changes no result):
    items, models, each stage's output hashes, generation settings, prompts, seeds and security flags."""
    cfg = run.config
    # Data files by content; model folders are left to run_info.json (their config files name the absolute path
    # of the model they were trained from, so their hashes differ between two homes of the same study).
    stages = {label: None if manifest is None else {
        "outputs": {n: manifest["outputs"][n]["sha256"] for n in names
                    if n in manifest.get("outputs", {}) and manifest["outputs"][n]["path"].endswith(".jsonl")}}
        for label, manifest, names in _stage_manifests(run)}
    return {
        "split": cfg.evaluation.split, "items_sha256": files.sha256_file(items_path),
        "models": {arm.key: {"arm": arm.name, "seed": arm.seed, "prompt_style": arm.spec.prompt_style,
                             "quantize_4bit": arm.spec.quantize_4bit} for arm in arm_list},
        "stages": stages,
        "generation": {style: generation_config(cfg, style).to_dict() for style in ("template", "fewshot")},
        "prompt_styles": {"template": "template.prompt(instruction) = 'Instruction: {instruction}\\nResponse:'",
                          "fewshot": f"{cfg.sft_data.few_shot} training-split Q:/A: exemplars, then "
                                     "'Q: {instruction}\\nA:' (base_fewshot only)"},
        "seeds": {"data_seed": cfg.seed, "training_seeds": list(cfg.training_seeds),
                  "base_build_seed": cfg.base_build.seed, "statistics_seed": cfg.seed},
        "security": {"trust_remote_code": cfg.model.trust_remote_code,
                     "allow_pickle_weights": cfg.model.allow_pickle_weights},
    }


def run_info(run: Run, arm_list: Sequence[Arm], items_path: Path, memory_block: Mapping[str, Any]) -> dict[str, Any]:
    """Where and how this evaluation ran (``run_info.json``, beside results.json): paths, memory and timings,
    library versions, git commit and code hash, which stages were shared from another run."""
    from alignkit.runs import stage_code

    return {
        "run_id": run.run_id, "items_path": str(items_path),
        "models": {arm.key: {"path": str(arm.spec.path), "adapter": str(arm.spec.adapter) if arm.spec.adapter else None,
                             "sha256": arm.spec.sha256} for arm in arm_list},
        "shared_stages": {label: (manifest.get("adopted_from") or {}).get("run_id")
                          for label, manifest, _names in _stage_manifests(run)
                          if manifest is not None and manifest.get("adopted_from")},
        "stages": {label: {"fingerprint": manifest.get("fingerprint"), "code": manifest.get("code")}
                   for label, manifest, _names in _stage_manifests(run) if manifest is not None},
        "memory": dict(memory_block), "versions": library_versions(), "git_commit": git_commit(),
        "code": stage_code(STAGE),
    }


def _input_hashes(stage_dir: Path, inputs: Mapping[str, Path]) -> dict[str, str]:
    """The input hashes ``execute_stage`` just recorded in the running manifest (hashing big models once)."""
    recorded = files.read_json(stage_dir / MANIFEST).get("inputs", {})
    return {name: recorded[name]["sha256"] if name in recorded else fingerprint_path(Path(path))
            for name, path in inputs.items()}


def _with_hashes(arm_list: Sequence[Arm], inputs: Mapping[str, Path], hashes: Mapping[str, str]) -> list[Arm]:
    """Arms whose spec has ``sha256`` = hash of weights (+ adapter), looked up by resolved path."""
    by_path = {Path(path).resolve(): hashes[name] for name, path in inputs.items()}
    out = []
    for arm in arm_list:
        parts = [by_path.get(Path(p).resolve()) if Path(p).exists() else None
                 for p in (arm.spec.path, arm.spec.adapter) if p is not None]
        digest = files.sha256_text("+".join(parts)) if parts and all(parts) else None
        out.append(dataclasses.replace(arm, spec=dataclasses.replace(arm.spec, sha256=digest)))
    return out


def clear_responses(out_dir: Path) -> None:
    """Delete per-model responses files and sidecars (``--force`` regenerates every model)."""
    for path in list(Path(out_dir).glob("responses_*.jsonl")) + list(Path(out_dir).glob("responses_*.json")):
        path.unlink()


def run(run: Run, force: bool = False) -> dict[str, Any]:
    """Execute stage 06 (cached); returns its manifest. The report is rendered from its results afterwards
    (:func:`alignkit.report.build`; ``alignkit.stages.registry.run_stage`` does both)."""
    arm_list = arms(run)
    inputs = {"items": run.output("01_sft_data", SPLIT_OUTPUTS[run.config.evaluation.split]),
              "fewshot_shots": run.output("01_sft_data", "fewshot_shots"), **model_inputs(arm_list)}
    return execute_stage(run, STAGE, inputs=inputs, body=functools.partial(produce, run, arm_list, inputs),
                         force=force)


def produce(run: Run, arm_list: list[Arm], inputs: dict[str, Path], ctx: StageContext) -> None:
    """Stage 06's work in its stage folder ``ctx``: every arm answers the split one model at a time, the
    answers are scored, and the statistics go to ``results.json`` (where it ran to ``run_info.json``)."""
    cfg, ev = run.config, run.config.evaluation
    items = [world.Item.from_record(r) for r in schemas.load_records(inputs["items"], "eval-items")]
    shots = [world.Item.from_record(r) for r in schemas.load_records(inputs["fewshot_shots"], "eval-items")]
    if ctx.force:
        clear_responses(ctx.dir)
    hashes = _input_hashes(ctx.dir, inputs)
    hashed = _with_hashes(arm_list, {k: v for k, v in inputs.items() if k not in ("items", "fewshot_shots")}, hashes)
    memory_block = generate_responses(hashed, items, shots, cfg, ctx.dir)
    responses_file, responses = combine_responses(ctx.dir, [arm.key for arm in hashed])
    scores = score_responses(items, responses)
    n_scores = files.write_jsonl(ctx.path("scores.jsonl"), scores)
    stats_block = results.build_results(
        scores, models=list(ev.models), seeds=list(cfg.training_seeds), contrasts=ev.contrasts,
        correction=ev.correction, alpha=ev.alpha, power=ev.power, n_bootstrap=ev.n_bootstrap,
        n_permutations=ev.n_permutations, seed=cfg.seed, split=ev.split)
    stats_block.update({"stage": STAGE, "run_id": run.run_id, "preset": cfg.preset, "config": cfg.to_dict(),
                        "provenance": provenance(run, hashed, inputs["items"])})
    files.write_json(ctx.path("results.json"), stats_block)
    files.write_json(ctx.path("run_info.json"), run_info(run, hashed, inputs["items"], memory_block))
    ctx.add_output("responses", responses_file, rows=len(responses))
    ctx.add_output("scores", ctx.path("scores.jsonl"), rows=n_scores)
    ctx.add_output("results", ctx.path("results.json"))
    ctx.add_output("run_info", ctx.path("run_info.json"))
    ctx.summary.update(stage_summary(stats_block, memory_block, len(items), cfg))
    log.info("headline: %s", stats_block["headline"])


def stage_summary(stats_block: dict[str, Any], memory_block: dict[str, Any], n_items: int, cfg) -> dict[str, Any]:
    """The manifest summary of stage 06: split, arms, headline, primary contrasts, overall rates, memory."""
    ev = cfg.evaluation
    primaries = [row for row in stats_block["contrasts"] if row["role"] == "primary"]
    return {
        "split": ev.split, "n_items": n_items, "models": list(ev.models), "seeds": list(cfg.training_seeds),
        "headline": stats_block["headline"],
        "primary": {f"{r['a']}->{r['b']}:{r['endpoint']}": {"diff": r["diff"], "p_adjusted": r["p_adjusted"],
                                                            "mde": r["mde"]} for r in primaries},
        "overall": {m: block["endpoints"]["overall"]["rate"] for m, block in stats_block["models"].items()},
        "max_models_resident": memory_block["max_models_resident"], "peak_rss_mb": memory_block["peak_rss_mb"],
        "peak_cuda_allocated_mb": memory_block["peak_cuda_allocated_mb"],
        "resumed_models": memory_block["resumed_models"],
    }
