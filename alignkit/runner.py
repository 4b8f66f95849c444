"""``alignkit run``: execute the numbered notebooks in order with papermill, then export them to HTML.

    alignkit run --preset smoke --stages 01-06

Each notebook gets the same parameters (``preset``, ``config_file``, ``overrides``, ``run_id``, ``force``)
injected into its ``parameters`` cell. The executed copy lands in the stage folder
(``runs/<run_id>/<stage>/<stage>.ipynb``) and an HTML export with code hidden in ``reports/<run_id>/``.
A failing notebook stops the run with an error naming the notebook, the cell and its exception. The whole run
holds the run's lock; its kernels (child processes) work under it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from alignkit import files
from alignkit.config import STAGES, resolve
from alignkit.runs import Run, check_run_id, is_cached, reports_root, stage_range

log = logging.getLogger(__name__)

KERNEL_NAME = "alignkit"
KERNEL_DISPLAY_NAME = "Python (alignkit)"
#: The kernel application's own log is noise on every start (e.g. "Kernel is running over TCP without
#: encryption" on a local kernel); cell output is unaffected.
KERNEL_QUIET = "--IPKernelApp.log_level=CRITICAL"


class NotebookFailed(RuntimeError):
    """A notebook raised; the message names it, the failing cell and the exception."""


def notebooks_dir() -> Path:
    """The ``notebooks/`` folder of this checkout (``$ALIGNKIT_NOTEBOOKS`` overrides it)."""
    env = os.environ.get("ALIGNKIT_NOTEBOOKS")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "notebooks"


def ensure_kernel() -> str:
    """Make sure the ``alignkit`` Jupyter kernel exists and runs this interpreter; returns its name.

    ``make`` registers it during setup; this repairs a missing or stale registration (e.g. a moved venv),
    so papermill always executes notebooks with the same Python as the CLI.
    """
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(KERNEL_NAME)
        if spec.argv and Path(spec.argv[0]).resolve() == Path(sys.executable).resolve() and KERNEL_QUIET in spec.argv:
            return KERNEL_NAME
        log.info("kernel %r runs %s, not %s with %s; registering it again", KERNEL_NAME, spec.argv, sys.executable,
                 KERNEL_QUIET)
    except NoSuchKernel:
        log.info("registering Jupyter kernel %r for %s", KERNEL_NAME, sys.executable)
    from ipykernel.kernelspec import install

    folder = Path(install(kernel_name=KERNEL_NAME, display_name=KERNEL_DISPLAY_NAME, prefix=sys.prefix))
    spec_file = folder / "kernel.json"
    data = json.loads(spec_file.read_text(encoding="utf-8"))
    data["argv"] = [*data["argv"], KERNEL_QUIET]
    files.write_text(spec_file, json.dumps(data, indent=1))
    return KERNEL_NAME


@dataclass
class NotebookResult:
    stage: str
    executed: Path
    html: Path
    seconds: float


def export_html(notebook: Path, out: Path) -> Path:
    """Export an executed notebook to standalone HTML with code cells and prompts hidden."""
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    body, _resources = exporter.from_notebook_node(nbformat.read(notebook, as_version=4))
    return files.write_text(out, body)


def _failure(notebook: Path, executed: Path, error: Exception) -> NotebookFailed:
    """Turn papermill's error into one that names the notebook, the cell and the exception."""
    cell = "?"
    try:
        nb = json.loads(executed.read_text(encoding="utf-8"))
        index = -1  # index in the source notebook: papermill's injected and error-banner cells do not count
        for c in nb.get("cells", []):
            tags = c.get("metadata", {}).get("tags", [])
            if "injected-parameters" in tags or "papermill-error-cell-tag" in tags:
                continue
            index += 1
            if any(o.get("output_type") == "error" for o in c.get("outputs", [])):
                first_line = "".join(c.get("source", "")).strip().splitlines()[:1]
                cell = f"{index} ({first_line[0][:60]!r})" if first_line else str(index)
                break
    except (OSError, ValueError):
        pass
    ename = getattr(error, "ename", type(error).__name__)
    evalue = getattr(error, "evalue", str(error))
    return NotebookFailed(f"notebook {notebook.name} failed in cell {cell}: {ename}: {evalue} "
                          f"(executed copy with the traceback: {executed})")


def _still_current(notebook: Path, executed: Path, html: Path) -> bool:
    """The executed copy and its HTML exist, ran without error, and are newer than the notebook's source."""
    if not (executed.is_file() and html.is_file()):
        return False
    if executed.stat().st_mtime < notebook.stat().st_mtime or html.stat().st_mtime < executed.stat().st_mtime:
        return False
    try:
        cells = json.loads(executed.read_text(encoding="utf-8")).get("cells", [])
    except (OSError, ValueError):
        return False
    return not any(o.get("output_type") == "error" for c in cells for o in c.get("outputs", []))


#: Environment of the notebook kernels in a headless run: no progress bars (their refreshes would fill run.log; the
#: terminal gets one progress line every ``logging_steps`` instead), no library chatter below warnings.
KERNEL_ENV = {"TQDM_DISABLE": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error",
              "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1", "PYTHONWARNINGS": "ignore::FutureWarning"}


def _print(text: str) -> None:
    print(text, flush=True)


def run_notebooks(preset: str = "tiny", *, config_file: str | None = None, overrides: list[str] | None = None,
                  stages: str = "all", run_id: str | None = None, force: bool = False,
                  progress: bool = True, verbose: bool = False) -> list[NotebookResult]:
    """Execute the selected stage notebooks in order; return where each executed copy and HTML went.

    Preflight first (config, base model, disk; :mod:`alignkit.preflight`), then the run lock (one writer per
    run), then one notebook per stage. The terminal gets one line per stage start and end, training progress
    and alignkit's warnings (``progress``), and the kernels' whole output goes to ``runs/<run_id>/run.log``
    (``verbose`` also streams it through papermill's logger).
    """
    import papermill

    from alignkit import preflight, terminal
    from alignkit.lock import run_lock
    from alignkit.runs import home

    cfg = resolve(preset, config_file, overrides)  # fail fast on a bad config, before any kernel starts
    # Kernels run in notebooks/ and inherit the environment: pin both roots as absolute paths, so a relative
    # ALIGNKIT_HOME given to the CLI means the same folder inside every notebook.
    os.environ["ALIGNKIT_HOME"] = str(home())
    os.environ["ALIGNKIT_REPORTS"] = str(reports_root())
    run = Run(run_id=check_run_id(run_id or preset), config=cfg)
    preflight.preflight(run)
    kernel = ensure_kernel()
    wanted = stage_range(stages)
    folder = notebooks_dir()
    available = [s for s in wanted if (folder / f"{s}.ipynb").is_file()]
    missing = [s for s in wanted if s not in available]
    if missing:
        log.warning("no notebook for %s in %s; skipping", ", ".join(missing), folder)
    parameters = {"preset": preset, "config_file": str(Path(config_file).resolve()) if config_file else "",
                  "overrides": "\n".join(overrides or []), "run_id": run.run_id, "force": bool(force)}
    if not verbose:
        os.environ.update({k: v for k, v in KERNEL_ENV.items() if k not in os.environ})
        logging.getLogger("papermill").setLevel(logging.WARNING)
    emit = _print if progress else (lambda _text: None)
    results: list[NotebookResult] = []
    timings: list[tuple[str, float, str]] = []
    with run_lock(run.dir, f"alignkit run --preset {preset}"):
        log_path = run.dir / "run.log"
        emit(f"run {run.run_id}: preset {preset}, training seeds {list(cfg.training_seeds)}; full log: {log_path}")
        for number, stage in enumerate(available, start=1):
            notebook = folder / f"{stage}.ipynb"
            executed = run.dir / stage / f"{stage}.ipynb"
            executed.parent.mkdir(parents=True, exist_ok=True)
            html = reports_root() / run.run_id / f"{stage}.html"
            label = f"[{number}/{len(available)}] {stage}"
            if not force and _still_current(notebook, executed, html) and is_cached(run, stage):
                # Same config, inputs and code as the executed copy beside it: outputs and HTML are current.
                emit(f"{label} … cached ({terminal.stage_summary(run, stage)})")
                results.append(NotebookResult(stage, executed, html, 0.0))
                timings.append((stage, 0.0, "cached"))
                continue
            emit(f"{label} …")
            started = time.monotonic()
            try:
                with log_path.open("a", encoding="utf-8") as sink, terminal.LogRelay(log_path, emit):
                    sink.write(f"===== {stage} =====\n")
                    sink.flush()
                    papermill.execute_notebook(str(notebook), str(executed), parameters=parameters,
                                               kernel_name=kernel, cwd=str(folder), progress_bar=False,
                                               log_output=verbose, stdout_file=sink, stderr_file=sink)
            except papermill.PapermillExecutionError as error:
                raise _failure(notebook, executed, error) from None
            export_html(executed, html)
            seconds = round(time.monotonic() - started, 1)
            results.append(NotebookResult(stage, executed, html, seconds))
            timings.append((stage, seconds, "ran"))
            emit(f"{label} done in {seconds:.0f} s: {terminal.stage_summary(run, stage)}")
    if any(r.seconds > 0 for r in results) and (run.report_dir / "results.json").is_file():
        from alignkit import report

        report.build(run)  # again, now that every notebook export exists to be linked
    emit("stage times:\n" + terminal.seconds_table(timings))
    return results


def run_compare(sweep_id: str, run_ids: list[str], suite: str = "") -> NotebookResult:
    """Execute ``notebooks/07_compare.ipynb`` for a sweep's runs; it writes ``reports/<sweep_id>/compare.html``.
    The executed copy and its HTML export land in ``reports/<sweep_id>/``."""
    import papermill

    notebook = notebooks_dir() / "07_compare.ipynb"
    out_dir = reports_root() / sweep_id
    out_dir.mkdir(parents=True, exist_ok=True)
    executed, html = out_dir / "07_compare.ipynb", out_dir / "07_compare.html"
    started = time.monotonic()
    logging.getLogger("papermill").setLevel(logging.WARNING)
    with (out_dir / "compare.log").open("w", encoding="utf-8") as sink:
        try:
            papermill.execute_notebook(str(notebook), str(executed), kernel_name=ensure_kernel(),
                                       parameters={"sweep_id": sweep_id, "run_ids": ",".join(run_ids), "suite": suite},
                                       cwd=str(notebooks_dir()), progress_bar=False, stdout_file=sink, stderr_file=sink)
        except papermill.PapermillExecutionError as error:
            raise _failure(notebook, executed, error) from None
    export_html(executed, html)
    return NotebookResult("07_compare", executed, html, round(time.monotonic() - started, 1))


__all__ = ["STAGES", "NotebookFailed", "NotebookResult", "ensure_kernel", "export_html", "run_compare",
           "run_notebooks"]
