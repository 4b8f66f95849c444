"""Packaging consistency: environment.yml, pyproject.toml, installed versions, entry point and package data."""

from __future__ import annotations

import fnmatch
import importlib
import importlib.metadata
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parent.parent
#: Libraries whose behaviour decides results (tokenisation, masks, trainer defaults): pinned to a release series.
PINNED = ("transformers", "trl", "peft", "datasets", "accelerate")


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def environment() -> dict:
    return yaml.safe_load((REPO / "environment.yml").read_text(encoding="utf-8"))


def _requirements(pyproject: dict) -> dict[str, Requirement]:
    """Every requirement of the project, core and extras, by canonical name."""
    project = pyproject["project"]
    lines = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        lines.extend(extra)
    return {canonicalize_name(req.name): req for req in map(Requirement, lines)}


def _pip_section(environment: dict) -> list[str]:
    sections = [d["pip"] for d in environment["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(sections) == 1, "environment.yml needs exactly one pip section"
    return sections[0]


# ---------------------------------------------------------------------------------------------- environment.yml
def test_environment_has_python_311_and_pip(environment):
    conda = [d for d in environment["dependencies"] if isinstance(d, str)]
    pythons = [d for d in conda if re.match(r"^python\s*[=<>]", d)]
    assert pythons == ["python=3.11"]
    assert "pip" in conda


def test_environment_python_satisfies_requires_python(environment, pyproject):
    from packaging.specifiers import SpecifierSet

    requires = SpecifierSet(pyproject["project"]["requires-python"])
    assert "3.11" in requires
    assert sys.version_info[:2] == (3, 11), "tests run on the Python the environment pins"


def test_environment_installs_the_package_with_existing_extras(environment, pyproject):
    installs = [line for line in _pip_section(environment) if re.match(r"^(-e\s+)?\.(\[|$)", line)]
    assert len(installs) == 1, f"expected one '-e .[extras]' line in the pip section, got {installs}"
    match = re.match(r"^(?:-e\s+)?\.\[([^\]]*)\]$", installs[0])
    assert match, f"{installs[0]!r}: expected '.[extra,...]'"
    extras = [e.strip() for e in match.group(1).split(",") if e.strip()]
    known = set(pyproject["project"]["optional-dependencies"])
    assert extras and set(extras) <= known, f"extras {extras} not all in pyproject's {sorted(known)}"
    assert "dev" in extras  # the environment is for running the tests and notebooks too


def test_environment_pins_satisfy_pyproject(environment, pyproject):
    requirements = _requirements(pyproject)
    pinned = []
    for line in _pip_section(environment):
        if line.startswith("-") or line.startswith("."):
            continue
        req = Requirement(line)
        specs = list(req.specifier)
        if len(specs) == 1 and specs[0].operator == "==":
            pinned.append(req.name)
            version = specs[0].version
            name = canonicalize_name(req.name)
            assert name in requirements, f"environment.yml pins {req.name}, which pyproject does not require"
            assert requirements[name].specifier.contains(version, prereleases=True), (
                f"environment.yml pins {req.name}=={version}, outside pyproject's {requirements[name]}")
    assert "torch" in pinned


def test_makefile_torch_pin_matches_environment(environment):
    # `make setup` installs torch itself when none is importable; it must be the same build as environment.yml.
    env_pin = next(line for line in _pip_section(environment) if line.startswith("torch=="))
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    assert re.findall(r"torch==[\w.]+", makefile) and set(re.findall(r"torch==[\w.]+", makefile)) == {env_pin}


# ---------------------------------------------------------------------------------------------- pins
@pytest.mark.parametrize("name", PINNED)
def test_pyproject_pins_with_double_equals(pyproject, name):
    req = _requirements(pyproject)[canonicalize_name(name)]
    specs = list(req.specifier)
    assert len(specs) == 1 and specs[0].operator == "==", f"{req}: pin {name} with == (a release series)"


@pytest.mark.parametrize("name", PINNED)
def test_installed_version_matches_pin(pyproject, name):
    req = _requirements(pyproject)[canonicalize_name(name)]
    installed = importlib.metadata.version(name)
    assert req.specifier.contains(installed), f"installed {name} {installed} does not satisfy {req}"


def test_every_core_dependency_is_installed_and_satisfied(pyproject):
    # The dev environment must match pyproject for everything the package needs at run time.
    problems = []
    for line in pyproject["project"]["dependencies"]:
        req = Requirement(line)
        try:
            installed = importlib.metadata.version(req.name)
        except importlib.metadata.PackageNotFoundError:
            problems.append(f"{req.name}: not installed")
            continue
        # Local build labels ("2.13.0+cpu") satisfy a plain range.
        if not req.specifier.contains(Version(installed).public, prereleases=True):
            problems.append(f"{req.name} {installed} does not satisfy {req}")
    assert problems == []


# ---------------------------------------------------------------------------------------------- entry point
def test_console_script_points_to_a_callable(pyproject):
    scripts = pyproject["project"]["scripts"]
    assert set(scripts) == {"alignkit"}
    module_name, _, attr = scripts["alignkit"].partition(":")
    target = getattr(importlib.import_module(module_name), attr)
    assert callable(target)


def test_console_script_runs_help(pyproject, capsys):
    module_name, _, attr = pyproject["project"]["scripts"]["alignkit"].partition(":")
    main = getattr(importlib.import_module(module_name), attr)
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for command in ("run", "config", "build-base", "validate"):
        assert command in out


def test_installed_entry_point_when_installed():
    try:
        dist = importlib.metadata.distribution("alignkit")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("alignkit is not pip-installed in this environment (the wheel test below covers it)")
    scripts = {ep.name: ep.value for ep in dist.entry_points if ep.group == "console_scripts"}
    assert scripts.get("alignkit") == "alignkit.cli:main"


def test_python_dash_m_alignkit_is_the_same_cli():
    main_module = (REPO / "alignkit" / "__main__.py").read_text(encoding="utf-8")
    assert "from alignkit.cli import main" in main_module


# ---------------------------------------------------------------------------------------------- package data
def test_every_preset_yaml_is_package_data(pyproject):
    globs = pyproject["tool"]["setuptools"]["package-data"]["alignkit"]
    presets = sorted((REPO / "alignkit" / "presets").glob("*.yaml"))
    assert presets, "no presets found"
    for path in presets:
        relative = path.relative_to(REPO / "alignkit").as_posix()
        assert any(fnmatch.fnmatch(relative, pattern) for pattern in globs), f"{relative} is not package data"


def test_presets_found_by_config_match_the_files():
    from alignkit.config import available_presets

    assert available_presets() == sorted(p.stem for p in (REPO / "alignkit" / "presets").glob("*.yaml"))


def test_wheel_ships_presets_and_entry_point(tmp_path):
    # Build the wheel offline from a copy (no build isolation: uses this environment's setuptools), so the
    # checkout gets no build/ or *.egg-info folders.
    pytest.importorskip("setuptools")
    source = tmp_path / "src"
    source.mkdir()
    shutil.copy(REPO / "pyproject.toml", source)
    if (REPO / "README.md").exists():
        shutil.copy(REPO / "README.md", source)
    shutil.copytree(REPO / "alignkit", source / "alignkit", ignore=shutil.ignore_patterns("__pycache__"))
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "--no-index",
                             "-q", str(source), "-w", str(tmp_path / "dist")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    [wheel] = list((tmp_path / "dist").glob("alignkit-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    for path in (REPO / "alignkit" / "presets").glob("*.yaml"):
        assert f"alignkit/presets/{path.name}" in names
    for path in (REPO / "alignkit").glob("*.py"):
        assert f"alignkit/{path.name}" in names
    assert re.search(r"^\[console_scripts\]\s*\nalignkit = alignkit\.cli:main$", entry_points, flags=re.M)
