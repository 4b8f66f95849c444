"""``alignkit doctor`` reports each check with one line, and a problem as PROBLEM with the fix."""

from __future__ import annotations

from alignkit import doctor


def test_doctor_checks_this_machine(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("ALIGNKIT_HOME", str(tmp_path))
    names = [c.name for c in doctor.checks()]
    assert {"torch", "transformers", "trl", "peft", "bitsandbytes", "disk", "HF_HOME"} <= set(names)
    status = doctor.main()
    out = capsys.readouterr().out
    assert "[ok] torch" in out
    # The last line counts the PROBLEM lines above it, and the exit status agrees with it.
    flagged = [line for line in out.splitlines() if line.startswith("[PROBLEM]")]
    last = out.strip().splitlines()[-1]
    assert last == (f"{len(flagged)} problem(s) found" if flagged else "no problems found")
    assert status == (1 if flagged else 0)


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


def test_doctor_without_a_gpu_says_how_to_plan_for_a_pod(monkeypatch, tmp_path):
    monkeypatch.setenv("ALIGNKIT_HOME", str(tmp_path))
    plan = [c for c in doctor.checks() if c.name.startswith("memory plan")]
    assert len(plan) == 1 and plan[0].ok
    assert plan[0].line() == ("[ok] memory plan: no GPU to plan for; `alignkit plan --preset P --gpu-memory GIB` "
                              "sizes a pod before you rent it")


def test_doctor_plans_every_gpu_preset_on_the_gpu_found():
    (check,) = doctor.plan_checks(None, 23.6)  # what a "24 GB" card reports
    assert check.ok and check.name == "memory plan"
    assert check.detail.startswith("on 23.6 GiB: fits qwen2.5-0.5b (needs 15.4 GiB), qwen2.5-7b-qlora (needs 21.5 GiB)")
    assert check.detail.endswith("; does not fit qwen2.5-32b-qlora (needs 70.8 GiB)")
    (small,) = doctor.plan_checks(None, 8.0)
    assert not small.ok and "fits none" in small.detail and "no GPU preset fits this GPU" in small.detail


def test_doctor_flags_the_selected_preset_that_does_not_fit(capsys):
    (check,) = doctor.plan_checks("qwen2.5-32b-qlora", 47.5)
    assert check.name == "memory plan qwen2.5-32b-qlora" and not check.ok
    assert "does not fit: 01_sft_data (63.4 GiB: generate few-shot (base))" in check.detail
    assert "02_sft_training" in check.detail and "05_dpo_training" not in check.detail  # QLoRA DPO fits 48 GiB
    assert "-p <section>.batch_size=N" in check.detail
    (fine,) = doctor.plan_checks("qwen2.5-7b-qlora", 79.2)
    assert fine.ok and fine.detail.endswith("needs 21.5 of 79.2 GiB: fits")
    (wrong,) = doctor.plan_checks("no-such-preset", 80.0)
    assert not wrong.ok and "preset 'no-such-preset': not found" in wrong.detail
    status = doctor.main(["--preset", "qwen2.5-7b-qlora"])
    out = capsys.readouterr().out
    assert "[ok] memory plan: no GPU to plan for" in out  # the CPU test machine
    assert status == (1 if "[PROBLEM]" in out else 0)
