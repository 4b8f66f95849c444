"""Stage 06: evaluate base, base_raw, sft, sft_dpo and dpo_only one model at a time, score, and test.

    alignkit run --preset tiny --stages 06        (or notebooks/06_evaluation.ipynb)

Generation (:func:`generate_responses`) loads exactly one model, generates for every held-out item with one
shared greedy config (stop at ``"\\nEND"`` or ``evaluation.max_new_tokens``), writes that model's responses to
disk atomically, and frees it (``modeling.loaded``: references dropped, ``gc.collect()``, CUDA cache emptied)
before the next model loads. A model whose responses file is already complete for the same items, weights and
generation settings is not generated again, so a run killed mid-evaluation resumes from the models already
written. Prompts: ``template.prompt(instruction)`` for every model except ``base_raw``, which gets the bare
instruction followed by one newline (``instruction + "\\n"``) — the base model without the study's format, so the
report can separate "learned the format" from "learned the task". DPO adapters are applied to exactly the
weights they were trained on; the hash recorded by stage 05 is checked before anything loads.

Scoring (no model needed) runs :func:`alignkit.scoring.score_response` on every response; statistics are the
paired tests of DESIGN.md §7, built by the pure function :func:`build_results` from score rows.

Outputs in ``06_evaluation/``: ``responses_<model>.jsonl`` (+ ``.json`` sidecar: resume key and memory),
``responses.jsonl``, ``scores.jsonl``, ``results.json`` and ``manifest.json``; ``results.json`` is copied to
``reports/<run_id>/`` next to ``report.html``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import resource
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from alignkit import files, modeling, records, scoring, stats, template, world
from alignkit.config import EVAL_MODELS, FAMILIES, StudyConfig, config_hash
from alignkit.generation import GenerationConfig, generate
from alignkit.runs import MANIFEST, Run, execute_stage, fingerprint_path, git_commit, library_versions

log = logging.getLogger(__name__)

STAGE = "06_evaluation"
#: The pre-registered primary endpoint: every applicable criterion passes.
OVERALL = "overall"
#: The five paired contrasts of DESIGN.md §1, as (a, b): differences are b minus a.
CONTRASTS: tuple[tuple[str, str], ...] = (
    ("base", "sft"), ("sft", "sft_dpo"), ("base", "dpo_only"), ("dpo_only", "sft_dpo"), ("base", "sft_dpo"),
)
#: Models compared jointly by Cochran's Q on ``overall`` (the four trained/untrained models).
COCHRAN_MODELS: tuple[str, ...] = ("base", "sft", "sft_dpo", "dpo_only")
#: Significance level the headline and the report's marks use (on adjusted p-values).
ALPHA = 0.05
#: RSS sampling period of the memory monitor, in seconds.
RSS_INTERVAL_S = 0.02
_MB = 1024 * 1024

PromptStyle = Literal["template", "raw"]


class ModelMismatchError(RuntimeError):
    """A DPO adapter would be applied to weights other than those it was trained on."""


@dataclass(frozen=True)
class ModelSpec:
    """How to load and prompt one evaluated model.

    ``path`` holds the weights (and tokenizer); ``adapter`` is a PEFT adapter applied on top (merged for
    inference); ``prompt_style`` is ``"template"`` (``template.prompt``) or ``"raw"`` (instruction + newline);
    ``quantize_4bit`` loads the weights in 4-bit NF4, as QLoRA trained the adapter on them; ``sha256`` is the
    fingerprint of the weights and adapter when known (it goes into the resume key).
    """

    path: Path
    adapter: Path | None = None
    prompt_style: PromptStyle = "template"
    quantize_4bit: bool = False
    sha256: str | None = None

    def __post_init__(self) -> None:
        if self.prompt_style not in ("template", "raw"):
            raise ValueError(f"ModelSpec.prompt_style must be 'template' or 'raw', got {self.prompt_style!r}")


def all_criteria() -> tuple[str, ...]:
    """The nine criteria of DESIGN.md §6 followed by ``overall``, in report order."""
    return (*scoring.CRITERIA, OVERALL)


def build_prompt(instruction: str, style: PromptStyle) -> str:
    """The exact string sent to a model for ``instruction``.

    >>> build_prompt("Add 2 and 3.", "template")
    'Instruction: Add 2 and 3.\\nResponse:'
    >>> build_prompt("Add 2 and 3.", "raw")
    'Add 2 and 3.\\n'
    """
    if style == "template":
        return template.prompt(instruction)
    if style == "raw":
        return instruction + "\n"
    raise ValueError(f"unknown prompt style {style!r}; expected 'template' or 'raw'")


def generation_config(cfg: StudyConfig) -> GenerationConfig:
    """The one greedy config every model is evaluated with."""
    return GenerationConfig(max_new_tokens=cfg.evaluation.max_new_tokens, do_sample=False,
                            batch_size=cfg.evaluation.batch_size, stop_strings=(template.STOP_STRING,),
                            seed=cfg.seed)


# --------------------------------------------------------------------------------------------------
# Which models, from which folders
# --------------------------------------------------------------------------------------------------


def check_dpo_initial_weights(name: str, weights: Path, recorded: str | None) -> None:
    """Refuse to apply ``name``'s adapter unless ``weights`` still hash to what stage 05 trained on."""
    if recorded is None:
        log.warning("%s: stage 05 recorded no hash for its initial model %s (not a local folder); "
                    "cannot check the adapter is applied to the weights it was trained on", name, weights)
        return
    if not Path(weights).exists():
        raise ModelMismatchError(f"{name}: the adapter was trained on {weights}, which no longer exists; "
                                 "restore it or re-run stage 05 with --force")
    actual = fingerprint_path(Path(weights))
    if actual != recorded:
        raise ModelMismatchError(
            f"{name}: the adapter was trained on {weights} with sha256 {recorded[:16]}…, but those weights now hash "
            f"to {actual[:16]}… (05_dpo_training/manifest.json summary.runs.{name}.initial_model_sha256); the "
            "adapter would be evaluated on different weights. Re-run stage 05 with --force, or restore the weights.")


def model_specs(run: Run) -> dict[str, ModelSpec]:
    """``{name: ModelSpec}`` for ``evaluation.models``, in the config's order, with DPO weights verified."""
    from alignkit import dpo, sft
    from alignkit.tinybase import ensure_base

    cfg = run.config
    specs: dict[str, ModelSpec] = {}
    for name in cfg.evaluation.models:
        if name in ("base", "base_raw"):
            specs[name] = ModelSpec(ensure_base(cfg), None, "raw" if name == "base_raw" else "template")
        elif name == "sft":
            path, adapter = sft.sft_model(run)
            specs[name] = ModelSpec(Path(path), Path(adapter) if adapter else None, "template",
                                    quantize_4bit=adapter is not None and cfg.sft.method == "qlora")
        elif name in ("sft_dpo", "dpo_only"):
            path, adapter = dpo.dpo_model(run, name)
            if adapter is not None:
                summary = run.require(dpo.STAGE)["summary"]["runs"][name]
                check_dpo_initial_weights(name, Path(path), summary.get("initial_model_sha256"))
            specs[name] = ModelSpec(Path(path), Path(adapter) if adapter else None, "template",
                                    quantize_4bit=adapter is not None and cfg.dpo.method == "qlora")
        else:  # config validation already refuses unknown names
            raise ValueError(f"evaluation.models: unknown model {name!r}; expected any of {', '.join(EVAL_MODELS)}")
    return specs


def model_inputs(specs: Mapping[str, ModelSpec]) -> dict[str, Path]:
    """The stage inputs for the models: each local weights folder and adapter once (Hub ids cannot be hashed).

    >>> sorted(model_inputs({"base": ModelSpec(Path(".")), "base_raw": ModelSpec(Path("."), None, "raw")}))
    ['base_weights']
    """
    inputs: dict[str, Path] = {}
    seen: set[Path] = set()
    for name, spec in specs.items():
        for role, path in (("weights", spec.path), ("adapter", spec.adapter)):
            if path is None or not Path(path).exists() or Path(path).resolve() in seen:
                continue
            seen.add(Path(path).resolve())
            inputs[f"{name}_{role}"] = Path(path)
    return inputs


# --------------------------------------------------------------------------------------------------
# Memory instrumentation
# --------------------------------------------------------------------------------------------------


def current_rss() -> int:
    """This process's resident set size in bytes."""
    import psutil

    return int(psutil.Process().memory_info().rss)


def process_peak_rss() -> int:
    """The process's lifetime peak RSS in bytes (``ru_maxrss``, which Linux reports in KiB)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


class RSSMonitor:
    """Samples RSS every ``interval_s`` in a daemon thread while the ``with`` block runs.

    ``baseline`` is the RSS on entry (interpreter, libraries, anything already resident), ``peak`` the highest
    sample (absolute RSS, baseline included; a spike shorter than one period can be missed, which is why
    :func:`process_peak_rss` is recorded as well). Both in bytes.
    """

    def __init__(self, interval_s: float = RSS_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self.baseline = 0
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        self.peak = max(self.peak, current_rss())
        self.samples += 1

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __enter__(self) -> RSSMonitor:
        self.baseline = current_rss()
        self.peak = self.baseline
        self._thread = threading.Thread(target=self._loop, name="rss-monitor", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()


def _cuda() -> Any:
    """The torch.cuda module when a GPU is in use, else None."""
    import torch

    return torch.cuda if torch.cuda.is_available() else None


def _mb(n_bytes: int | None) -> float | None:
    return None if n_bytes is None else round(n_bytes / _MB, 1)


# --------------------------------------------------------------------------------------------------
# Generation, one model at a time
# --------------------------------------------------------------------------------------------------


def responses_path(out_dir: Path, name: str) -> Path:
    return Path(out_dir) / f"responses_{name}.jsonl"


def _sidecar_path(out_dir: Path, name: str) -> Path:
    return Path(out_dir) / f"responses_{name}.json"


def resume_key(name: str, spec: ModelSpec, prompts: Sequence[str], gen: GenerationConfig, cfg: StudyConfig) -> str:
    """What decides a model's responses: the model, its weights, the prompts, the generation config, the device."""
    return config_hash({
        "model": name, "path": str(spec.path), "adapter": str(spec.adapter) if spec.adapter else None,
        "prompt_style": spec.prompt_style, "quantize_4bit": spec.quantize_4bit, "sha256": spec.sha256,
        "generation": gen.to_dict(), "model_config": dataclasses.asdict(cfg.model),
        "device": modeling.device_for(cfg.model), "prompts": files.sha256_text("\x00".join(prompts)),
    })


def response_record(name: str, item_id: str, gen: Any) -> dict[str, Any]:
    """One ``responses`` record from a :class:`~alignkit.generation.Generation`.

    ``response``/``emitted_end`` come from :func:`alignkit.template.split_output` on the raw output, the same
    split training and scoring use.

    >>> from alignkit.generation import Generation
    >>> response_record("sft", "a1", Generation("P", " 5\\nEND", "5", True, "\\nEND", 4, 3))["emitted_end"]
    True
    """
    response, emitted_end = template.split_output(gen.raw_output)
    return {"model": name, "item_id": item_id, "prompt": gen.prompt, "raw_output": gen.raw_output,
            "response": response, "emitted_end": emitted_end, "prompt_tokens": int(gen.prompt_tokens),
            "output_tokens": int(gen.output_tokens)}


def completed_responses(out_dir: Path, name: str, item_ids: Sequence[str], prompts: Sequence[str],
                        key: str) -> dict[str, Any] | None:
    """The sidecar of ``name``'s responses file if that file is complete and current, else None.

    Complete: the sidecar's key equals ``key`` (same weights, prompts, generation config) and its sha256 equals
    the file's; every line is a valid ``responses`` record of ``name``, one per item, in ``item_ids`` order, with
    the expected prompt. Anything else (a missing sidecar after a kill, a changed config) means regenerate.
    """
    path, sidecar_path = responses_path(out_dir, name), _sidecar_path(out_dir, name)
    if not path.is_file() or not sidecar_path.is_file():
        return None
    try:
        sidecar = files.read_json(sidecar_path)
    except ValueError:
        return None
    if sidecar.get("key") != key or sidecar.get("sha256") != files.sha256_file(path):
        return None
    rows, defects = records.validate_file(path, "responses")
    if defects or len(rows) != len(item_ids):
        return None
    for row, item_id, prompt in zip(rows, item_ids, prompts):
        if row["model"] != name or row["item_id"] != item_id or row["prompt"] != prompt:
            return None
    return sidecar


@contextlib.contextmanager
def generator(spec: ModelSpec, cfg: StudyConfig, name: str, progress: bool):
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
                                                desc=f"evaluating {name}", progress=progress)


def generate_responses(specs: Mapping[str, ModelSpec], items: Sequence[world.Item], cfg: StudyConfig,
                       out_dir: Path, *, progress: bool = True) -> dict[str, Any]:
    """Generate every model's responses to ``items``, one model resident at a time; returns the memory record.

    Each model is loaded inside ``modeling.loaded`` (freed on exit), and a sidecar ``responses_<model>.json``
    (resume key, sha256 of the responses file, memory numbers) then ``out_dir/responses_<model>.jsonl`` are
    written before the next model loads. Models whose files are complete are skipped.

    Memory per model: absolute RSS before loading (``rss_baseline_mb``), the highest RSS sampled every 20 ms
    during load + generation (``rss_peak_mb``) and their difference, RSS after release, and on a GPU the CUDA
    max allocated (peak stats reset per model). ``max_models_resident`` is the loader's weak-reference count
    (``modeling.TRACKER``, reset here), combined with the values recorded by models generated in earlier runs.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    gen_cfg = generation_config(cfg)
    item_ids = [item.id for item in items]
    if len(set(item_ids)) != len(item_ids):
        duplicate = next(i for i, c in Counter(item_ids).items() if c > 1)
        raise ValueError(f"evaluation items: id {duplicate!r} appears more than once")
    device = modeling.device_for(cfg.model)
    cuda = _cuda() if device == "cuda" else None
    modeling.TRACKER.reset()
    per_model: dict[str, dict[str, Any]] = {}
    for name, spec in specs.items():
        prompts = [build_prompt(item.instruction, spec.prompt_style) for item in items]
        key = resume_key(name, spec, prompts, gen_cfg, cfg)
        done = completed_responses(out_dir, name, item_ids, prompts, key)
        if done is not None:
            log.info("%s: responses already complete in %s; not generating again", name, responses_path(out_dir, name))
            per_model[name] = {**done.get("memory", {}), "resumed": True}
            continue
        log.info("%s: loading %s%s", name, spec.path, f" + adapter {spec.adapter}" if spec.adapter else "")
        if cuda is not None:
            cuda.reset_peak_memory_stats()
        started = time.monotonic()
        with RSSMonitor() as monitor:
            with generator(spec, cfg, name, progress) as generate_all:
                loaded_at = time.monotonic()
                resident_while_loaded = modeling.TRACKER.resident()
                outputs = generate_all(prompts, gen_cfg)
            generated_at = time.monotonic()
        rows = [response_record(name, item_id, out) for item_id, out in zip(item_ids, outputs)]
        del outputs
        memory = {
            "load_seconds": round(loaded_at - started, 2), "generate_seconds": round(generated_at - loaded_at, 2),
            "rss_baseline_mb": _mb(monitor.baseline), "rss_peak_mb": _mb(monitor.peak),
            "rss_peak_over_baseline_mb": _mb(monitor.peak - monitor.baseline),
            "rss_after_release_mb": _mb(current_rss()), "rss_samples": monitor.samples,
            "cuda_max_allocated_mb": _mb(cuda.max_memory_allocated()) if cuda is not None else None,
            "cuda_allocated_after_release_mb": _mb(cuda.memory_allocated()) if cuda is not None else None,
            "resident_while_loaded": resident_while_loaded, "resident_after_release": modeling.TRACKER.resident(),
            "max_models_resident": modeling.TRACKER.max_resident,
            "output_tokens": sum(r["output_tokens"] for r in rows),
            "end_rate": round(sum(r["emitted_end"] for r in rows) / len(rows), 4) if rows else None,
        }
        # The sidecar (with the hash of the exact bytes) goes first and the responses file second, both atomic:
        # once responses_<model>.jsonl exists the model is complete, and a kill between the two writes leaves
        # no responses file, so the model is simply generated again.
        text = "".join(files.to_json(row) + "\n" for row in rows)
        files.write_json(_sidecar_path(out_dir, name), {"key": key, "sha256": files.sha256_text(text),
                                                        "model": name, "rows": len(rows), "memory": memory})
        files.write_text(responses_path(out_dir, name), text)
        per_model[name] = {**memory, "resumed": False}
        log.info("%s: %d responses, END emitted in %s, peak RSS %.0f MB", name, len(rows), memory["end_rate"],
                 memory["rss_peak_mb"])
    return memory_summary(per_model, device, modeling.TRACKER.max_resident, modeling.TRACKER.loads)


def memory_summary(per_model: Mapping[str, Mapping[str, Any]], device: str, max_resident_now: int,
                   loads_now: int) -> dict[str, Any]:
    """The ``memory`` block of results.json from the per-model records.

    >>> m = memory_summary({"a": {"rss_peak_mb": 900.0, "max_models_resident": 1, "resumed": True},
    ...                     "b": {"rss_peak_mb": 950.5, "max_models_resident": 1, "resumed": False}}, "cpu", 1, 1)
    >>> m["max_models_resident"], m["peak_rss_mb"], m["resumed_models"]
    (1, 950.5, ['a'])
    """
    recorded = [m.get("max_models_resident") or 0 for m in per_model.values()]
    peaks = [m["rss_peak_mb"] for m in per_model.values() if m.get("rss_peak_mb") is not None]
    cuda_peaks = [m["cuda_max_allocated_mb"] for m in per_model.values() if m.get("cuda_max_allocated_mb") is not None]
    return {
        "device": device,
        "max_models_resident": max([max_resident_now, *recorded]),
        "models_loaded_this_process": loads_now,
        "resumed_models": [name for name, m in per_model.items() if m.get("resumed")],
        "peak_rss_mb": max(peaks) if peaks else None,
        "peak_cuda_allocated_mb": max(cuda_peaks) if cuda_peaks else None,
        "process_peak_rss_mb": _mb(process_peak_rss()),
        "rss_sample_interval_ms": int(RSS_INTERVAL_S * 1000),
        "method": ("rss_peak_mb: highest process RSS sampled every 20 ms from just before a model loads until it "
                   "is released (absolute, so it includes the interpreter and libraries: rss_baseline_mb); "
                   "cuda_max_allocated_mb: torch.cuda.max_memory_allocated after resetting the peak per model; "
                   "max_models_resident: models alive at once, counted by the loader with weak references."),
        "per_model": {name: dict(m) for name, m in per_model.items()},
    }


def combine_responses(out_dir: Path, names: Sequence[str]) -> tuple[Path, list[dict[str, Any]]]:
    """Concatenate the per-model files (in ``names`` order) into ``out_dir/responses.jsonl``."""
    rows: list[dict[str, Any]] = []
    for name in names:
        rows.extend(records.load_records(responses_path(out_dir, name), "responses"))
    path = Path(out_dir) / "responses.jsonl"
    files.write_jsonl(path, rows)
    return path, rows


# --------------------------------------------------------------------------------------------------
# Scoring (no model needed)
# --------------------------------------------------------------------------------------------------


def score_responses(items: Sequence[world.Item], responses: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One score row per response: ``model``, ``item_id``, ``family`` and each criterion (True/False/None)."""
    by_id = {item.id: item for item in items}
    criteria = all_criteria()
    rows = []
    for index, response in enumerate(responses):
        item = by_id.get(response["item_id"])
        if item is None:
            raise ValueError(f"responses[{index}] (model {response['model']!r}): item_id {response['item_id']!r} "
                             "is not among the evaluation items")
        scores = scoring.score_response(item, response["response"], response["emitted_end"])
        rows.append({"model": response["model"], "item_id": item.id, "family": item.family,
                     **{criterion: scores[criterion] for criterion in criteria}})
    return rows


# --------------------------------------------------------------------------------------------------
# Statistics: pure functions of score rows
# --------------------------------------------------------------------------------------------------


def _rate(outcomes: Sequence[bool | None]) -> dict[str, Any]:
    summary = stats.rate_summary(outcomes)
    return {key: summary[key] for key in ("rate", "ci_low", "ci_high", "n")}


def _by_model(score_rows: Sequence[Mapping[str, Any]], models: Sequence[str]) -> tuple[list[str], dict[str, dict]]:
    """Item ids (first-seen order) and ``{model: {item_id: row}}``; every model must have scored every item."""
    table: dict[str, dict[str, Mapping[str, Any]]] = {name: {} for name in models}
    order: dict[str, None] = {}
    for row in score_rows:
        if row["model"] not in table:
            continue
        if row["item_id"] in table[row["model"]]:
            raise ValueError(f"scores: model {row['model']!r} has item {row['item_id']!r} twice")
        table[row["model"]][row["item_id"]] = row
        order.setdefault(row["item_id"], None)
    item_ids = list(order)
    for name in models:
        missing = [i for i in item_ids if i not in table[name]]
        if missing or not table[name]:
            raise ValueError(f"scores: model {name!r} lacks {len(missing) or 'all'} item(s) (e.g. "
                             f"{(missing or item_ids or ['?'])[0]!r}); paired statistics need every model scored "
                             "on the same items")
    return item_ids, table


def model_rates(score_rows: Sequence[Mapping[str, Any]], models: Sequence[str],
                criteria: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``{model: {"criteria": {c: {rate, ci_low, ci_high, n}}, "families": {family: {c: {...}}}, "n_items"}}``.

    ``n`` counts the items where the criterion applies; Wilson 95% intervals.

    >>> rows = [{"model": "m", "item_id": str(i), "family": "f", "x": v}
    ...         for i, v in enumerate([True, True, False, None])]
    >>> model_rates(rows, ["m"], ["x"])["m"]["criteria"]["x"]["n"]
    3
    """
    item_ids, table = _by_model(score_rows, models)
    out: dict[str, dict[str, Any]] = {}
    for name in models:
        rows = [table[name][i] for i in item_ids]
        families: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
        for row in rows:
            families[row["family"]].append(row)
        family_order = sorted(families, key=lambda f: (FAMILIES.index(f) if f in FAMILIES else len(FAMILIES), f))
        out[name] = {
            "n_items": len(rows),
            "criteria": {c: _rate([row[c] for row in rows]) for c in criteria},
            "families": {f: {c: _rate([row[c] for row in families[f]]) for c in criteria} for f in family_order},
        }
    return out


def contrast_rows(score_rows: Sequence[Mapping[str, Any]], models: Sequence[str], criteria: Sequence[str], *,
                  correction: str, n_bootstrap: int, seed: int) -> list[dict[str, Any]]:
    """Every contrast of :data:`CONTRASTS` whose two models are in ``models``, × every criterion.

    McNemar (exact below 25 discordant pairs), Cohen's h and a paired bootstrap CI of ``rate(b) - rate(a)``
    per row; ``p_adjusted`` corrects across all rows together with ``correction`` (``holm`` or ``bh``).
    """
    item_ids, table = _by_model(score_rows, models)
    out = []
    for a, b in CONTRASTS:
        if a not in table or b not in table:
            continue
        for criterion in criteria:
            xa = [table[a][i][criterion] for i in item_ids]
            xb = [table[b][i][criterion] for i in item_ids]
            result = stats.compare(xa, xb, n_resamples=n_bootstrap, seed=seed)
            out.append({"a": a, "b": b, "criterion": criterion, **result})
    adjusted = stats.adjust([row["p_value"] for row in out], correction)
    for row, p_adj in zip(out, adjusted):
        row["p_adjusted"] = p_adj
    return out


def cochran_overall(score_rows: Sequence[Mapping[str, Any]], models: Sequence[str]) -> dict[str, Any] | None:
    """Cochran's Q on ``overall`` across the :data:`COCHRAN_MODELS` that were evaluated (None if fewer than 2)."""
    chosen = [m for m in COCHRAN_MODELS if m in models]
    if len(chosen) < 2:
        return None
    item_ids, table = _by_model(score_rows, chosen)
    matrix = [[table[m][i][OVERALL] for m in chosen] for i in item_ids]
    q, df, p = stats.cochran_q(matrix)
    return {"criterion": OVERALL, "models": chosen, "q": q, "df": df, "p_value": p,
            "n_items": sum(all(v is not None for v in row) for row in matrix)}


def format_p(p: float | None) -> str:
    """A p-value for prose and tables.

    >>> [format_p(p) for p in (0.5, 0.04321, 0.000012, 1.0)]
    ['0.5', '0.0432', '1.2e-05', '1']
    """
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "n/a"
    if p < 1e-4:
        return f"{p:.1e}"
    return f"{p:.3g}"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _ci(entry: Mapping[str, Any]) -> str:
    return f"95% CI {_pct(entry['ci_low'])}–{_pct(entry['ci_high'])}"


def _find(contrasts: Sequence[Mapping[str, Any]], x: str, y: str, criterion: str) -> Mapping[str, Any] | None:
    for row in contrasts:
        if row["criterion"] == criterion and {row["a"], row["b"]} == {x, y}:
            return row
    return None


def best_model(models_block: Mapping[str, Mapping[str, Any]]) -> tuple[str | None, list[str]]:
    """The model with the highest ``overall`` rate (None if none has one) and every model tied with it.

    >>> best_model({"a": {"criteria": {"overall": {"rate": 0.2}}}, "b": {"criteria": {"overall": {"rate": 0.5}}}})
    ('b', ['b'])
    """
    rated = [(name, block["criteria"][OVERALL]["rate"]) for name, block in models_block.items()
             if block["criteria"][OVERALL]["rate"] is not None]
    if not rated:
        return None, []
    top = max(rate for _, rate in rated)
    tied = [name for name, rate in rated if rate == top]
    return tied[0], tied


def headline(models_block: Mapping[str, Mapping[str, Any]], contrasts: Sequence[Mapping[str, Any]],
             correction: str, alpha: float = ALPHA) -> str:
    """One to three sentences on the primary endpoint, generated from the numbers (never from expectations).

    Names the model(s) with the highest ``overall`` rate with the Wilson CI, then the paired contrast against
    the base model (difference, bootstrap CI, adjusted p) — saying plainly when it is not significant — and,
    when a contrast with the runner-up exists, whether the lead over it is significant.
    """
    method = {"holm": "Holm", "bh": "Benjamini–Hochberg"}.get(correction, correction)
    winner, tied = best_model(models_block)
    if winner is None:
        return "No model has an applicable overall score; nothing can be concluded."
    entry = models_block[winner]["criteria"][OVERALL]
    endpoint = "On the primary endpoint (overall: every applicable criterion passes)"
    if entry["rate"] == 0:
        return (f"{endpoint}, no model passes a single item: every model scores 0.0% (n={entry['n']}; the 95% CI "
                f"reaches {_pct(entry['ci_high'])}), so there is no winner.")
    if len(tied) > 1:
        sentences = [f"{endpoint}, {_join(tied)} tie for the highest rate at {_pct(entry['rate'])} "
                     f"({_ci(entry)}, n={entry['n']})."]
    else:
        sentences = [f"{endpoint}, {winner} scores highest at {_pct(entry['rate'])} ({_ci(entry)}, n={entry['n']})."]
    if "base" in tied:
        sentences.append("No trained model beats the untrained base model on overall.")
    elif "base" in models_block:
        base = models_block["base"]["criteria"][OVERALL]
        found = [(name, _find(contrasts, "base", name, OVERALL)) for name in tied]
        found = [(name, row) for name, row in found if row is not None and row["diff"] is not None]
        if not found:
            sentences.append(f"There is no paired contrast between base ({_pct(base['rate'])}) and "
                             f"{_join(tied)} in this study.")
        for name, row in found:
            diff = row["diff"] if row["b"] == name else -row["diff"]
            significant = row["p_adjusted"] < alpha
            change = "that is a difference of" if len(tied) == 1 else f"{name} differs by"
            sentences.append(
                f"Against the base model ({_pct(base['rate'])}) {change} {100 * diff:+.1f} points "
                f"(paired bootstrap 95% CI {100 * _signed(row, name, 'low'):+.1f} to "
                f"{100 * _signed(row, name, 'high'):+.1f}), "
                + ("significant" if significant else "not statistically significant")
                + f" after {method} correction (adjusted p = {format_p(row['p_adjusted'])})"
                + ("." if significant else ", so these data do not show that it beats the base model."))
    others = sorted(((name, block["criteria"][OVERALL]["rate"]) for name, block in models_block.items()
                     if name not in tied and block["criteria"][OVERALL]["rate"] is not None),
                    key=lambda kv: -kv[1])
    if len(tied) == 1 and others and others[0][0] != "base":
        runner_up, rate = others[0]
        row = _find(contrasts, runner_up, winner, OVERALL)
        if row is not None:
            significant = row["p_adjusted"] < alpha
            sentences.append(
                f"Its lead over the runner-up {runner_up} ({_pct(rate)}) is "
                + ("significant" if significant else "not significant")
                + f" (adjusted p = {format_p(row['p_adjusted'])}).")
    return " ".join(sentences)


def _join(names: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``.

    >>> _join(["base", "sft", "sft_dpo"])
    'base, sft and sft_dpo'
    """
    names = list(names)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _signed(row: Mapping[str, Any], toward: str, end: str) -> float:
    """A contrast's CI bound oriented as ``toward`` minus the other model."""
    if row["b"] == toward:
        return row["ci_low"] if end == "low" else row["ci_high"]
    return -(row["ci_high"] if end == "low" else row["ci_low"])


def build_results(score_rows: Sequence[Mapping[str, Any]], *, models: Sequence[str], criteria: Sequence[str],
                  correction: str = "holm", n_bootstrap: int = 2000, seed: int = 0,
                  alpha: float = ALPHA) -> dict[str, Any]:
    """The statistics part of results.json from score rows (no I/O).

    Keys: ``models`` (:func:`model_rates`), ``contrasts`` (:func:`contrast_rows`), ``correction``,
    ``cochran_q``, ``headline``, ``best_model``, ``model_order``, ``criteria``, ``families``, ``n_items``.
    """
    block = model_rates(score_rows, models, criteria)
    contrasts = contrast_rows(score_rows, models, criteria, correction=correction, n_bootstrap=n_bootstrap,
                              seed=seed)
    families = list(next(iter(block.values()))["families"]) if block else []
    winner, _tied = best_model(block) if OVERALL in criteria else (None, [])
    return {
        "model_order": list(models),
        "criteria": list(criteria),
        "families": families,
        "n_items": next(iter(block.values()))["n_items"] if block else 0,
        "models": block,
        "contrasts": contrasts,
        "correction": {"method": correction, "alpha": alpha, "n_tests": len(contrasts),
                       "scope": "all contrasts × all criteria (incl. overall) adjusted together",
                       "bootstrap_resamples": n_bootstrap, "bootstrap_seed": seed},
        "cochran_q": cochran_overall(score_rows, models) if OVERALL in criteria else None,
        "best_model": winner,
        "headline": headline(block, contrasts, correction, alpha) if OVERALL in criteria else "",
    }


# --------------------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------------------


def provenance(run: Run, specs: Mapping[str, ModelSpec], eval_path: Path, input_hashes: Mapping[str, str],
               gen: GenerationConfig) -> dict[str, Any]:
    """Hashes of the items, models and training data (from the stage manifests), versions, seeds and flags."""
    cfg = run.config
    stages = {}
    for stage, names in (("01_sft_data", ("sft", "eval_items")), ("02_sft_training", ("model",)),
                         ("03_negatives", ("negatives",)), ("04_preference_pairs", ("pairs",)),
                         ("05_dpo_training", ("sft_dpo", "dpo_only"))):
        manifest = run.manifest(stage)
        if manifest is None:
            stages[stage] = None
            continue
        stages[stage] = {"fingerprint": manifest.get("fingerprint"), "finished": manifest.get("finished"),
                         "outputs": {n: manifest["outputs"][n]["sha256"] for n in names
                                     if n in manifest.get("outputs", {})}}
    return {
        "eval_items": {"path": str(eval_path), "sha256": files.sha256_file(eval_path)},
        "models": {name: {"path": str(spec.path), "adapter": str(spec.adapter) if spec.adapter else None,
                          "prompt_style": spec.prompt_style, "quantize_4bit": spec.quantize_4bit,
                          "sha256": spec.sha256} for name, spec in specs.items()},
        "inputs_sha256": dict(input_hashes),
        "stages": stages,
        "generation": gen.to_dict(),
        "prompt_styles": {"template": "template.prompt(instruction) = 'Instruction: {instruction}\\nResponse:'",
                          "raw": "instruction + '\\n' (base_raw only)"},
        "seeds": {"seed": cfg.seed, "seeds": list(cfg.seeds), "base_build_seed": cfg.base_build.seed,
                  "bootstrap_seed": cfg.seed},
        "security": {"trust_remote_code": cfg.model.trust_remote_code,
                     "allow_pickle_weights": cfg.model.allow_pickle_weights},
        "versions": library_versions(),
        "git_commit": git_commit(),
    }


def _input_hashes(stage_dir: Path, inputs: Mapping[str, Path]) -> dict[str, str]:
    """The input hashes ``execute_stage`` just recorded in the running manifest (hashing big models once)."""
    recorded = files.read_json(stage_dir / MANIFEST).get("inputs", {})
    return {name: recorded[name]["sha256"] if name in recorded else fingerprint_path(Path(path))
            for name, path in inputs.items()}


def _with_hashes(specs: Mapping[str, ModelSpec], inputs: Mapping[str, Path],
                 hashes: Mapping[str, str]) -> dict[str, ModelSpec]:
    """Specs with ``sha256`` = hash of weights (+ adapter), looked up by resolved path."""
    by_path = {Path(path).resolve(): hashes[name] for name, path in inputs.items()}
    out = {}
    for name, spec in specs.items():
        parts = [by_path.get(Path(p).resolve()) if Path(p).exists() else None for p in (spec.path, spec.adapter)
                 if p is not None]
        digest = files.sha256_text("+".join(parts)) if parts and all(parts) else None
        out[name] = dataclasses.replace(spec, sha256=digest)
    return out


def clear_responses(out_dir: Path) -> None:
    """Delete per-model responses files and sidecars (``--force`` regenerates every model)."""
    for path in list(Path(out_dir).glob("responses_*.jsonl")) + list(Path(out_dir).glob("responses_*.json")):
        path.unlink()


def run(run: Run, force: bool = False) -> dict[str, Any]:
    """Execute stage 06 (cached), then write ``reports/<run_id>/results.json`` and ``report.html``."""
    from alignkit import report

    cfg = run.config
    eval_path = run.output("01_sft_data", "eval_items")
    specs = model_specs(run)
    inputs = {"eval_items": eval_path, **model_inputs(specs)}

    def body(ctx) -> None:
        items = [world.Item.from_record(r) for r in records.load_records(eval_path, "eval-items")]
        if ctx.force:
            clear_responses(ctx.dir)
        hashes = _input_hashes(ctx.dir, inputs)
        hashed = _with_hashes(specs, {k: v for k, v in inputs.items() if k != "eval_items"}, hashes)
        memory = generate_responses(hashed, items, cfg, ctx.dir)
        responses_file, responses = combine_responses(ctx.dir, list(hashed))
        scores = score_responses(items, responses)
        n_scores = files.write_jsonl(ctx.path("scores.jsonl"), scores)
        results = build_results(scores, models=list(hashed), criteria=all_criteria(),
                                correction=cfg.evaluation.correction, n_bootstrap=cfg.evaluation.n_bootstrap,
                                seed=cfg.seed)
        results.update({"stage": STAGE, "run_id": run.run_id, "preset": cfg.preset, "memory": memory,
                        "config": cfg.to_dict(),
                        "provenance": provenance(run, hashed, eval_path, hashes, generation_config(cfg))})
        files.write_json(ctx.path("results.json"), results)
        ctx.add_output("responses", responses_file, rows=len(responses))
        ctx.add_output("scores", ctx.path("scores.jsonl"), rows=n_scores)
        ctx.add_output("results", ctx.path("results.json"))
        ctx.summary.update({
            "n_items": len(items), "models": list(hashed), "headline": results["headline"],
            "best_model": results["best_model"], "correction": cfg.evaluation.correction,
            "overall": {m: block["criteria"][OVERALL]["rate"] for m, block in results["models"].items()},
            "max_models_resident": memory["max_models_resident"], "peak_rss_mb": memory["peak_rss_mb"],
            "peak_cuda_allocated_mb": memory["peak_cuda_allocated_mb"], "resumed_models": memory["resumed_models"],
        })
        log.info("headline: %s", results["headline"])

    manifest = execute_stage(run, STAGE, sections=("model", "evaluation"), inputs=inputs, body=body, force=force)
    files.write_bytes(run.report_dir / "results.json", run.output(STAGE, "results").read_bytes())
    report.build(run)
    return manifest
