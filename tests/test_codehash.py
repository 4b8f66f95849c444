"""Tests for alignkit.codehash: which files a module's code hash covers, and when the hash changes."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from alignkit import codehash
from alignkit.codehash import checkout_dirty, code_hash, module_closure
from alignkit.config import STAGE_MODULES as MODULES

REPO_ROOT = Path(codehash.__file__).resolve().parent.parent

# A small fake package, so that editing files never touches the real one. What each module imports:
FAKE = {
    "alignkit/__init__.py": '"""fake"""\n__version__ = "0"\n',
    "alignkit/util.py": "# helper constants\nVALUE = 1\n",
    "alignkit/scorer.py": "from alignkit import util  # scorer\n\ndef score():\n    return util.VALUE\n",
    # function-level import of scorer, module-level `from alignkit.util import NAME`, and a non-alignkit import
    "alignkit/stage_a.py": ("import os\nfrom alignkit.util import VALUE\n\n"
                            "def run():\n    from alignkit import scorer\n"),
    # relative import; `alignkitx` only shares a prefix with the package and must be ignored
    "alignkit/stage_b.py": "import alignkitx\nfrom . import util\n",
    # a subpackage: importing alignkit.sub.inner runs alignkit/sub/__init__.py, which imports .helper
    "alignkit/stage_c.py": "from alignkit.sub.inner import thing\n",
    "alignkit/sub/__init__.py": "from .helper import H\n",
    "alignkit/sub/helper.py": "H = 2\n",
    "alignkit/sub/inner.py": "from .. import util\nthing = 1\n",
    # importlib with a literal name, and `import alignkit.x as y`
    "alignkit/stage_d.py": ("import importlib\nimport alignkit.util as u\n"
                            "S = importlib.import_module('alignkit.scorer')\n"),
    "alignkit/unused.py": "X = 0\n",
}


def make_tree(root: Path) -> Path:
    for name, text in FAKE.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


@pytest.fixture(autouse=True)
def _fresh_cache():
    codehash.clear_cache()
    yield
    codehash.clear_cache()


def names(paths: list[Path], root: Path) -> list[str]:
    return [p.relative_to(root).as_posix() for p in paths]


# ---------------------------------------------------------------------------------------------- the real package
_IMPORTS_SCORING = re.compile(r"^\s*(from alignkit(?:\.eval)? import .*\bscoring\b|from alignkit\.eval\.scoring import|"
                              r"import alignkit\.scoring|from \. import .*\bscoring\b)", re.MULTILINE)


def test_sft_closure_excludes_scoring_and_evaluation_includes_it():
    sft = names(module_closure("alignkit.stages.sft"), REPO_ROOT)
    evaluation = names(module_closure("alignkit.stages.evaluation"), REPO_ROOT)
    assert "alignkit/eval/scoring.py" not in sft
    assert "alignkit/eval/scoring.py" in evaluation
    # Read the code independently: no file of sft's closure has an import statement naming scoring...
    assert [n for n in sft if _IMPORTS_SCORING.search((REPO_ROOT / n).read_text())] == []
    # ...while evaluation.py itself imports it at module level.
    assert _IMPORTS_SCORING.search((REPO_ROOT / "alignkit/stages/evaluation.py").read_text())
    # Function-level imports count: sft.py imports masks and training only inside functions.
    assert {"alignkit/__init__.py", "alignkit/stages/sft.py", "alignkit/masks.py", "alignkit/training.py",
            "alignkit/runs.py", "alignkit/threads.py"} <= set(sft)


@pytest.mark.parametrize("module", sorted(MODULES.values()))
def test_every_stage_module_has_a_closure_starting_from_its_own_file(module):
    closure = names(module_closure(module), REPO_ROOT)
    assert module.replace(".", "/") + ".py" in closure
    assert "alignkit/__init__.py" in closure
    assert closure == sorted(closure)
    assert all(n.startswith("alignkit/") and n.endswith(".py") for n in closure)


def test_real_code_hash_is_stable_across_calls_and_cache_clears():
    first = code_hash("alignkit.stages.sft")
    assert code_hash("alignkit.stages.sft") == first
    codehash.clear_cache()
    assert code_hash("alignkit.stages.sft") == first
    assert re.fullmatch(r"[0-9a-f]{64}", first)
    assert code_hash("alignkit.stages.evaluation") != first


# ---------------------------------------------------------------------------------------------- a fake package
def test_fake_tree_closures(tmp_path):
    root = make_tree(tmp_path / "tree")
    assert names(module_closure("alignkit.stage_a", root), root) == [
        "alignkit/__init__.py", "alignkit/scorer.py", "alignkit/stage_a.py", "alignkit/util.py"]
    assert names(module_closure("alignkit.stage_b", root), root) == [
        "alignkit/__init__.py", "alignkit/stage_b.py", "alignkit/util.py"]
    assert names(module_closure("alignkit.stage_c", root), root) == [
        "alignkit/__init__.py", "alignkit/stage_c.py", "alignkit/sub/__init__.py", "alignkit/sub/helper.py",
        "alignkit/sub/inner.py", "alignkit/util.py"]
    assert names(module_closure("alignkit.stage_d", root), root) == [
        "alignkit/__init__.py", "alignkit/scorer.py", "alignkit/stage_d.py", "alignkit/util.py"]
    assert names(module_closure("alignkit", root), root) == ["alignkit/__init__.py"]


def test_editing_a_comment_changes_the_hash_of_importers_only(tmp_path):
    root = make_tree(tmp_path / "tree")
    modules = ["alignkit.stage_a", "alignkit.stage_b", "alignkit.stage_c", "alignkit.stage_d", "alignkit.util"]
    before = {m: code_hash(m, root) for m in modules}
    scorer = root / "alignkit/scorer.py"
    scorer.write_text(scorer.read_text().replace("# scorer", "# the scorer, reworded"))
    # Within one process the hash stays that of the code first hashed (the code this process imported)...
    assert {m: code_hash(m, root) for m in modules} == before
    codehash.clear_cache()
    after = {m: code_hash(m, root) for m in modules}
    # ...and afresh, only the modules whose closure holds scorer.py changed.
    assert {m for m in modules if after[m] != before[m]} == {"alignkit.stage_a", "alignkit.stage_d"}


def test_editing_a_shared_module_changes_every_importer(tmp_path):
    root = make_tree(tmp_path / "tree")
    modules = ["alignkit.stage_a", "alignkit.stage_b", "alignkit.stage_c", "alignkit.stage_d", "alignkit.unused"]
    before = {m: code_hash(m, root) for m in modules}
    (root / "alignkit/util.py").write_text("# helper constants (edited)\nVALUE = 1\n")
    codehash.clear_cache()
    changed = {m for m in modules if code_hash(m, root) != before[m]}
    assert changed == {"alignkit.stage_a", "alignkit.stage_b", "alignkit.stage_c", "alignkit.stage_d"}


def test_hash_is_stable_and_location_independent(tmp_path):
    one = make_tree(tmp_path / "one")
    two = make_tree(tmp_path / "two")
    first = code_hash("alignkit.stage_c", one)
    assert code_hash("alignkit.stage_c", one) == first
    codehash.clear_cache()
    assert code_hash("alignkit.stage_c", one) == first
    assert code_hash("alignkit.stage_c", two) == first


def test_a_new_import_adds_the_file_to_the_closure_and_changes_the_hash(tmp_path):
    root = make_tree(tmp_path / "tree")
    before = code_hash("alignkit.stage_b", root)
    (root / "alignkit/stage_b.py").write_text(FAKE["alignkit/stage_b.py"] + "from alignkit import unused\n")
    codehash.clear_cache()
    assert "alignkit/unused.py" in names(module_closure("alignkit.stage_b", root), root)
    assert code_hash("alignkit.stage_b", root) != before


def test_unknown_or_foreign_module_is_refused(tmp_path):
    root = make_tree(tmp_path / "tree")
    with pytest.raises(ModuleNotFoundError, match=r"'alignkit\.nope': no alignkit/nope\.py"):
        module_closure("alignkit.nope", root)
    with pytest.raises(ValueError, match="only alignkit modules"):
        module_closure("os.path", root)


def test_syntax_error_names_the_file_and_line(tmp_path):
    root = make_tree(tmp_path / "tree")
    (root / "alignkit/util.py").write_text("VALUE = 1\ndef broken(:\n")
    with pytest.raises(SyntaxError, match=r"util\.py:2: cannot parse it"):
        module_closure("alignkit.stage_b", root)


# ---------------------------------------------------------------------------------------------- checkout_dirty
def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-C", str(root), *args],
                   check=True, capture_output=True, timeout=30)


@pytest.mark.skipif(shutil.which("git") is None, reason="needs the git command")
def test_checkout_dirty(tmp_path):
    root = make_tree(tmp_path / "repo")
    assert checkout_dirty(root) is None  # not a git checkout
    _git(root, "init", "-q")
    assert checkout_dirty(root) is None  # a repository, but the package is not tracked in it
    _git(root, "add", "alignkit")
    _git(root, "commit", "-q", "-m", "fake")
    assert checkout_dirty(root) is False
    (root / "alignkit/__pycache__").mkdir()
    (root / "alignkit/__pycache__/util.cpython-311.pyc").write_bytes(b"\0")
    assert checkout_dirty(root) is False  # compiled files are not code changes
    (root / "notes.txt").write_text("outside the package")
    assert checkout_dirty(root) is False
    (root / "alignkit/util.py").write_text("# edited\nVALUE = 1\n")
    assert checkout_dirty(root) is True
    (root / "alignkit/util.py").write_text(FAKE["alignkit/util.py"])
    assert checkout_dirty(root) is False
    (root / "alignkit/new_module.py").write_text("")
    assert checkout_dirty(root) is True  # an untracked file in the package counts
