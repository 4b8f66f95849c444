"""Atomic file writes, JSON Lines and hashing: the only way alignkit writes files.

Every write goes to a temporary file in the same folder and is renamed into place, so a reader never sees
a half-written file and a killed process never leaves one behind under the final name. Files and folders get
the permissions the process umask gives (``0644`` / ``0755`` under the usual ``022``), as ``open`` would, so
that others on a shared machine can read results. A write that fails for lack of space or rights raises
:class:`WriteFailed`, one line naming the file, the reason and the fix; the destination is left as it was.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import math
import os
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: errno of a write that failed for lack of space or rights -> the reason in words.
WRITE_FAILURES = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
}
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def human_bytes(n: int | float) -> str:
    """A size in binary units with one decimal (bytes below 1 KiB).

    >>> human_bytes(512), human_bytes(2048), human_bytes(1.5 * 1024**3), human_bytes(0)
    ('512 B', '2.0 KiB', '1.5 GiB', '0 B')
    """
    if abs(n) < 1024:
        return f"{int(n)} B"
    exponent = min(int(math.log(abs(n), 1024)), len(_UNITS) - 1)
    return f"{n / 1024**exponent:.1f} {_UNITS[exponent]}"


def nearest_existing(path: str | os.PathLike) -> Path:
    """``path`` or its nearest existing parent (a folder about to be created lives on its parent's disk).

    >>> nearest_existing("/surely/not/here/x") == Path("/")
    True
    """
    current = Path(path).absolute()
    while not current.exists() and current != current.parent:
        current = current.parent
    return current


class WriteFailed(OSError):
    """Writing ``path`` failed for lack of space or rights (see :data:`WRITE_FAILURES`).

    An ``OSError`` with the original ``errno`` and ``filename``, so existing ``except OSError`` handlers keep
    working; its message is one line: the path, the reason in words, the bytes it tried to write when known,
    and what to do.

    >>> str(WriteFailed("/data/runs/x/m.json", errno.ENOSPC, 2048)).split(";")[0]
    'cannot write /data/runs/x/m.json: no space left on device (tried to write 2.0 KiB = 2,048 bytes)'
    """

    def __init__(self, path: str | os.PathLike, error_number: int, nbytes: int | None = None) -> None:
        self.path = Path(path)
        self.nbytes = nbytes
        self.reason = WRITE_FAILURES.get(error_number) or os.strerror(error_number).lower()
        super().__init__(error_number, self.reason, str(path))
        size = "" if nbytes is None else f" (tried to write {human_bytes(nbytes)} = {nbytes:,} bytes)"
        self.message = f"cannot write {self.path}: {self.reason}{size}; {_advice(self.path, error_number)}"

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self.path), self.errno, self.nbytes))


def _advice(path: Path, error_number: int) -> str:
    folder = path.parent
    if error_number == errno.ENOSPC:
        return (f"free space on that file system (see `df -h {folder}`) or point ALIGNKIT_HOME / "
                "ALIGNKIT_REPORTS at a larger volume, then run the same command again")
    if error_number == errno.EDQUOT:
        return (f"this user's disk quota on the file system of {folder} is used up: delete files or ask for a "
                "larger quota, then run the same command again")
    if error_number == errno.EROFS:
        return f"{folder} is on a file system mounted read-only: point ALIGNKIT_HOME / ALIGNKIT_REPORTS elsewhere"
    user = os.getuid() if hasattr(os, "getuid") else "?"
    # A folder still to be created fails in its nearest existing parent: that is the one to fix.
    return (f"this user (uid {user}) may not write there: fix the permissions of {nearest_existing(folder)} "
            "(chown/chmod) or point ALIGNKIT_HOME / ALIGNKIT_REPORTS at a folder it owns")


def _create_temp(path: Path) -> tuple[int, Path]:
    """Create a new, empty temporary file beside ``path``: ``.<name>.<8 hex>.tmp``, opened for writing.

    By hand rather than :func:`tempfile.mkstemp`, which always creates mode ``0600``: ``os.open`` with
    ``0o666`` lets the kernel apply the umask (and a folder's default ACL) exactly as ``open`` does.
    """
    for _ in range(100):  # 32 random bits per name: a collision is already unlikely once
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary file name", str(path))


def _remove_temp(tmp: Path | None) -> None:
    if tmp is None:
        return
    try:
        tmp.unlink()
    except FileNotFoundError:
        pass
    except OSError as error:  # never hide the error that brought us here
        log.warning("could not remove the temporary file %s: %s", tmp, error)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, nbytes: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed onto ``path``.

    Use it for writers that want a filename (``model.save_pretrained``, ``fig.savefig``)::

        with atomic_path("out.png") as tmp:
            fig.savefig(tmp, format="png")

    An ``OSError`` of :data:`WRITE_FAILURES` (no space, quota, permission, read-only), raised while creating
    the folder or temp file, by the block, or while syncing and renaming, becomes :class:`WriteFailed`
    (``nbytes``: the size being written, when the caller knows it). Whatever fails, the temp file is
    removed and ``path`` keeps its previous content.
    """
    path = Path(path)
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _create_temp(path)
        os.close(fd)
        yield tmp
        # Reopened rather than kept open: a writer may have replaced the temp file by a new one of its own.
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        tmp = None
    except OSError as error:
        if isinstance(error, WriteFailed) or error.errno not in WRITE_FAILURES:
            raise
        raise WriteFailed(path, error.errno, nbytes) from error
    finally:
        _remove_temp(tmp)


def _write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (``os.write`` may write less than asked)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically write UTF-8 ``text`` to ``path``."""
    return write_bytes(path, text.encode("utf-8"))


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Atomically write ``data`` to ``path``."""
    with atomic_path(path, nbytes=len(data)) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC)
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)
    return Path(path)


def to_json(obj: Any) -> str:
    """Stable JSON (sorted keys, UTF-8 kept) so that equal content hashes equally.

    >>> to_json({"b": 1, "a": "é"})
    '{"a": "é", "b": 1}'
    """
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, default=_json_default)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically write ``obj`` as indented, key-sorted JSON."""
    text = json.dumps(obj, sort_keys=True, ensure_ascii=False, indent=2, default=_json_default)
    return write_text(path, text + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file."""
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def write_jsonl(path: str | os.PathLike, rows: Iterable[Any]) -> int:
    """Atomically write one JSON object per line; returns the number of rows written."""
    count = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(to_json(row) + "\n")
            count += 1
    return count


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSON Lines file written by :func:`write_jsonl` (blank lines are skipped).

    Untrusted files go through :mod:`alignkit.schemas` instead, which reports ``FILE:LINE: field: problem``.
    """
    rows = []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{line_number}: not valid JSON: {error.msg}") from None
    return rows


def sha256_file(path: str | os.PathLike, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_tree(folder: str | os.PathLike) -> str:
    """Hash of a folder: relative paths and contents of every file, in sorted order (temp files skipped)."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.endswith(".tmp")):
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(sha256_file(path).encode())
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    """Hex sha256 of a string's UTF-8 bytes.

    >>> sha256_text("")[:12]
    'e3b0c44298fc'
    """
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
