"""mtarcface_tf.atomic: a writer leaves the old file or the complete new one, never a part, and no temporary."""
import json
import os

import pytest

from mtarcface_tf import atomic


class _Crash(Exception):
    pass


def test_write_text_replaces_and_leaves_no_temporary(tmp_path):
    path = str(tmp_path / "a.json")
    atomic.write_text(path, "one")
    atomic.write_text(path, "two")
    assert open(path, encoding="utf-8").read() == "two" and os.listdir(tmp_path) == ["a.json"]


def test_write_json_and_bytes_return_their_path(tmp_path):
    assert atomic.write_json(tmp_path / "v.json", {"a": [1, 2]}) == str(tmp_path / "v.json")
    assert json.loads((tmp_path / "v.json").read_text()) == {"a": [1, 2]}
    assert (tmp_path / "v.json").read_text().startswith('{\n  "a"') and (tmp_path / "v.json").read_text().endswith("\n")
    assert atomic.write_bytes(tmp_path / "b", b"\x00\x01") == str(tmp_path / "b")
    assert (tmp_path / "b").read_bytes() == b"\x00\x01"
    assert atomic.write_text(tmp_path / "t", "x") == str(tmp_path / "t")


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    path = tmp_path / "a.txt"
    atomic.write_text(path, "old")
    with pytest.raises(_Crash):
        with atomic.atomic_open(path) as handle:
            handle.write("half of the new")
            raise _Crash()
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["a.txt"]


def test_the_file_appears_only_when_complete(tmp_path):
    path = tmp_path / "image.png"
    with atomic.atomic_path(path, ".png") as temp:
        assert temp.endswith(".png") and os.path.dirname(temp) == str(tmp_path)
        open(temp, "wb").close()
        assert not path.exists()
    assert path.exists() and os.listdir(tmp_path) == ["image.png"]


def test_atomic_directory_renames_when_complete_and_cleans_up_on_failure(tmp_path):
    target = tmp_path / "sub" / "out"
    with atomic.atomic_directory(target) as temp:
        (open(os.path.join(temp, "f"), "w")).close()
        assert not target.exists()
    assert sorted(os.listdir(target)) == ["f"] and os.listdir(tmp_path / "sub") == ["out"]
    failed = tmp_path / "sub" / "failed"
    with pytest.raises(_Crash):
        with atomic.atomic_directory(failed):
            raise _Crash()
    assert os.listdir(tmp_path / "sub") == ["out"]


def test_atomic_directory_takes_a_trailing_slash(tmp_path):
    with atomic.atomic_directory(str(tmp_path / "out") + os.sep) as temp:
        open(os.path.join(temp, "f"), "w").close()
    assert os.listdir(tmp_path / "out") == ["f"] and os.listdir(tmp_path) == ["out"]
