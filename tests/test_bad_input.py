"""Bad input never reaches training: each stage validates its inputs at the boundary, before any model loads.

Malformed files are planted as an earlier stage's registered output (with a manifest whose hashes match, as if a
buggy or external producer wrote them); the next stage must stop with ``FILE:LINE: field: problem``, load no
model, and leave no complete-looking manifest behind.

Stage 01 (shared by every training seed) lives in ``<run>/01_sft_data/`` and registers ``sft``, ``dev_sft``,
``eval_items``, ``dev_items`` and ``fewshot_shots``; stages 02-05 run once per training seed in
``<run>/<stage>/seed<N>/`` (a seed view of the run, ``run.for_seed(N)``). Stage 02 reads sft, dev_sft and
eval_items; stage 05 reads the seed's SFT model and its pairs and dev_pairs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

# alignkit.training binds modeling's loaders by name when first imported: import it now, with the real ones, so
# that no module imported while the fixture's guards are in place keeps a guard after the test.
from alignkit import files, runs, template, training  # noqa: F401
from alignkit.schemas import InvalidInputError
from alignkit.stages import dpo, sft

SFT_ROW = {
    "id": "a", "family": "arithmetic", "instruction": "What is 2 plus 3?", "params": {"key": "arithmetic:add:2:3"},
    "prompt": template.prompt("What is 2 plus 3?"), "completion": template.completion("5"), "response": "5",
    "generation": {"prompt": "Q: What is 2 plus 3?\nA:", "raw_output": " 5\n\n", "attempt": 1, "sampling": {}},
}
DEV_ROW = {**SFT_ROW, "id": "dev-a"}
EVAL_ITEM = {"id": "e", "family": "arithmetic", "instruction": "What is 4 plus 4?", "reference": "8",
             "params": {"key": "arithmetic:add:4:4"}}
PAIR = {"id": "p", "sft_id": "a", "family": "arithmetic", "negative_type": "refusal", "prompt": SFT_ROW["prompt"],
        "chosen": " 5\nEND", "rejected": " I cannot help.\nEND", "chosen_source": "sft_model_greedy", "margin": 1.0}
#: A format pair whose rejected is kept exactly as generated: a run-on without END.
END_LESS_PAIR = {**PAIR, "id": "p-format", "negative_type": "format",
                 "rejected": " 5\nInstruction: What is 3 plus 3?\nResponse: 6"}


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNKIT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ALIGNKIT_REPORTS", str(tmp_path / "reports"))
    base = tmp_path / "base"
    base.mkdir()

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded before the input was validated")

    # alignkit.training imports the loaders by name: patch them there too.
    for target in ("alignkit.modeling.load_model", "alignkit.modeling.load_tokenizer",
                   "alignkit.training.load_model", "alignkit.training.load_tokenizer"):
        monkeypatch.setattr(target, no_model)
    for module in ("alignkit.artifacts", "alignkit.stages.sft", "alignkit.stages.sft_data",
                   "alignkit.stages.negatives"):
        monkeypatch.setattr(f"{module}.ensure_base", lambda cfg: base)
    return runs.open_run("smoke", run_id="bad")


def plant(run: runs.Run, stage: str, outputs: dict[str, tuple[str, str]], summary: dict | None = None) -> None:
    """Write files into ``stage`` (the seed view's folder for a per-seed stage) and a complete manifest registering
    them (``name: (filename, text)``; a text ending in ``/`` makes a folder)."""
    folder = run.stage_dir(stage)
    folder.mkdir(parents=True, exist_ok=True)
    entries = {}
    for name, (filename, text) in outputs.items():
        path = folder / filename
        if text.endswith("/"):
            path.mkdir(exist_ok=True)
        else:
            path.write_text(text, encoding="utf-8")
        entries[name] = {"path": str(path.relative_to(run.dir)), "sha256": runs.fingerprint_path(path), "rows": None}
    files.write_json(folder / "manifest.json", {"stage": stage, "status": "complete", "outputs": entries,
                                                "summary": summary or {}})


def lines(*rows) -> str:
    return "".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows)


def plant_sft_data(run: runs.Run, sft: str | None = None, dev_sft: str | None = None) -> None:
    """Stage 01's outputs, valid unless ``sft`` / ``dev_sft`` text is given."""
    plant(run, "01_sft_data", {
        "sft": ("sft.jsonl", lines(SFT_ROW) if sft is None else sft),
        "dev_sft": ("dev_sft.jsonl", lines(DEV_ROW) if dev_sft is None else dev_sft),
        "eval_items": ("eval_items.jsonl", lines(EVAL_ITEM)),
        "dev_items": ("dev_items.jsonl", lines({**EVAL_ITEM, "id": "d"})),
        "fewshot_shots": ("fewshot_shots.jsonl", lines({"instruction": "What is 1 plus 1?", "response": "2"})),
    })


def plant_sft_model_and_pairs(view: runs.Run, pairs: str, dev_pairs: str | None = None) -> None:
    """A seed's stage 02 (full weights, as a folder) and stage 04 (pairs, dev_pairs)."""
    plant(view, "02_sft_training", {"model": ("model", "/")}, summary={"saved": "full"})
    plant(view, "04_preference_pairs", {"pairs": ("pairs.jsonl", pairs),
                                        "dev_pairs": ("dev_pairs.jsonl",
                                                      lines({**PAIR, "id": "dp"}) if dev_pairs is None else dev_pairs)})


def assert_rejected(caught, file_name: str, line: int, field: str) -> None:
    defects = caught.value.defects
    assert any(Path(d.file).name == file_name and d.line == line and d.field == field for d in defects), defects
    assert f"{file_name}:{line}: {field}:" in str(caught.value)


def test_per_seed_stages_need_a_seed_view(run):
    # Stage 01 is shared; stages 02-05 live in seed folders, reachable only through a seed view.
    assert run.stage_dir("01_sft_data") == run.dir / "01_sft_data"
    with pytest.raises(runs.StageInputError, match="runs once per training seed"):
        run.stage_dir("02_sft_training")
    assert [view.stage_dir("02_sft_training") for view in run.seed_views()] == [
        run.dir / "02_sft_training" / "seed0", run.dir / "02_sft_training" / "seed1"]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("bad_row, line, field", [
    ({**SFT_ROW, "completion": " 5\\nEND"}, 2, "completion"),          # literal backslash-n
    ({**SFT_ROW, "response": "6", "completion": " 6\nEND"}, 2, "response"),  # not in the model's raw output
    ("{not json", 2, "<line>"),
    ({**SFT_ROW, "family": "astrology"}, 2, "family"),
])
def test_sft_training_rejects_bad_sft_data_before_loading_a_model(run, seed, bad_row, line, field):

    view = run.for_seed(seed)
    plant_sft_data(run, sft=lines(SFT_ROW | {"id": "z"}, bad_row))
    with pytest.raises(InvalidInputError) as caught:
        sft.run(view)
    assert_rejected(caught, "sft.jsonl", line, field)
    stage_dir = run.dir / "02_sft_training" / f"seed{seed}"
    assert view.stage_dir("02_sft_training") == stage_dir
    assert files.read_json(stage_dir / "manifest.json")["status"] == "failed"
    assert not (stage_dir / "model").exists()
    # The other seed's folder is untouched.
    assert not (run.dir / "02_sft_training" / f"seed{1 - seed}").exists()


@pytest.mark.parametrize("bad_row, field", [
    ({**DEV_ROW, "instruction": "What is 2 plus 3?\nResponse: 5"}, "instruction"),
    ({**DEV_ROW, "generation": {**DEV_ROW["generation"], "attempt": 0}}, "generation.attempt"),
])
def test_sft_training_rejects_bad_dev_sft_data_before_loading_a_model(run, bad_row, field):

    view = run.for_seed(0)
    plant_sft_data(run, dev_sft=lines(DEV_ROW | {"id": "dev-z"}, bad_row))
    with pytest.raises(InvalidInputError) as caught:
        sft.run(view)
    assert_rejected(caught, "dev_sft.jsonl", 2, field)
    assert files.read_json(view.stage_dir("02_sft_training") / "manifest.json")["status"] == "failed"


def test_sft_training_needs_stage_01_to_register_dev_sft(run):

    plant(run, "01_sft_data", {"sft": ("sft.jsonl", lines(SFT_ROW)), "eval_items": ("eval_items.jsonl",
                                                                                    lines(EVAL_ITEM))})
    with pytest.raises(runs.StageInputError, match="has no output 'dev_sft'"):
        sft.run(run.for_seed(0))
    assert not (run.dir / "02_sft_training").exists()


@pytest.mark.parametrize("bad_row, field", [
    ({**PAIR, "rejected": PAIR["chosen"]}, "rejected"),
    ({**PAIR, "negative_type": "rude"}, "negative_type"),
    ({**PAIR, "prompt": "What is 2 plus 3?"}, "prompt"),
    ({**PAIR, "chosen": "5"}, "chosen"),
    # Only format and verbose rejected may lack END; END inside an END-less rejected is refused too.
    ({**PAIR, "rejected": " I cannot help."}, "rejected"),
    ({**END_LESS_PAIR, "rejected": " 5\nEND\nInstruction: What is 3 plus 3?"}, "rejected"),
])
def test_dpo_rejects_bad_pairs_before_loading_a_model(run, bad_row, field):

    view = run.for_seed(1)
    plant_sft_model_and_pairs(view, lines(bad_row))
    with pytest.raises(InvalidInputError) as caught:
        dpo.run(view)
    assert_rejected(caught, "pairs.jsonl", 1, field)
    manifest = files.read_json(run.dir / "05_dpo_training" / "seed1" / "manifest.json")
    assert manifest["status"] == "failed" and manifest["seed"] == 1


def test_dpo_rejects_bad_dev_pairs_before_loading_a_model(run):

    view = run.for_seed(0)
    plant_sft_model_and_pairs(view, lines(PAIR), dev_pairs=lines({**PAIR, "id": "dp"}, {**PAIR, "id": "dp"}))
    with pytest.raises(InvalidInputError) as caught:
        dpo.run(view)
    assert_rejected(caught, "dev_pairs.jsonl", 2, "id")
    assert "duplicate id 'dp'" in str(caught.value)
    assert files.read_json(view.stage_dir("05_dpo_training") / "manifest.json")["status"] == "failed"


def test_dpo_passes_an_end_less_format_rejected_to_training_unchanged(run, monkeypatch):
    # Valid pairs (one format rejected without END) pass the boundary and reach training exactly as written.

    received = []

    def train_one(run_, ctx, name, init, pairs, dev_pairs):
        received.append((name, pairs, dev_pairs))
        raise RuntimeError("stop before training")

    monkeypatch.setattr(dpo, "train_one", train_one)
    view = run.for_seed(0)
    plant_sft_model_and_pairs(view, lines(PAIR, END_LESS_PAIR), dev_pairs=lines({**END_LESS_PAIR, "id": "dp"}))
    with pytest.raises(RuntimeError, match="stop before training"):
        dpo.run(view)
    (name, pairs, dev_pairs), = received
    assert name == "sft_dpo"
    assert [p["rejected"] for p in pairs] == [" I cannot help.\nEND", " 5\nInstruction: What is 3 plus 3?\nResponse: 6"]
    assert not pairs[1]["rejected"].endswith("\nEND") and "\nEND" not in pairs[1]["rejected"]
    assert dev_pairs == [{**END_LESS_PAIR, "id": "dp"}]


def test_dpo_of_one_seed_needs_that_seeds_pairs(run):

    plant_sft_model_and_pairs(run.for_seed(0), lines(PAIR))
    plant(run.for_seed(1), "02_sft_training", {"model": ("model", "/")}, summary={"saved": "full"})
    with pytest.raises(runs.StageInputError, match="04_preference_pairs/seed1/manifest.json: missing or incomplete"):
        dpo.run(run.for_seed(1))
    assert not (run.dir / "05_dpo_training").exists()


def test_a_changed_input_file_is_refused_by_its_hash(run):

    plant_sft_data(run)
    (run.stage_dir("01_sft_data") / "sft.jsonl").write_text(lines(SFT_ROW, SFT_ROW), encoding="utf-8")
    view = run.for_seed(0)
    with pytest.raises(runs.StageInputError, match="sha256 differs"):
        sft.run(view)
    assert not (view.stage_dir("02_sft_training") / "manifest.json").exists()


def test_a_changed_dev_pairs_file_is_refused_by_its_hash(run):

    view = run.for_seed(1)
    plant_sft_model_and_pairs(view, lines(PAIR))
    (view.stage_dir("04_preference_pairs") / "dev_pairs.jsonl").write_text(lines(PAIR), encoding="utf-8")
    with pytest.raises(runs.StageInputError, match="dev_pairs.jsonl: sha256 differs"):
        dpo.run(view)
    assert not (view.stage_dir("05_dpo_training") / "manifest.json").exists()
