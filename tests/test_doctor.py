"""``alignkit doctor`` reports each check with one line, and a problem as PROBLEM with the fix."""

from __future__ import annotations

from alignkit import doctor


def test_doctor_checks_this_machine(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("ALIGNKIT_HOME", str(tmp_path))
    names = [c.name for c in doctor.checks()]
    assert {"torch", "transformers", "trl", "peft", "bitsandbytes", "disk", "HF_HOME"} <= set(names)
    doctor.main()
    out = capsys.readouterr().out
    assert "[ok] torch" in out and "problem" in out


def test_doctor_flags_hf_home_off_the_runpod_volume(monkeypatch, tmp_path):
    volume = tmp_path / "volume"
    volume.mkdir()
    monkeypatch.setenv("RUNPOD_POD_ID", "pod")
    monkeypatch.setenv("ALIGNKIT_VOLUME", str(volume))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "elsewhere"))
    flagged = [c for c in doctor.checks() if c.name == "HF_HOME on the volume"]
    assert flagged and not flagged[0].ok and f"export HF_HOME={volume}/hf" in flagged[0].line()


def test_low_disk_is_a_problem(monkeypatch, tmp_path):
    monkeypatch.setenv("ALIGNKIT_HOME", str(tmp_path))
    monkeypatch.setattr(doctor, "MIN_FREE_GIB", 1e9)
    disk = next(c for c in doctor.checks() if c.name == "disk")
    assert not disk.ok and "need at least" in disk.detail
