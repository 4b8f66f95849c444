"""Tests for alignkit.runs: stage names, run ids, manifests and the stage cache, in a temporary ALIGNKIT_HOME."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from alignkit import files, runs
from alignkit.config import STAGES, ConfigError, StudyConfig
from alignkit.runs import (
    MANIFEST,
    Run,
    StageInputError,
    check_run_id,
    execute_stage,
    fresh_dir,
    stage_name,
    stage_range,
)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _tmp_home(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNKIT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ALIGNKIT_REPORTS", str(tmp_path / "reports"))


@pytest.fixture
def run(tmp_path) -> Run:
    """The view of training seed 0: stage 02 (a per-seed stage) lives in 02_sft_training/seed0/."""
    return Run(run_id="t1", config=StudyConfig()).for_seed(0)


def _view(config: StudyConfig, seed: int = 0) -> Run:
    return Run(run_id="t1", config=config.replace(seeds=(seed,))).for_seed(seed)


# ---------------------------------------------------------------------------------------------- names
@pytest.mark.parametrize("token, expected", [
    ("1", "01_sft_data"), ("01", "01_sft_data"), ("01_sft_data", "01_sft_data"),
    ("2", "02_sft_training"), ("02", "02_sft_training"), ("3", "03_negatives"),
    ("4", "04_preference_pairs"), ("05", "05_dpo_training"), ("6", "06_evaluation"), ("06_evaluation", "06_evaluation"),
])
def test_stage_name(token, expected):
    assert stage_name(token) == expected


@pytest.mark.parametrize("token", ["0", "00", "7", "07", "", "sft", "02_sft", "1.5", "-1"])
def test_stage_name_rejects_unknown(token):
    with pytest.raises(ConfigError) as info:
        stage_name(token)
    message = str(info.value)
    assert repr(token) in message
    assert all(stage in message for stage in STAGES)  # says what would have been accepted


@pytest.mark.parametrize("spec, expected", [
    ("all", list(STAGES)),
    ("", list(STAGES)),
    ("01-03", ["01_sft_data", "02_sft_training", "03_negatives"]),
    ("1-6", list(STAGES)),
    ("2,5", ["02_sft_training", "05_dpo_training"]),
    ("5,2", ["02_sft_training", "05_dpo_training"]),  # always in pipeline order
    ("4", ["04_preference_pairs"]),
    ("3-3", ["03_negatives"]),
    ("1-2,5-6", ["01_sft_data", "02_sft_training", "05_dpo_training", "06_evaluation"]),
    ("1-3,2", ["01_sft_data", "02_sft_training", "03_negatives"]),  # duplicates collapse
    ("02_sft_training-04_preference_pairs", ["02_sft_training", "03_negatives", "04_preference_pairs"]),
])
def test_stage_range(spec, expected):
    assert stage_range(spec) == expected


def test_stage_range_backwards_is_an_error():
    with pytest.raises(ConfigError, match=r"--stages '5-2': range '5-2' runs backwards"):
        stage_range("5-2")


@pytest.mark.parametrize("spec", ["1-", "-3", "1-9", "x", "1,,2"])
def test_stage_range_bad_parts(spec):
    with pytest.raises(ConfigError, match="stage"):
        stage_range(spec)


@pytest.mark.parametrize("run_id", ["tiny", "tiny-seed1", "a.b_c-1", "A", "9" * 100])
def test_check_run_id_accepts(run_id):
    assert check_run_id(run_id) == run_id


@pytest.mark.parametrize("run_id", ["../x", "a/b", "", "..", ".", ".hidden", "a..b", "a b", "a\\b", "/abs",
                                    "x" * 101, "-lead", "a\nb", "é"])
def test_check_run_id_rejects(run_id):
    with pytest.raises(ConfigError, match="run_id"):
        check_run_id(run_id)


def test_run_rejects_bad_id_on_construction():
    with pytest.raises(ConfigError, match="run_id"):
        Run(run_id="../escape", config=StudyConfig())


def test_run_paths_follow_environment(tmp_path, run):
    assert runs.home() == (tmp_path / "home").resolve()
    assert run.dir == (tmp_path / "home" / "runs" / "t1").resolve()
    assert run.stage_dir("2") == run.dir / "02_sft_training" / "seed0"
    assert run.report_dir == (tmp_path / "reports" / "t1").resolve()
    assert run.models_dir == (tmp_path / "home" / "models").resolve()


# ---------------------------------------------------------------------------------------------- execute_stage
class Body:
    """A toy stage body: writes ``out.jsonl`` (rows from the input file) and a folder output; counts calls."""

    def __init__(self, input_path: Path | None = None, fail: BaseException | None = None):
        self.calls = 0
        self.input_path = input_path
        self.fail = fail

    def __call__(self, ctx: runs.StageContext) -> None:
        self.calls += 1
        lines = self.input_path.read_text().splitlines() if self.input_path else ["a", "b", "c"]
        n = files.write_jsonl(ctx.path("out.jsonl"), ({"line": line} for line in lines))
        ctx.add_output("rows", ctx.path("out.jsonl"), rows=n)
        folder = ctx.path("model")
        folder.mkdir(exist_ok=True)
        files.write_text(folder / "weights.txt", "w" * n)
        ctx.add_output("model", folder)
        ctx.summary["n"] = n
        if self.fail is not None:
            raise self.fail


@pytest.fixture
def input_file(tmp_path) -> Path:
    path = tmp_path / "inputs" / "source.txt"
    path.parent.mkdir()
    path.write_text("x\ny\n")
    return path


def _run_stage(run, body, input_file, force=False):
    return execute_stage(run, "2", inputs={"source": input_file}, body=body, force=force)


def test_execute_stage_writes_outputs_and_complete_manifest(run, input_file):
    body = Body(input_file)
    before = time.time()
    manifest = _run_stage(run, body, input_file)
    assert body.calls == 1
    stage_dir = run.dir / "02_sft_training" / "seed0"
    on_disk = files.read_json(stage_dir / MANIFEST)
    assert on_disk == manifest
    assert manifest["status"] == "complete"
    assert manifest["stage"] == "02_sft_training"
    assert manifest["run_id"] == "t1"
    assert manifest["preset"] == "tiny"
    assert manifest["seed"] == 0
    assert manifest["config"] == {"seed": {"seed": 0}, "model": run.config.section("model"),
                                  "sft": run.config.section("sft")}
    assert manifest["code"]["module"] == "alignkit.stages.sft" and len(manifest["code"]["hash"]) == 64
    # Inputs: path and content hash.
    assert manifest["inputs"] == {"source": {"path": str(input_file), "sha256": files.sha256_file(input_file)}}
    # Outputs: run-relative path, sha256 and row count.
    rows = manifest["outputs"]["rows"]
    assert rows == {"path": "02_sft_training/seed0/out.jsonl", "sha256": files.sha256_file(stage_dir / "out.jsonl"),
                    "rows": 2}
    model = manifest["outputs"]["model"]
    assert model == {"path": "02_sft_training/seed0/model", "sha256": files.sha256_tree(stage_dir / "model"), "rows": None}
    assert files.read_jsonl(stage_dir / "out.jsonl") == [{"line": "x"}, {"line": "y"}]
    assert manifest["summary"] == {"n": 2}
    # Provenance.
    versions = manifest["versions"]
    assert versions["python"] == ".".join(map(str, sys.version_info[:3]))
    for name in ("torch", "transformers", "trl", "peft", "datasets", "accelerate", "tokenizers", "numpy"):
        assert name in versions
    import torch

    assert versions["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert "git_commit" in manifest
    if manifest["git_commit"] is not None:
        assert len(manifest["git_commit"].removesuffix("+dirty")) == 40
    import datetime as dt

    started = dt.datetime.fromisoformat(manifest["started"])
    finished = dt.datetime.fromisoformat(manifest["finished"])
    assert started.tzinfo is not None
    assert before - 1 <= started.timestamp() <= finished.timestamp() <= time.time() + 1
    assert manifest["seconds"] >= 0
    assert isinstance(manifest["fingerprint"], str) and len(manifest["fingerprint"]) == 16
    # How the CPU thread count followed the load in this process (None where the count is fixed).
    from alignkit import threads

    assert manifest["cpu_threads"] == threads.follower_summary()
    # The manifest is the only extra file: no temp files left in the stage folder.
    assert sorted(p.name for p in stage_dir.iterdir()) == [MANIFEST, "model", "out.jsonl"]


def test_a_stage_whose_thread_count_changed_says_its_last_bits_may_differ(run, input_file, monkeypatch, caplog):
    import logging

    from alignkit import threads

    machine_cpus = {0, 1}
    follower = threads.LoadFollower(2, machine_cpus, read_stat=lambda: "cpu0 0 0 0 0 0 0 0 0\n",
                                    set_threads=lambda n: None)
    monkeypatch.setattr(threads, "_FOLLOWER", follower)

    class Contended(Body):
        def __call__(self, ctx):
            super().__call__(ctx)
            follower.changes, follower.lowest = follower.changes + 1, 1  # as if a neighbour had come

    with caplog.at_level(logging.WARNING, logger="alignkit.runs"):
        manifest = _run_stage(run, Contended(input_file), input_file)
    assert manifest["cpu_threads"] == {"ceiling": 2, "lowest": 1, "changes": 1, "now": 2}
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "thread count changed during this stage (lowest 1 of 2)" in warning
    assert "ALIGNKIT_THREAD_POLICY=fixed" in warning
    # A stage during which the count stayed put says nothing.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="alignkit.runs"):
        _run_stage(run, Body(input_file), input_file, force=True)
    assert "thread count changed" not in caplog.text


def test_second_call_is_cached(run, input_file):
    body = Body(input_file)
    first = _run_stage(run, body, input_file)
    second = _run_stage(run, body, input_file)
    assert body.calls == 1
    assert second == first


def test_cache_survives_a_new_run_object(run, input_file):
    body = Body(input_file)
    _run_stage(run, body, input_file)
    again = Run(run_id="t1", config=StudyConfig()).for_seed(0)
    _run_stage(again, body, input_file)
    assert body.calls == 1


def test_changing_the_config_section_reruns(run, input_file):
    body = Body(input_file)
    _run_stage(run, body, input_file)
    cfg = run.config
    changed = _view(cfg.replace(sft=cfg.sft.replace(epochs=7.0)))
    manifest = _run_stage(changed, body, input_file)
    assert body.calls == 2
    assert manifest["config"]["sft"]["epochs"] == 7.0


def test_changing_the_seed_reruns(run, input_file):
    body = Body(input_file)
    _run_stage(run, body, input_file)
    _run_stage(_view(run.config, seed=5), body, input_file)
    assert body.calls == 2


def test_changing_an_unrelated_section_stays_cached(run, input_file):
    body = Body(input_file)
    _run_stage(run, body, input_file)
    cfg = run.config
    other = _view(cfg.replace(dpo=cfg.dpo.replace(beta=0.5)))
    _run_stage(other, body, input_file)
    assert body.calls == 1


def test_changing_an_input_files_content_reruns(run, input_file):
    body = Body(input_file)
    _run_stage(run, body, input_file)
    input_file.write_text("x\ny\nz\n")
    manifest = _run_stage(run, body, input_file)
    assert body.calls == 2
    assert manifest["outputs"]["rows"]["rows"] == 3
    assert manifest["inputs"]["source"]["sha256"] == files.sha256_file(input_file)


def test_touching_an_input_without_changing_content_stays_cached(run, input_file):
    body = Body(input_file)
    _run_stage(run, body, input_file)
    os.utime(input_file, (time.time() + 100, time.time() + 100))
    _run_stage(run, body, input_file)
    assert body.calls == 1


def test_changing_a_folder_input_reruns(run, tmp_path):
    folder = tmp_path / "base_model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    body = Body()
    execute_stage(run, "3", inputs={"model": folder}, body=body)
    execute_stage(run, "3", inputs={"model": folder}, body=body)
    assert body.calls == 1
    (folder / "config.json").write_text('{"changed": true}')
    execute_stage(run, "3", inputs={"model": folder}, body=body)
    assert body.calls == 2


def test_force_reruns(run, input_file):
    body = Body(input_file)
    _run_stage(run, body, input_file)
    manifest = _run_stage(run, body, input_file, force=True)
    assert body.calls == 2
    assert manifest["status"] == "complete"


def test_corrupted_output_reruns(run, input_file):
    body = Body(input_file)
    _run_stage(run, body, input_file)
    out = run.dir / "02_sft_training" / "seed0" / "out.jsonl"
    out.write_text('{"line": "tampered"}\n')
    _run_stage(run, body, input_file)
    assert body.calls == 2
    assert files.read_jsonl(out) == [{"line": "x"}, {"line": "y"}]


def test_deleted_output_reruns(run, input_file):
    body = Body(input_file)
    _run_stage(run, body, input_file)
    (run.dir / "02_sft_training" / "seed0" / "out.jsonl").unlink()
    _run_stage(run, body, input_file)
    assert body.calls == 2


def test_changed_file_inside_folder_output_reruns(run, input_file):
    body = Body(input_file)
    _run_stage(run, body, input_file)
    (run.dir / "02_sft_training" / "seed0" / "model" / "weights.txt").write_text("corrupt")
    _run_stage(run, body, input_file)
    assert body.calls == 2


def test_body_that_raises_leaves_failed_manifest_and_reraises(run, input_file):
    body = Body(input_file, fail=RuntimeError("disk full"))
    with pytest.raises(RuntimeError, match="disk full"):
        _run_stage(run, body, input_file)
    manifest = files.read_json(run.dir / "02_sft_training" / "seed0" / MANIFEST)
    assert manifest["status"] == "failed"
    assert manifest["error"] == "RuntimeError: disk full"
    assert "outputs" not in manifest
    assert run.manifest("2") is None
    # A failed stage is never taken as cached: the next call runs the body again.
    body.fail = None
    assert _run_stage(run, body, input_file)["status"] == "complete"
    assert body.calls == 2


def test_failure_after_a_complete_run_replaces_the_complete_manifest(run, input_file):
    body = Body(input_file)
    _run_stage(run, body, input_file)
    body.fail = ValueError("bad")
    with pytest.raises(ValueError):
        _run_stage(run, body, input_file, force=True)
    assert run.manifest("2") is None
    assert files.read_json(run.dir / "02_sft_training" / "seed0" / MANIFEST)["status"] == "failed"


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt(), SystemExit(3), GeneratorExit()])
def test_interrupted_body_leaves_no_complete_manifest(run, input_file, interrupt):
    body = Body(input_file, fail=interrupt)
    with pytest.raises(type(interrupt)):
        _run_stage(run, body, input_file)
    assert run.manifest("2") is None
    assert files.read_json(run.dir / "02_sft_training" / "seed0" / MANIFEST)["status"] != "complete"


def test_manifest_says_running_while_the_body_runs(run, input_file):
    seen = {}

    def body(ctx):
        seen["status"] = files.read_json(ctx.dir / MANIFEST)["status"]
        seen["manifest"] = run.manifest("2")

    _run_stage(run, body, input_file)
    assert seen == {"status": "running", "manifest": None}


def test_killed_process_leaves_a_running_manifest(tmp_path):
    # A real SIGKILL mid-body: no handler runs, so only "running" (never "complete") can be on disk.
    home = tmp_path / "home"
    started = tmp_path / "started"
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from alignkit.config import StudyConfig
        from alignkit.runs import Run, execute_stage

        def body(ctx):
            Path({str(started)!r}).write_text("x")
            time.sleep(60)

        execute_stage(Run(run_id="k", config=StudyConfig()), "1", inputs={{}}, body=body)
    """)
    env = {**os.environ, "ALIGNKIT_HOME": str(home), "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        deadline = time.monotonic() + 30
        while not started.exists():
            assert proc.poll() is None, "the child exited before its body ran"
            assert time.monotonic() < deadline, "the child never started its body"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    manifest = files.read_json(home / "runs" / "k" / "01_sft_data" / MANIFEST)
    assert manifest["status"] == "running"
    assert Run(run_id="k", config=StudyConfig(), root=home).manifest("1") is None


def test_add_output_rejects_a_missing_path(run):
    def body(ctx):
        ctx.add_output("ghost", ctx.path("nope.jsonl"))

    with pytest.raises(FileNotFoundError, match=r"nope\.jsonl: stage 01_sft_data registered an output"):
        execute_stage(run, "1", inputs={}, body=body)
    assert run.manifest("1") is None


def test_missing_input_file_fails_before_the_body(run, tmp_path):
    body = Body()
    with pytest.raises(FileNotFoundError):
        execute_stage(run, "1", inputs={"x": tmp_path / "missing.txt"}, body=body)
    assert body.calls == 0


# ---------------------------------------------------------------------------------------------- require/output
def test_require_missing_names_manifest_and_command(run):
    with pytest.raises(StageInputError) as info:
        run.require("01_sft_data")
    message = str(info.value)
    assert str(run.dir / "01_sft_data" / MANIFEST) in message
    assert "alignkit run --preset tiny --run-id t1 --stages 01" in message


def test_require_accepts_a_stage_number(run):
    with pytest.raises(StageInputError) as info:
        run.require("2")
    message = str(info.value)
    assert str(run.dir / "02_sft_training" / "seed0" / MANIFEST) in message
    # The suggested command must name the same stage, whatever spelling the caller used.
    suggested = message.split("--stages ", 1)[1].split()[0]
    assert stage_range(suggested) == ["02_sft_training"]


def test_require_incomplete_manifest_is_an_error(run, input_file):
    with pytest.raises(RuntimeError):
        _run_stage(run, Body(input_file, fail=RuntimeError("x")), input_file)
    with pytest.raises(StageInputError, match="missing or incomplete"):
        run.require("02_sft_training")


def test_require_and_output_after_a_complete_stage(run, input_file):
    manifest = _run_stage(run, Body(input_file), input_file)
    assert run.require("02_sft_training") == manifest
    assert run.output("02_sft_training", "rows") == run.dir / "02_sft_training" / "seed0" / "out.jsonl"
    assert run.output("2", "model") == run.dir / "02_sft_training" / "seed0" / "model"


def test_output_unknown_name_lists_known_outputs(run, input_file):
    _run_stage(run, Body(input_file), input_file)
    with pytest.raises(StageInputError) as info:
        run.output("02_sft_training", "pairs")
    message = str(info.value)
    assert str(run.dir / "02_sft_training" / "seed0" / MANIFEST) in message
    assert "'pairs'" in message and "model, rows" in message


def test_output_missing_file_says_to_rerun_with_force(run, input_file):
    _run_stage(run, Body(input_file), input_file)
    path = run.dir / "02_sft_training" / "seed0" / "out.jsonl"
    path.unlink()
    with pytest.raises(StageInputError) as info:
        run.output("02_sft_training", "rows")
    assert str(path) in str(info.value)
    assert "--force" in str(info.value)


def test_output_of_a_missing_stage_names_the_command(run):
    with pytest.raises(StageInputError, match="--stages 03"):
        run.output("03_negatives", "negatives")


def test_output_detects_a_corrupted_file(run, input_file):
    _run_stage(run, Body(input_file), input_file)
    (run.dir / "02_sft_training" / "seed0" / "out.jsonl").write_text('{"line": "tampered"}\n')
    with pytest.raises(StageInputError):
        run.output("02_sft_training", "rows")


# ---------------------------------------------------------------------------------------------- fresh_dir
def test_fresh_dir_replaces_the_folder(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.bin").write_text("old")
    with fresh_dir(target) as tmp:
        assert tmp != target and tmp.parent == tmp_path
        assert list(tmp.iterdir()) == []
        assert (target / "old.bin").exists()  # the old folder stays until the new one is complete
        (tmp / "new.bin").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new.bin"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_fresh_dir_creates_a_new_folder(tmp_path):
    target = tmp_path / "a" / "model"
    with fresh_dir(target) as tmp:
        (tmp / "f").write_text("1")
    assert (target / "f").read_text() == "1"
    assert sorted(p.name for p in target.parent.iterdir()) == ["model"]


def test_fresh_dir_failure_leaves_old_folder_and_no_temp(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.bin").write_text("old")
    with pytest.raises(RuntimeError, match="oom"):
        with fresh_dir(target) as tmp:
            (tmp / "half.bin").write_text("half")
            raise RuntimeError("oom")
    assert sorted(p.name for p in target.iterdir()) == ["old.bin"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_fresh_dir_full_disk_is_one_line_naming_the_folder(tmp_path):
    """A model save that runs out of space (as safetensors' OSError would) keeps the old folder and says which."""
    import errno

    target = tmp_path / "model"
    target.mkdir()
    (target / "old.bin").write_text("old")
    with pytest.raises(files.WriteFailed) as info:
        with fresh_dir(target) as tmp:
            (tmp / "half.bin").write_text("half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp / "model.safetensors"))
    assert str(info.value).startswith(f"cannot write {target}: no space left on device; ")
    assert "\n" not in str(info.value) and info.value.errno == errno.ENOSPC
    assert sorted(p.name for p in target.iterdir()) == ["old.bin"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_fresh_dir_failure_without_old_folder_leaves_nothing(tmp_path):
    target = tmp_path / "model"
    with pytest.raises(KeyboardInterrupt):
        with fresh_dir(target) as tmp:
            (tmp / "half.bin").write_text("half")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_fresh_dir_clears_a_stale_temp_from_an_earlier_crash(tmp_path):
    target = tmp_path / "model"
    stale = tmp_path / ".model.tmp"
    stale.mkdir()
    (stale / "leftover.bin").write_text("stale")
    with fresh_dir(target) as tmp:
        assert list(tmp.iterdir()) == []
        (tmp / "new.bin").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new.bin"]
    assert not stale.exists()


# ---------------------------------------------------------------------------------------------- seeds, code, sharing
def test_a_per_seed_stage_needs_a_seed_view():
    whole = Run(run_id="t1", config=StudyConfig(seeds=(0, 1)))
    with pytest.raises(StageInputError, match="once per training seed"):
        whole.stage_dir("02")
    assert [v.stage_dir("02").name for v in whole.seed_views()] == ["seed0", "seed1"]
    assert whole.for_seed(1).config.seed == 1 and whole.for_seed(1).stage_dir("01") == whole.dir / "01_sft_data"
    with pytest.raises(ConfigError, match="not one of this run's training seeds"):
        whole.for_seed(7)


def test_edited_code_reruns_and_unchanged_code_does_not(run, input_file, monkeypatch):
    body = Body(input_file)
    _run_stage(run, body, input_file)
    _run_stage(run, body, input_file)
    assert body.calls == 1
    real = runs.stage_code
    monkeypatch.setattr(runs, "stage_code", lambda stage: {**real(stage), "hash": "0" * 64})
    assert not runs.is_cached(run, "02")
    _run_stage(run, body, input_file)
    assert body.calls == 2


def test_another_run_shares_an_identical_stage_by_hard_links(input_file):
    first = Run(run_id="first", config=StudyConfig()).for_seed(0)
    second = Run(run_id="second", config=StudyConfig()).for_seed(0)
    body = Body(input_file)
    made = _run_stage(first, body, input_file)
    shared = _run_stage(second, body, input_file)
    assert body.calls == 1  # taken from the first run, not computed again
    assert shared["adopted_from"]["run_id"] == "first" and shared["run_id"] == "second"
    assert shared["fingerprint"] == made["fingerprint"] and shared["outputs"] == made["outputs"]
    out_first, out_second = first.output("02", "rows"), second.output("02", "rows")
    assert out_second.read_text() == out_first.read_text()
    assert os.stat(out_first).st_ino == os.stat(out_second).st_ino  # a hard link: no second copy on disk
    assert runs.is_cached(second, "02")
    # A different config is not shared.
    cfg = StudyConfig()
    third = _view(cfg.replace(sft=cfg.sft.replace(epochs=9.0)))
    third = Run(run_id="third", config=third.config).for_seed(0)
    _run_stage(third, body, input_file)
    assert body.calls == 2
