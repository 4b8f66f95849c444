"""Bad input never reaches training: each stage validates its inputs at the boundary, before any model loads.

Malformed files are planted as an earlier stage's registered output (with a manifest whose hashes match, as if a
buggy or external producer wrote them); the next stage must stop with ``FILE:LINE: field: problem``, load no
model, and leave no complete-looking manifest behind.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alignkit import files, runs, template
from alignkit.records import InvalidInputError

SFT_ROW = {
    "id": "a", "family": "arithmetic", "instruction": "What is 2 plus 3?", "params": {"key": "arithmetic:add:2:3"},
    "prompt": template.prompt("What is 2 plus 3?"), "completion": template.completion("5"), "response": "5",
    "generation": {"prompt": "Q: What is 2 plus 3?\nA:", "raw_output": " 5\n\n", "attempt": 1, "sampling": {}},
}
PAIR = {"id": "p", "sft_id": "a", "family": "arithmetic", "negative_type": "refusal", "prompt": SFT_ROW["prompt"],
        "chosen": " 5\nEND", "rejected": " I cannot help.\nEND", "chosen_source": "sft_model_greedy", "margin": 1.0}


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNKIT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ALIGNKIT_REPORTS", str(tmp_path / "reports"))
    base = tmp_path / "base"
    base.mkdir()

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded before the input was validated")

    for target in ("alignkit.modeling.load_model", "alignkit.modeling.load_tokenizer"):
        monkeypatch.setattr(target, no_model)
    for module in ("alignkit.sft", "alignkit.dpo", "alignkit.sft_data", "alignkit.negatives"):
        monkeypatch.setattr(f"{module}.ensure_base", lambda cfg: base)
    return runs.open_run("smoke", run_id="bad")


def plant(run: runs.Run, stage: str, outputs: dict[str, tuple[str, str]], summary: dict | None = None) -> None:
    """Write files into ``stage`` and a complete manifest registering them (``name: (filename, text)``)."""
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


def assert_rejected(caught, file_name: str, line: int, field: str) -> None:
    defects = caught.value.defects
    assert any(Path(d.file).name == file_name and d.line == line and d.field == field for d in defects), defects
    assert f"{file_name}:{line}: {field}:" in str(caught.value)


@pytest.mark.parametrize("bad_row, line, field", [
    ({**SFT_ROW, "completion": " 5\\nEND"}, 2, "completion"),          # literal backslash-n
    ({**SFT_ROW, "response": "6", "completion": " 6\nEND"}, 2, "response"),  # not in the model's raw output
    ("{not json", 2, "<line>"),
    ({**SFT_ROW, "family": "astrology"}, 2, "family"),
])
def test_sft_training_rejects_bad_sft_data_before_loading_a_model(run, bad_row, line, field):
    from alignkit import sft

    plant(run, "01_sft_data", {"sft": ("sft.jsonl", lines(SFT_ROW | {"id": "z"}, bad_row)),
                               "eval_items": ("eval_items.jsonl", "")})
    with pytest.raises(InvalidInputError) as caught:
        sft.run(run)
    assert_rejected(caught, "sft.jsonl", line, field)
    assert files.read_json(run.stage_dir("02_sft_training") / "manifest.json")["status"] == "failed"
    assert not (run.stage_dir("02_sft_training") / "model").exists()


@pytest.mark.parametrize("bad_row, field", [
    ({**PAIR, "rejected": PAIR["chosen"]}, "rejected"),
    ({**PAIR, "negative_type": "rude"}, "negative_type"),
    ({**PAIR, "prompt": "What is 2 plus 3?"}, "prompt"),
    ({**PAIR, "chosen": "5"}, "chosen"),
])
def test_dpo_rejects_bad_pairs_before_loading_a_model(run, monkeypatch, bad_row, field):
    from alignkit import dpo

    plant(run, "02_sft_training", {"model": ("model", "/")}, summary={"saved": "full"})
    plant(run, "04_preference_pairs", {"pairs": ("pairs.jsonl", lines(bad_row))})
    with pytest.raises(InvalidInputError) as caught:
        dpo.run(run)
    assert_rejected(caught, "pairs.jsonl", 1, field)
    assert files.read_json(run.stage_dir("05_dpo_training") / "manifest.json")["status"] == "failed"


def test_a_changed_input_file_is_refused_by_its_hash(run):
    from alignkit import sft

    plant(run, "01_sft_data", {"sft": ("sft.jsonl", lines(SFT_ROW)), "eval_items": ("eval_items.jsonl", "")})
    (run.stage_dir("01_sft_data") / "sft.jsonl").write_text(lines(SFT_ROW, SFT_ROW), encoding="utf-8")
    with pytest.raises(runs.StageInputError, match="sha256 differs"):
        sft.run(run)
    assert not (run.stage_dir("02_sft_training") / "manifest.json").exists()
