"""Tests for alignkit.files: atomic writes, JSON Lines and hashing."""

from __future__ import annotations

import hashlib
import json
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
