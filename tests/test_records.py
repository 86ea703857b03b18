"""TFRecord schema, shard naming, list_shards / manifests, and ShardedRecordWriter's atomic writing."""
import os

import pytest
import tensorflow as tf

from mtarcface_tf.data import records, shards


def read_all(files):
    return [(bytes(image.numpy()), int(label))
            for image, label in tf.data.TFRecordDataset(files).map(records.parse_example)]


def test_example_round_trip_matches_reference_schema():
    serialized = records.serialize_example(b"\xff\xd8jpeg", 42)
    image, label = records.parse_example(serialized)
    assert image.numpy() == b"\xff\xd8jpeg" and label.dtype == tf.int64 and int(label) == 42
    example = tf.train.Example.FromString(serialized)
    assert set(example.features.feature) == {"image_raw", "label"}


def test_writer_round_robin_and_manifest(tmp_path):
    with shards.ShardedRecordWriter(str(tmp_path), "train", num_shards=2) as writer:
        for i in range(5):
            writer.write(f"img{i}".encode(), i % 3)
        assert sorted(os.listdir(tmp_path)) == [p + ".tmp" for p in sorted(
            os.path.basename(p) for p in writer.paths)]
        manifest = writer.close(source="src", command="cmd", extra={"note": 1})
    assert manifest == {"images": 5, "identities": 3, "shards": ["train-00000-of-00002.tfrecord",
                        "train-00001-of-00002.tfrecord"], "source": "src", "command": "cmd", "note": 1}
    assert records.read_manifest(records.manifest_path(str(tmp_path), "train")) == manifest
    assert records.find_manifest(str(tmp_path)) == manifest
    first, second = records.list_shards(str(tmp_path))
    assert read_all([first]) == [(b"img0", 0), (b"img2", 2), (b"img4", 1)]
    assert read_all([second]) == [(b"img1", 1), (b"img3", 0)]


def test_writer_leaves_nothing_on_error(tmp_path):
    with pytest.raises(RuntimeError):
        with shards.ShardedRecordWriter(str(tmp_path), "train", num_shards=3) as writer:
            writer.write(b"x", 0)
            raise RuntimeError("interrupted")
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match="num_shards"):
        shards.ShardedRecordWriter(str(tmp_path), "train", num_shards=0)


def test_list_shards_accepts_dir_manifest_glob_file(tmp_path):
    with shards.ShardedRecordWriter(str(tmp_path), "d", num_shards=3) as writer:
        writer.write(b"x", 0)
        writer.close()
    expected = records.shard_paths(str(tmp_path), "d", 3)
    assert expected[2].endswith("d-00002-of-00003.tfrecord")
    assert records.list_shards(str(tmp_path)) == expected
    assert records.list_shards(records.manifest_path(str(tmp_path), "d")) == expected
    assert records.list_shards(str(tmp_path / "d-*.tfrecord")) == expected
    assert records.list_shards(expected[1]) == [expected[1]]
    with pytest.raises(FileNotFoundError, match="nowhere.*tools/convert.py"):
        records.list_shards(str(tmp_path / "nowhere"))
    assert records.find_manifest(str(tmp_path / "nowhere")) is None


def test_landmarks_feature_round_trip_and_absent_as_nan():
    import numpy as np
    landmarks = np.arange(10, dtype=np.float32).reshape(5, 2) + 0.25
    _, label, parsed = records.parse_example_with_landmarks(records.serialize_example(b"x", 3, landmarks))
    np.testing.assert_array_equal(parsed.numpy(), landmarks)
    assert int(label) == 3 and bool(records.has_landmarks(parsed))
    _, _, missing = records.parse_example_with_landmarks(records.serialize_example(b"x", 3))
    assert missing.shape == (5, 2) and not bool(records.has_landmarks(missing))
    added = records.with_landmarks(records.serialize_example(b"y", 4), landmarks)
    image, label, parsed = records.parse_example_with_landmarks(added)
    assert image.numpy() == b"y" and int(label) == 4
    np.testing.assert_array_equal(parsed.numpy(), landmarks)
    with pytest.raises(ValueError, match=r"\[5, 2\]"):
        records.serialize_example(b"x", 1, np.zeros((4, 2)))


def test_python_record_reader_matches_tensorflow(tmp_path):
    path = str(tmp_path / "a.tfrecord")
    payloads = [b"", b"a" * 300, b"xyz"]
    with tf.io.TFRecordWriter(path) as writer:
        for payload in payloads:
            writer.write(payload)
    assert list(records.iter_records(path)) == [bytes(r.numpy()) for r in tf.data.TFRecordDataset(path)]
    assert records.count_records(path) == 3
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:-5])
    with pytest.raises(ValueError, match="truncated"):
        records.count_records(path)
    with pytest.raises(ValueError, match="truncated"):
        list(records.iter_records(path))
