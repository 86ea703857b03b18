"""inference/media.py without a model: result rows, error rows, and the usage errors raised before any model loads."""
import numpy as np
import pytest

from mtarcface_tf.inference import media

RESULT = {"box": [1.0, 2.25, 30.0, 40.5], "identity": "ann", "similarity": 0.123456789,
          "mask": {"status": "mask", "probability": 0.9}, "note": "2 faces found; used the largest"}


def test_result_rows_follow_the_csv_fields():
    no_mask_head = dict(RESULT, identity="unknown", mask=None, note="")
    rows = media.result_rows("a.png", 3, [RESULT, no_mask_head])
    assert [sorted(row) for row in rows] == [sorted(media.CSV_FIELDS)] * 2
    assert rows[0] == {"source": "a.png", "frame": 3, "face": 0, "identity": "ann", "similarity": 0.123457,
                       "svm_identity": "", "svm_probability": "", "mask": "mask", "mask_probability": 0.9,
                       "box": "1.0 2.2 30.0 40.5",
                       "note": "2 faces found; used the largest", "error": ""}
    assert rows[1]["face"] == 1 and rows[1]["mask"] == "unknown" and rows[1]["mask_probability"] == ""


def test_result_rows_carry_the_svm_answer():
    with_svm = dict(RESULT, svm={"name": "bob", "probability": 0.61234567})
    row, = media.result_rows("a.png", "", [with_svm])
    assert row["identity"] == "ann" and row["svm_identity"] == "bob" and row["svm_probability"] == 0.612346


def test_error_row_names_the_error_only():
    row = media.error_row("bad.png", "", ValueError("bad.png: cannot be decoded"))
    assert row["error"] == "bad.png: cannot be decoded" and row["source"] == "bad.png"
    assert all(row[field] == "" for field in media.CSV_FIELDS if field not in ("source", "error"))


@pytest.mark.parametrize("command, kwargs, message", [
    ("enroll", dict(images="photos"), "enroll needs --gallery"),
    ("identify", dict(gallery="g.npz"), "identify needs --input"),
    ("identify", dict(gallery="g.npz", source="/nowhere/x.png"), "/nowhere/x.png: no such file"),
    ("verify", dict(), "exactly two images"),
    ("", dict(), "give a command first"),
])
def test_usage_errors_before_the_model_loads(command, kwargs, message):
    with pytest.raises(media.UsageError, match=message):
        media.run_command(command, [], "/no/model/here", **kwargs)


def test_remove_takes_names_and_a_names_file_and_removes_none_when_one_is_unknown(tmp_path, capsys):
    from mtarcface_tf.inference.gallery import GalleryError, Gallery
    from mtarcface_tf.search.store import GalleryStore
    with GalleryStore.open(tmp_path / "g", writable=True, dim=4) as store:
        store.enroll_many([{"name": name, "embeddings": np.eye(4)[i:i + 1]} for i, name in enumerate("abcd")])
    (tmp_path / "leavers.txt").write_text("c\n\n  \n")
    media.manage("remove", str(tmp_path / "g"), ["a"], names_file=str(tmp_path / "leavers.txt"))
    assert "removed a, c; 2 people left" in capsys.readouterr().out
    with pytest.raises(GalleryError, match="'z' is not in the gallery; enrolled: b, d; nobody was removed"):
        media.manage("remove", str(tmp_path / "g"), ["b", "z"])
    with pytest.raises(media.UsageError, match="--names_file=.*nowhere.txt: cannot be read"):
        media.manage("remove", str(tmp_path / "g"), [], names_file=str(tmp_path / "nowhere.txt"))
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(media.UsageError, match="remove needs the names"):
        media.manage("remove", str(tmp_path / "g"), [], names_file=str(tmp_path / "empty.txt"))
    with Gallery.open(str(tmp_path / "g")) as gallery:
        assert gallery.names == ["b", "d"]


def test_tune_records_the_ann_settings_and_needs_one(tmp_path, capsys):
    from mtarcface_tf.inference.gallery import GalleryError
    from mtarcface_tf.search.store import GalleryStore
    with GalleryStore.open(tmp_path / "g", writable=True, dim=16) as store:
        store.enroll_many([{"name": f"p{i}", "embeddings": np.eye(16)[i % 16:i % 16 + 1] + i} for i in range(20)])
    media.manage("tune", str(tmp_path / "g"), [], settings={"pq_bytes": 4, "min_candidates": None})
    assert "ANN code bytes 4, at least 500 candidates per query (exact search now)" in capsys.readouterr().out
    with GalleryStore.open(tmp_path / "g") as store:
        assert store.stats()["index_pq_bytes"] == 4
    with pytest.raises(media.UsageError, match="tune needs --pq_bytes"):
        media.manage("tune", str(tmp_path / "g"), [], settings={"pq_bytes": None, "min_candidates": None})
    with pytest.raises(GalleryError, match="min_candidates must be >= 1"):
        media.manage("tune", str(tmp_path / "g"), [], settings={"min_candidates": -5})
