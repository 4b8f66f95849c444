"""The stage notebooks are thin and papermill-ready; parameters arrive as plain values; failures are named."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from alignkit.config import STAGES

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
PARAMETERS = {"preset", "config_file", "overrides", "run_id", "force"}


@pytest.mark.parametrize("stage", [*STAGES, "07_compare"])
def test_notebook_is_thin_and_parameterised(stage):
    nb = nbformat.read(NOTEBOOKS / f"{stage}.ipynb", as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "alignkit"
    code = [c for c in nb.cells if c.cell_type == "code"]
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    namespace: dict = {}
    exec(tagged[0].source, namespace)  # only literal assignments live there
    assert (PARAMETERS if stage in STAGES else {"sweep_id", "run_ids", "suite"}) <= set(namespace)
    for cell in code:
        assert not cell.get("outputs"), "notebooks are committed without outputs"
        assert "\ndef " not in "\n" + cell.source and "\nclass " not in "\n" + cell.source
    heading = f"# Stage {stage[:2]}" if stage in STAGES else f"# {stage[:2]}"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith(heading)


def test_parameters_with_quotes_newlines_and_code_arrive_as_plain_strings(tmp_path):
    """papermill writes parameters as Python literals; a hostile value must not execute."""
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    marker = tmp_path / "pwned"
    hostile = (f"sft.epochs=2'; open({str(marker)!r}, 'w').write('x'); x='\n"
               f'"""\nimport os; os.system("touch {marker}")\n\\n \\" \' ; # end')
    nb = load_notebook_node(str(NOTEBOOKS / "01_sft_data.ipynb"))  # as papermill loads it
    injected = parameterize_notebook(nb, {"overrides": hostile, "run_id": "a'b\"c", "force": True},
                                     kernel_name="python3", language="python")
    cell = next(c for c in injected.cells if "injected-parameters" in c.metadata.get("tags", []))
    namespace: dict = {}
    exec(cell.source, namespace)
    assert namespace["overrides"] == hostile
    assert namespace["run_id"] == "a'b\"c" and namespace["force"] is True
    assert not marker.exists()


@pytest.mark.slow
def test_a_failing_notebook_is_named_with_its_cell_and_exception(tmp_path, monkeypatch):
    from alignkit import runner

    folder = tmp_path / "notebooks"
    folder.mkdir()
    nb = nbformat.read(NOTEBOOKS / "01_sft_data.ipynb", as_version=4)
    nb.cells = nb.cells[:2] + [nbformat.v4.new_code_cell("raise ValueError('boom in stage one')")]
    nbformat.write(nb, folder / "01_sft_data.ipynb")
    monkeypatch.setenv("ALIGNKIT_NOTEBOOKS", str(folder))
    monkeypatch.setenv("ALIGNKIT_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("ALIGNKIT_REPORTS", str(tmp_path / "reports"))
    with pytest.raises(runner.NotebookFailed) as caught:
        runner.run_notebooks("smoke", stages="01", progress=False)
    message = str(caught.value)
    assert "01_sft_data.ipynb" in message and "cell 2" in message
    assert "ValueError: boom in stage one" in message
    executed = tmp_path / "data" / "runs" / "smoke" / "01_sft_data" / "01_sft_data.ipynb"
    errors = [o for c in json.loads(executed.read_text())["cells"] for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert [e["ename"] for e in errors] == ["ValueError"]
