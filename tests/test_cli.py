"""The command line on bad input: every subcommand given a malformed file, a missing file or a bad config exits
non-zero with a one-line (or FILE:LINE) message and never a Python traceback; ``alignkit score`` scores responses
that carry only an item id and their text."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from alignkit import files, world

REPO = Path(__file__).resolve().parent.parent


def _cli(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {"ALIGNKIT_HOME": str(tmp_path / "home"), "ALIGNKIT_REPORTS": str(tmp_path / "reports"),
           "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "alignkit", *args], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=300)


@pytest.fixture
def bad_files(tmp_path) -> dict[str, Path]:
    out = {}
    out["not_json"] = tmp_path / "not.jsonl"
    out["not_json"].write_text("{not json\n")
    out["bad_yaml"] = tmp_path / "bad.yaml"
    out["bad_yaml"].write_text("sft: [unclosed\n")
    out["items"] = tmp_path / "items.jsonl"
    files.write_jsonl(out["items"], [item.to_record() for item in world.heldout_items(0, 7)])
    return out


@pytest.mark.parametrize("args, expected", [
    (["validate", "{not_json}", "--kind", "sft"], ":1: <line>:"),
    (["validate", "{missing}", "--kind", "sft"], "missing.jsonl"),
    (["score", "--items", "{not_json}", "--responses", "{not_json}", "--out", "{out}"], ":1:"),
    (["score", "--items", "{items}", "--responses", "{not_json}", "--out", "{out}"], ":1:"),
    (["score", "--items", "{missing}", "--responses", "{not_json}", "--out", "{out}"], "missing.jsonl"),
    (["inspect-masks", "--model", "{missing}", "--data", "{not_json}"], ":1:"),
    (["config", "show", "--preset", "tiny", "--config", "{bad_yaml}"], "bad.yaml:2: invalid YAML"),
    (["config", "show", "--preset", "nope"], "preset 'nope'"),
    (["run", "--preset", "smoke", "-p", "model.base=/nonexistent/model"], "model.base"),
    (["stage", "--preset", "smoke", "--stages", "02", "--run-id", "empty"], "01_sft_data"),
    (["sweep", "--preset", "smoke", "--suite", "nope"], "suite 'nope'"),
    (["sweep", "--preset", "smoke", "--grid", "dpo.beta"], "--grid"),
    (["evalset", "--preset", "smoke", "--config", "{bad_yaml}", "--out", "{out}"], "bad.yaml:2: invalid YAML"),
    (["build-base", "--preset", "smoke", "-p", "model.base=/nonexistent/model"], "model.base"),
])
def test_bad_input_gives_a_message_not_a_traceback(args, expected, bad_files, tmp_path):
    paths = {**{k: str(v) for k, v in bad_files.items()}, "missing": str(tmp_path / "missing.jsonl"),
             "out": str(tmp_path / "out.jsonl")}
    result = _cli(*[a.format(**paths) for a in args], tmp_path=tmp_path)
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    assert expected in result.stderr, result.stderr


def test_run_that_fails_preflight_leaves_no_folder(tmp_path):
    result = _cli("run", "--preset", "smoke", "-p", "model.base=/nonexistent/model", "--run-id", "pre",
                  tmp_path=tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert not (tmp_path / "home" / "runs" / "pre").exists()


def test_score_needs_only_item_id_and_text(bad_files, tmp_path):
    items = [world.Item.from_record(r) for r in files.read_jsonl(bad_files["items"])]
    arithmetic = next(i for i in items if i.family == "arithmetic")
    responses = tmp_path / "mine.jsonl"
    files.write_jsonl(responses, [
        {"item_id": arithmetic.id, "raw_output": f" {arithmetic.reference}\nEND"},
        {"item_id": items[1].id, "response": "no idea", "emitted_end": True, "model": "other"},
    ])
    out = tmp_path / "scores.jsonl"
    result = _cli("score", "--items", str(bad_files["items"]), "--responses", str(responses), "--out", str(out),
                  tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = files.read_jsonl(out)
    assert [(r["model"], r["item_id"]) for r in rows] == [("responses", arithmetic.id), ("other", items[1].id)]
    assert rows[0]["overall"] is True and rows[1]["factually_correct"] is False
    # Neither raw_output nor response: a FILE:LINE defect naming the field.
    files.write_jsonl(responses, [{"item_id": arithmetic.id}])
    result = _cli("score", "--items", str(bad_files["items"]), "--responses", str(responses), "--out", str(out),
                  tmp_path=tmp_path)
    assert result.returncode != 0 and f"{responses}:1: raw_output: missing" in result.stderr


def test_config_show_help_keys_lists_every_key_with_its_help(tmp_path):
    from alignkit.config import help_keys

    result = _cli("config", "show", "--help-keys", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == help_keys().strip()
    assert any(line.startswith("dpo.beta ") for line in result.stdout.splitlines())
