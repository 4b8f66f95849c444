"""``alignkit summary`` (make readme-numbers): the README's table from a finished run, and one line for a run whose
files another alignkit version wrote (slow: needs the smoke study)."""

from __future__ import annotations

import pytest

from alignkit import summary
from alignkit.runs import StageInputError, open_run

pytestmark = pytest.mark.slow


def test_the_table_names_every_stage_arm_and_primary_contrast(smoke_run):
    run = open_run("smoke")
    results = summary.files.read_json(run.output("06_evaluation", "results"))
    table = dict(summary.rows(run))
    times = table["stage times (s, summed over seeds)"]
    assert [part.split()[0] for part in times.split(", ")] == ["01", "02", "03", "04", "05", "06"]
    assert table["stage 01"].startswith(f"{run.require('01_sft_data')['summary']['kept']} SFT examples")
    for model in results["model_order"]:
        endpoints = results["models"][model]["endpoints"]
        expected = ", ".join(f"{k} {100 * endpoints[k]['rate']:.1f}%" for k in ("format", "content", "overall"))
        assert table[f"{model} (seeds {results['seeds']})"] == expected
    named = [row for row in results["contrasts"] if row.get("named_primary")]
    assert named and all(f"{row['b']} vs {row['a']} ({row['endpoint']})" in table for row in named)
    markdown = summary.markdown(run)
    assert markdown.startswith("| what | measured |\n|---|---|\n") and markdown.count("\n") == len(table) + 1


def test_a_results_file_without_a_field_is_one_line_naming_the_file(smoke_run, monkeypatch):
    run = open_run("smoke")
    real = summary.files.read_json

    def older(path):
        data = real(path)
        return {k: v for k, v in data.items() if k != "contrasts"} if str(path).endswith("results.json") else data

    monkeypatch.setattr(summary.files, "read_json", older)
    with pytest.raises(StageInputError) as error:
        summary.rows(run)
    message = str(error.value)
    assert "results.json: field 'contrasts' is missing" in message and "--force" in message
