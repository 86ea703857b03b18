"""The TFRecord schema (the reference converter's), where shards and manifests live, and reading them back.

Each record is a ``tf.train.Example`` with ``image_raw`` (encoded JPEG/PNG bytes of an aligned 112x112 face)
and ``label`` (int64 identity), so TFRecords written by dmonterom/face_recognition_TF2 train here unchanged.
Optionally ``landmarks`` (LANDMARKS_KEY): float32 [10], the five landmarks (x0, y0, .., x4, y4) in pixels of the
stored image (pixel centres at integers), ArcFace template order (eyes, nose tip, mouth corners); records without it
parse with NaN landmarks (``has_landmarks`` is False for them).
Shards are named ``NAME-00000-of-000NN.tfrecord``; ``NAME.manifest.json`` beside them records what is inside.
Both writers (the converters' engine and ``ShardedRecordWriter``) are ``shards.py``.
"""
import glob
import json
import os

import numpy as np
import tensorflow as tf

LANDMARKS_KEY = "landmarks"
NUM_LANDMARKS = 5
FEATURES = {
    "image_raw": tf.io.FixedLenFeature([], tf.string),
    "label": tf.io.FixedLenFeature([], tf.int64),
}
OPTIONAL_FEATURES = {
    LANDMARKS_KEY: tf.io.FixedLenFeature([2 * NUM_LANDMARKS], tf.float32,
                                         default_value=[float("nan")] * (2 * NUM_LANDMARKS)),
}
SHARD_PATTERN = "{name}-{index:05d}-of-{count:05d}.tfrecord"
MANIFEST_SUFFIX = ".manifest.json"


def serialize_example(image_bytes, label, landmarks=None):
    """Returns one serialized ``tf.train.Example`` from encoded image bytes and an int identity label.

    ``landmarks``: optional float [5, 2] (x, y) pixels of the stored image, template order; stored as
    LANDMARKS_KEY.
    """
    feature = {
        "image_raw": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image_bytes])),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
    }
    if landmarks is not None:
        values = np.asarray(landmarks, np.float32).reshape(-1)
        if values.shape != (2 * NUM_LANDMARKS,):
            raise ValueError(f"landmarks must be [{NUM_LANDMARKS}, 2], got {np.shape(landmarks)}")
        feature[LANDMARKS_KEY] = tf.train.Feature(float_list=tf.train.FloatList(value=values.tolist()))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def parse_example(serialized):
    """Parses one serialized example (graph-safe) into ``(image_raw: tf.string scalar, label: tf.int64 scalar)``."""
    parsed = tf.io.parse_single_example(serialized, FEATURES)
    return parsed["image_raw"], parsed["label"]


def parse_example_with_landmarks(serialized):
    """Parses one serialized example (graph-safe) into ``(image_raw, label, landmarks float32 [5, 2])``.

    Landmarks are NaN for records written without them (see ``has_landmarks``).
    """
    parsed = tf.io.parse_single_example(serialized, {**FEATURES, **OPTIONAL_FEATURES})
    return parsed["image_raw"], parsed["label"], tf.reshape(parsed[LANDMARKS_KEY], [NUM_LANDMARKS, 2])


def has_landmarks(landmarks):
    """Returns bool [...]: True where ``landmarks`` float32 [..., 5, 2] are all finite (a record that stored them)."""
    return tf.reduce_all(tf.math.is_finite(landmarks), axis=[-2, -1])


def iter_records(path):
    """Yields the serialized records (bytes) of one uncompressed TFRecord file, in order, without TensorFlow
    (safe in forked worker processes). Raises ValueError naming ``path`` when the file ends mid-record."""
    with open(path, "rb") as f:
        while True:
            header = f.read(12)           # uint64 length + uint32 masked CRC of the length
            if not header:
                return
            if len(header) < 12:
                raise ValueError(f"{path}: truncated TFRecord file (a record header is cut off)")
            length = int.from_bytes(header[:8], "little")
            data = f.read(length)
            if len(data) < length or len(f.read(4)) < 4:   # the data and its uint32 masked CRC
                raise ValueError(f"{path}: truncated TFRecord file (a record is cut off)")
            yield data


def count_records(path):
    """Returns the number of records in one uncompressed TFRecord file (reads only the headers)."""
    count, offset, size = 0, 0, os.path.getsize(path)
    with open(path, "rb") as f:
        while offset < size:
            f.seek(offset)
            header = f.read(8)
            if len(header) < 8:
                raise ValueError(f"{path}: truncated TFRecord file (a record header is cut off)")
            offset += 16 + int.from_bytes(header, "little")
            count += 1
    if offset != size:
        raise ValueError(f"{path}: truncated TFRecord file (the last record is cut off)")
    return count


def with_landmarks(serialized, landmarks):
    """Returns the serialized example with the LANDMARKS_KEY feature set to ``landmarks`` [5, 2] (other features
    kept as they are)."""
    example = tf.train.Example.FromString(serialized)
    values = np.asarray(landmarks, np.float32).reshape(-1).tolist()
    example.features.feature[LANDMARKS_KEY].float_list.value[:] = values
    return example.SerializeToString()


def shard_paths(output_dir, name, num_shards):
    """Returns the ``num_shards`` shard paths ``output_dir/NAME-0000i-of-000NN.tfrecord`` in order."""
    return [os.path.join(output_dir, SHARD_PATTERN.format(name=name, index=i, count=num_shards))
            for i in range(num_shards)]


def manifest_path(output_dir, name):
    """Returns the path of the JSON manifest of data set ``name`` in ``output_dir``."""
    return os.path.join(output_dir, name + MANIFEST_SUFFIX)


def list_shards(path):
    """Returns the sorted TFRecord files named by ``path``: a directory, a manifest, a glob or one file.

    Raises FileNotFoundError (naming ``path``) when nothing matches.
    """
    if os.path.isdir(path):
        files = glob.glob(os.path.join(path, "*.tfrecord"))
    elif path.endswith(MANIFEST_SUFFIX) and os.path.isfile(path):
        manifest = read_manifest(path)
        files = [os.path.join(os.path.dirname(path), f) for f in manifest["shards"]]
    else:
        files = glob.glob(path)
    files = sorted(f for f in files if os.path.isfile(f))
    if not files:
        raise FileNotFoundError(f"{path}: no TFRecord files found (give a directory, a *.manifest.json, "
                                f"a glob or a .tfrecord file; make one with tools/convert.py)")
    return files


def read_manifest(path):
    """Returns the manifest dict (``images``, ``identities``, ``shards``, ``source``, ``command``) at ``path``."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def find_manifest(path):
    """Returns the manifest dict that describes the records at ``path`` (directory or manifest), or None."""
    if path.endswith(MANIFEST_SUFFIX) and os.path.isfile(path):
        return read_manifest(path)
    if os.path.isdir(path):
        found = sorted(glob.glob(os.path.join(path, "*" + MANIFEST_SUFFIX)))
        if len(found) == 1:
            return read_manifest(found[0])
    return None


