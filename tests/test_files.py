"""Tests for alignkit.files: atomic writes, JSON Lines and hashing."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from alignkit import files


def _leftovers(folder: Path) -> list[str]:
    """Every temp file atomic writes could leave behind (they are named ``.<name>.<random>.tmp``)."""
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith(".tmp") or p.name.startswith("."))


# ---------------------------------------------------------------------------------------------- atomic writes
def test_write_text_bytes_json_leave_only_the_final_files(tmp_path):
    files.write_text(tmp_path / "a.txt", "héllo\n")
    files.write_bytes(tmp_path / "b.bin", b"\x00\x01\xff")
    files.write_json(tmp_path / "c.json", {"b": 1, "a": [1, 2]})
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "héllo\n"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01\xff"
    assert files.read_json(tmp_path / "c.json") == {"a": [1, 2], "b": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.bin", "c.json"]


def test_write_creates_missing_parent_folders(tmp_path):
    target = tmp_path / "x" / "y" / "z.txt"
    files.write_text(target, "ok")
    assert target.read_text() == "ok"


def test_write_replaces_existing_file(tmp_path):
    target = tmp_path / "a.txt"
    files.write_text(target, "old")
    files.write_text(target, "new")
    assert target.read_text() == "new"
    assert _leftovers(tmp_path) == []


def test_atomic_path_yields_a_hidden_temp_sibling(tmp_path):
    target = tmp_path / "out.png"
    with files.atomic_path(target) as tmp:
        assert tmp.parent == tmp_path
        assert tmp != target
        assert tmp.name.startswith(".out.png.") and tmp.name.endswith(".tmp")
        tmp.write_bytes(b"png")
        assert not target.exists()  # nothing under the final name until the block succeeds
    assert target.read_bytes() == b"png"
    assert _leftovers(tmp_path) == []


def test_atomic_path_exception_leaves_nothing(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError, match="boom"):
        with files.atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("boom")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_exception_keeps_the_previous_file_intact(tmp_path):
    target = tmp_path / "data.json"
    files.write_json(target, {"version": 1})
    with pytest.raises(KeyboardInterrupt):
        with files.atomic_path(target) as tmp:
            tmp.write_text('{"version": 2, "trunc')
            raise KeyboardInterrupt
    assert files.read_json(target) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["data.json"]


def test_write_jsonl_failing_row_leaves_no_file(tmp_path):
    # A generator that fails midway: neither a partial file under the final name nor a temp file remains.
    def rows():
        yield {"a": 1}
        raise ValueError("bad row")

    with pytest.raises(ValueError, match="bad row"):
        files.write_jsonl(tmp_path / "rows.jsonl", rows())
    assert list(tmp_path.iterdir()) == []


def test_write_json_unserialisable_leaves_no_file(tmp_path):
    with pytest.raises(TypeError, match="cannot write object as JSON"):
        files.write_json(tmp_path / "x.json", {"a": object()})
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------- JSON
def test_to_json_is_sorted_and_keeps_unicode():
    assert files.to_json({"b": 1, "a": "é"}) == '{"a": "é", "b": 1}'


def test_to_json_converts_paths_numpy_and_sets():
    text = files.to_json({"p": Path("a/b"), "i": np.int64(3), "f": np.float32(0.5), "s": {3, 1, 2}})
    assert json.loads(text) == {"f": 0.5, "i": 3, "p": "a/b", "s": [1, 2, 3]}


def test_write_json_is_indented_sorted_and_newline_terminated(tmp_path):
    files.write_json(tmp_path / "m.json", {"b": 1, "a": "日本"})
    assert (tmp_path / "m.json").read_text(encoding="utf-8") == '{\n  "a": "日本",\n  "b": 1\n}\n'


# ---------------------------------------------------------------------------------------------- JSON Lines
ROWS = [
    {"id": "r1", "text": "café — naïve", "n": 1},
    {"id": "r2", "text": "日本語のテキスト", "nested": {"emoji": "🙂", "list": [1, 2.5, None, True]}},
    {"id": "r3", "text": "line one\nline two\ttab \"quoted\" \\ backslash", "n": -3},
    {"id": "r4", "text": "\u2028 line separator and \u0000 nul"},
]


def test_jsonl_round_trip_with_unicode(tmp_path):
    path = tmp_path / "rows.jsonl"
    assert files.write_jsonl(path, ROWS) == 4
    assert files.read_jsonl(path) == ROWS
    # One physical line per row, UTF-8 kept verbatim (not \\u escapes) for readability.
    raw = path.read_text(encoding="utf-8")
    # Exactly one "\n" per row: newlines inside strings are escaped. (U+2028 stays raw, which is fine for
    # JSONL readers that split on "\n" only, as read_jsonl does.)
    assert raw.count("\n") == 4 and raw.endswith("\n")
    assert "日本語" in raw and "🙂" in raw and "\\u" not in raw.replace("\\u0000", "")


def test_write_jsonl_accepts_a_generator_and_counts(tmp_path):
    n = files.write_jsonl(tmp_path / "g.jsonl", ({"i": i} for i in range(7)))
    assert n == 7
    assert [row["i"] for row in files.read_jsonl(tmp_path / "g.jsonl")] == list(range(7))


def test_write_jsonl_empty(tmp_path):
    assert files.write_jsonl(tmp_path / "e.jsonl", []) == 0
    assert (tmp_path / "e.jsonl").read_text() == ""
    assert files.read_jsonl(tmp_path / "e.jsonl") == []


def test_read_jsonl_skips_blank_lines(tmp_path):
    path = tmp_path / "b.jsonl"
    path.write_text('{"a": 1}\n\n   \n{"a": 2}\n', encoding="utf-8")
    assert files.read_jsonl(path) == [{"a": 1}, {"a": 2}]


def test_read_jsonl_error_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    # Line 3 is broken; the blank line 2 still counts as a line of the file.
    path.write_text('{"a": 1}\n\n{"a": 2,\n{"a": 3}\n', encoding="utf-8")
    with pytest.raises(ValueError) as info:
        files.read_jsonl(path)
    message = str(info.value)
    assert message.startswith(f"{path}:3: not valid JSON")


def test_read_jsonl_error_on_first_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text("not json\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.jsonl:1: not valid JSON"):
        files.read_jsonl(path)


# ---------------------------------------------------------------------------------------------- hashing
def test_sha256_text_known_values():
    assert files.sha256_text("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    # FIPS 180-2 test vector for "abc".
    assert files.sha256_text("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert files.sha256_text("é") == hashlib.sha256("é".encode("utf-8")).hexdigest()


def test_sha256_file_matches_hashlib_across_chunks(tmp_path):
    data = bytes(range(256)) * 41  # 10,496 bytes
    path = tmp_path / "blob"
    path.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    assert files.sha256_file(path) == expected
    assert files.sha256_file(path, chunk_bytes=1000) == expected  # 11 chunks, last one partial
    assert files.sha256_file(path, chunk_bytes=256) == expected   # exact multiple


def _tree(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("alpha")
    (root / "sub" / "b.txt").write_text("beta")
    return root


def test_sha256_tree_is_deterministic_and_location_independent(tmp_path):
    one = _tree(tmp_path / "one")
    two = _tree(tmp_path / "two")
    assert files.sha256_tree(one) == files.sha256_tree(one)
    assert files.sha256_tree(one) == files.sha256_tree(two)


def test_sha256_tree_changes_when_a_file_changes(tmp_path):
    root = _tree(tmp_path / "t")
    before = files.sha256_tree(root)
    (root / "sub" / "b.txt").write_text("beta!")
    assert files.sha256_tree(root) != before


def test_sha256_tree_changes_when_a_file_is_renamed_added_or_removed(tmp_path):
    root = _tree(tmp_path / "t")
    before = files.sha256_tree(root)
    (root / "a.txt").rename(root / "c.txt")
    renamed = files.sha256_tree(root)
    assert renamed != before
    (root / "new.txt").write_text("")
    added = files.sha256_tree(root)
    assert added != renamed
    (root / "new.txt").unlink()
    assert files.sha256_tree(root) == renamed


def test_sha256_tree_moving_content_between_files_changes_it(tmp_path):
    # Same bytes overall, different split between files: must not collide.
    one = tmp_path / "one"
    one.mkdir()
    (one / "a").write_text("xy")
    (one / "b").write_text("")
    two = tmp_path / "two"
    two.mkdir()
    (two / "a").write_text("x")
    (two / "b").write_text("y")
    assert files.sha256_tree(one) != files.sha256_tree(two)


def test_sha256_tree_ignores_tmp_files(tmp_path):
    root = _tree(tmp_path / "t")
    before = files.sha256_tree(root)
    (root / ".a.txt.abc123.tmp").write_text("half-written")
    (root / "sub" / "weights.safetensors.tmp").write_bytes(b"\x00" * 10)
    assert files.sha256_tree(root) == before


def test_sha256_tree_ignores_empty_folders(tmp_path):
    root = _tree(tmp_path / "t")
    before = files.sha256_tree(root)
    (root / "empty").mkdir()
    assert files.sha256_tree(root) == before


# ---------------------------------------------------------------------------------------------- permissions
@pytest.fixture
def umask():
    """Set the process umask for one test and restore it afterwards."""
    previous = os.umask(0o022)
    os.umask(previous)

    def set_umask(value: int) -> None:
        os.umask(value)

    yield set_umask
    os.umask(previous)


def _write_every_way(folder: Path) -> list[Path]:
    files.write_text(folder / "new" / "a.txt", "a")
    files.write_bytes(folder / "b.bin", b"b")
    files.write_json(folder / "c.json", {"c": 1})
    files.write_jsonl(folder / "d.jsonl", [{"d": 1}])
    with files.atomic_path(folder / "e.png") as tmp:
        tmp.write_bytes(b"png")
    return [folder / "new" / "a.txt", folder / "b.bin", folder / "c.json", folder / "d.jsonl", folder / "e.png"]


@pytest.mark.parametrize(("mask", "file_mode", "folder_mode"), [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700),
                                                                (0o002, 0o664, 0o775)])
def test_written_files_and_folders_follow_the_umask(tmp_path, umask, mask, file_mode, folder_mode):
    umask(mask)
    written = _write_every_way(tmp_path / "out")
    assert {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in written} == {p.name: oct(file_mode) for p in written}
    for folder in (tmp_path / "out", tmp_path / "out" / "new"):
        assert oct(stat.S_IMODE(folder.stat().st_mode)) == oct(folder_mode)


def test_umask_022_makes_results_readable_by_group_and_others(tmp_path, umask):
    umask(0o022)
    path = files.write_json(tmp_path / "manifest.json", {"status": "complete"})
    mode = path.stat().st_mode
    assert mode & stat.S_IRGRP and mode & stat.S_IROTH and not mode & (stat.S_IWGRP | stat.S_IWOTH)
    umask(0o077)
    private = files.write_json(tmp_path / "private.json", {})
    assert not private.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH)


# ---------------------------------------------------------------------------------------------- failed writes
def _fd_path(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to tell the test's file apart")
def test_disk_full_midway_leaves_no_partial_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    target = tmp_path / "weights.bin"
    files.write_bytes(target, b"old content")
    real_write = os.write
    calls = []

    def disk_fills_after_4096_bytes(fd, data):
        if str(tmp_path) not in _fd_path(fd):
            return real_write(fd, data)
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data[:4096]))  # a short write, as a nearly full disk gives
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files.os, "write", disk_fills_after_4096_bytes)
    with pytest.raises(files.WriteFailed) as info:
        files.write_bytes(target, bytes(10_000))
    monkeypatch.undo()
    assert calls == [10_000, 10_000 - 4096]  # the short write was continued, then the disk was full
    error = info.value
    assert error.errno == errno.ENOSPC and isinstance(error, OSError)
    assert str(error).startswith(f"cannot write {target}: no space left on device "
                                 "(tried to write 9.8 KiB = 10,000 bytes); free space on that file system")
    assert "\n" not in str(error)
    assert target.read_bytes() == b"old content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights.bin"]


def test_write_into_a_read_only_folder(tmp_path, monkeypatch):
    folder = tmp_path / "ro"
    files.write_text(folder / "m.json", "old")
    folder.chmod(0o555)
    try:
        if os.geteuid() == 0:
            # Root ignores the folder's mode; refuse creating files in it the way the kernel does for a user.
            real_open = os.open

            def refuse_create(path, flags, *args, **kwargs):
                if Path(path).parent == folder and flags & os.O_CREAT:
                    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
                return real_open(path, flags, *args, **kwargs)

            monkeypatch.setattr(files.os, "open", refuse_create)
        with pytest.raises(files.WriteFailed) as info:
            files.write_json(folder / "m.json", {"a": 1})
        monkeypatch.undo()
    finally:
        folder.chmod(0o755)
    message = str(info.value)
    assert message.startswith(f"cannot write {folder / 'm.json'}: permission denied (tried to write 13 B = 13 bytes)")
    assert f"fix the permissions of {folder}" in message and "\n" not in message
    assert info.value.errno == errno.EACCES
    assert (folder / "m.json").read_text() == "old"
    assert sorted(p.name for p in folder.iterdir()) == ["m.json"]


@pytest.mark.parametrize(("code", "words", "advice"), [
    (errno.ENOSPC, "no space left on device", "free space on that file system"),
    (errno.EDQUOT, "disk quota exceeded", "disk quota"),
    (errno.EACCES, "permission denied", "may not write there"),
    (errno.EROFS, "read-only file system", "mounted read-only"),
])
def test_failures_in_the_block_name_the_path_and_reason(tmp_path, code, words, advice):
    target = tmp_path / "fig.png"
    files.write_bytes(target, b"previous")
    with pytest.raises(files.WriteFailed) as info:
        with files.atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise OSError(code, os.strerror(code))
    message = str(info.value)
    assert message.startswith(f"cannot write {target}: {words}; ")  # size unknown to atomic_path: not shown
    assert advice in message and "\n" not in message
    assert info.value.errno == code and info.value.filename == str(target)
    assert isinstance(info.value.__cause__, OSError)
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig.png"]


def test_rename_refused_by_a_read_only_mount(tmp_path, monkeypatch):
    def read_only(src, dst):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(src))

    monkeypatch.setattr(files.os, "replace", read_only)
    with pytest.raises(files.WriteFailed, match=r"c\.json: read-only file system \(tried to write 13 B = 13 bytes\)"):
        files.write_json(tmp_path / "c.json", {"c": 1})
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_other_os_errors_are_not_rewrapped(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError):  # the parent is a file: not a space or permission problem
        files.write_text(tmp_path / "file" / "child.txt", "y")
    with pytest.raises(FileNotFoundError):
        with files.atomic_path(tmp_path / "out.txt"):
            raise FileNotFoundError(errno.ENOENT, "missing input", "in.txt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_write_failed_pickles_and_is_an_os_error():
    import pickle

    error = files.WriteFailed("/x/y.json", errno.EDQUOT, 5)
    copy = pickle.loads(pickle.dumps(error))
    assert str(copy) == str(error) and copy.errno == errno.EDQUOT and copy.nbytes == 5
    assert isinstance(copy, OSError)


def test_permission_advice_names_the_folder_that_refused(tmp_path, monkeypatch):
    # Creating x/y/ inside an unwritable folder fails in that folder, the nearest one that exists.
    def refuse(path, mode=0o777):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setattr(files.os, "mkdir", refuse)
    with pytest.raises(files.WriteFailed) as info:
        files.write_text(tmp_path / "x" / "y" / "z.txt", "z")
    monkeypatch.undo()
    assert f"fix the permissions of {tmp_path} (chown/chmod)" in str(info.value)
    assert list(tmp_path.iterdir()) == []
