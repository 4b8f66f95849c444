"""The code that computes a stage, as part of its cache key: :func:`module_closure`, :func:`code_hash`,
:func:`checkout_dirty`.

A stage's fingerprint covers its config and inputs; this module adds the source of the stage module and of
every ``alignkit`` module it imports, directly or through others, so that editing, say, the scorer redoes the
evaluation and nothing else.

The closure is found by reading the source with :mod:`ast`, not by importing it: importing would run the
modules (torch, transformers) and would only see what one code path imported. Every ``import`` statement
counts wherever it sits (module level, inside functions, under ``if TYPE_CHECKING:``), as do
``importlib.import_module("alignkit.x")`` calls with a literal name; over-counting only costs an unneeded
re-run, under-counting a stale result. Importing ``alignkit.a.b`` runs ``alignkit/__init__.py`` and
``alignkit/a/__init__.py``, so those are in every closure, with what they import. No library does this for
an unimported source tree (:mod:`modulefinder` executes nothing but follows every third-party import into
site-packages and reports modules, not the relative file list a hash needs), hence the walk here.
"""

from __future__ import annotations

import ast
import hashlib
import logging
import os
import subprocess
import threading
from pathlib import Path

log = logging.getLogger(__name__)

#: The package whose modules are followed; imports of anything else are ignored.
PACKAGE = "alignkit"

_cache: dict[tuple[str, Path], str] = {}
_cache_guard = threading.Lock()


def default_root() -> Path:
    """The folder holding the ``alignkit`` package folder (the checkout, or site-packages when installed)."""
    return Path(__file__).resolve().parent.parent


def _root(root: str | os.PathLike | None) -> Path:
    return Path(root).resolve() if root is not None else default_root()


def module_file(module: str, root: str | os.PathLike | None = None) -> Path | None:
    """The source file of ``module`` under ``root`` (``a/b.py`` or ``a/b/__init__.py``), None if neither exists.

    >>> module_file("alignkit").name
    '__init__.py'
    >>> module_file("alignkit.config.STAGES") is None  # a name inside a module, not a module
    True
    """
    base = _root(root).joinpath(*module.split("."))
    for candidate in (base.with_name(base.name + ".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _in_package(name: str | None) -> bool:
    return name is not None and (name == PACKAGE or name.startswith(PACKAGE + "."))


def _relative_base(module: str, is_package: bool, level: int, name: str | None) -> str | None:
    """Absolute module named by ``from <level dots><name> import ...`` inside ``module``.

    >>> _relative_base("alignkit.runs", False, 1, "files")
    'alignkit.files'
    >>> _relative_base("alignkit.sub", True, 2, None)
    'alignkit'
    """
    parts = module.split(".") if is_package else module.split(".")[:-1]
    if level - 1 > len(parts) - 1:
        return None  # beyond the top-level package: Python refuses it too
    parts = parts[: len(parts) - (level - 1)]
    return ".".join(parts + ([name] if name else []))


def imported_modules(module: str, source: str, is_package: bool = False) -> set[str]:
    """Names of the ``alignkit`` modules (or names inside them) that ``source`` of ``module`` imports.

    For ``from alignkit.x import y`` both ``alignkit.x`` and ``alignkit.x.y`` are returned; the caller keeps
    those that are files.

    >>> sorted(imported_modules("alignkit.m", "import os\\nfrom alignkit import files\\n"
    ...                         "def f():\\n    from .runs import Run"))
    ['alignkit', 'alignkit.files', 'alignkit.runs', 'alignkit.runs.Run']
    """
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if _in_package(alias.name))
        elif isinstance(node, ast.ImportFrom):
            base = node.module if node.level == 0 else _relative_base(module, is_package, node.level, node.module)
            if _in_package(base):
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            target = node.args[0].value
            if called in ("import_module", "__import__") and isinstance(target, str) and _in_package(target):
                found.add(target)
    return found


def module_closure(module: str, root: str | os.PathLike | None = None) -> list[Path]:
    """Source files of ``module`` and of every ``alignkit`` module it imports, transitively, with the package
    ``__init__.py`` files importing them runs; sorted by path relative to ``root``.

    ``root`` is the folder holding the ``alignkit`` package folder (default: this installation's), so a copied
    tree can be analysed. Raises ``ModuleNotFoundError`` for a module with no source file under ``root``.

    >>> [p.name for p in module_closure("alignkit.threads")]
    ['__init__.py', 'threads.py']
    """
    base = _root(root)
    if not _in_package(module):
        raise ValueError(f"{module!r}: only {PACKAGE} modules have a code hash; expected '{PACKAGE}' or "
                         f"'{PACKAGE}.<module>'")
    if module_file(module, base) is None:
        raise ModuleNotFoundError(f"{module!r}: no {module.replace('.', '/')}.py or .../__init__.py under {base}",
                                  name=module)
    seen: dict[str, Path] = {}
    queue = [module]
    while queue:
        name = queue.pop()
        if name in seen:
            continue
        path = module_file(name, base)
        if path is None:
            continue  # ``alignkit.x.y`` where ``y`` is a function or class of ``alignkit.x``
        seen[name] = path
        parts = name.split(".")
        queue.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # parent packages run first
        try:
            source = path.read_text(encoding="utf-8")
            queue.extend(imported_modules(name, source, is_package=path.name == "__init__.py"))
        except SyntaxError as error:
            raise SyntaxError(f"{path}:{error.lineno}: cannot parse it to find what it imports: {error.msg}") from None
    return sorted(seen.values(), key=lambda p: p.relative_to(base).as_posix())


def code_hash(module: str, root: str | os.PathLike | None = None) -> str:
    """Hex sha256 over the closure of ``module``: each file's path relative to ``root`` (``/``-separated) and
    the sha256 of its bytes, in path order. Any byte change counts, comments included.

    Computed once per process and module: that is the code this process has imported, even if the files are
    edited while it runs (a notebook kernel keeps the modules it loaded). :func:`clear_cache` forgets it.
    """
    base = _root(root)
    key = (module, base)
    with _cache_guard:
        if key in _cache:
            return _cache[key]
    digest = hashlib.sha256()
    for path in module_closure(module, base):
        # A per-file digest between fixed separators: moving bytes from one file to the next changes the hash.
        digest.update(path.relative_to(base).as_posix().encode("utf-8") + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).hexdigest().encode("ascii") + b"\n")
    value = digest.hexdigest()
    with _cache_guard:
        _cache[key] = value
    log.debug("code hash of %s: %s", module, value)
    return value


def clear_cache() -> None:
    """Forget the code hashes computed so far in this process (for tests and long-lived sessions)."""
    with _cache_guard:
        _cache.clear()


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def checkout_dirty(root: str | os.PathLike | None = None) -> bool | None:
    """Whether the ``alignkit`` package folder has uncommitted changes (modified, staged, deleted or new
    files that git does not ignore); None when it is not part of a git checkout (an installed package, a
    missing ``git``), e.g. a ``site-packages`` folder inside a repository's ignored ``.venv``.
    """
    package = _root(root) / PACKAGE
    if not package.is_dir():
        return None
    top = _git(["rev-parse", "--show-toplevel"], package)
    if not top or not _git(["ls-files", "--", str(package)], Path(top.strip())):
        return None  # not tracked by the repository around it
    status = _git(["status", "--porcelain", "--untracked-files=all", "--", str(package)], Path(top.strip()))
    if status is None:
        return None
    changed = [line for line in status.splitlines() if line.strip() and not line.endswith((".pyc", ".pyo"))]
    return bool(changed)


__all__ = ["PACKAGE", "checkout_dirty", "clear_cache", "code_hash", "default_root", "imported_modules",
           "module_closure", "module_file"]
