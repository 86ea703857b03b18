"""The TFRecord schema (the reference converter's), where shards and manifests live, and reading them back.

Each record is a ``tf.train.Example`` with ``image_raw`` (encoded JPEG/PNG bytes of an aligned 112x112 face)
and ``label`` (int64 identity), so TFRecords written by dmonterom/face_recognition_TF2 train here unchanged.
Shards are named ``NAME-00000-of-000NN.tfrecord``; ``NAME.manifest.json`` beside them records what is inside.
Both writers (the converters' engine and ``ShardedRecordWriter``) are ``shards.py``.
"""
import glob
import json
import os

import tensorflow as tf

FEATURES = {
    "image_raw": tf.io.FixedLenFeature([], tf.string),
    "label": tf.io.FixedLenFeature([], tf.int64),
}
SHARD_PATTERN = "{name}-{index:05d}-of-{count:05d}.tfrecord"
MANIFEST_SUFFIX = ".manifest.json"


def serialize_example(image_bytes, label):
    """Returns one serialized ``tf.train.Example`` from encoded image bytes and an int identity label."""
    feature = {
        "image_raw": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image_bytes])),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def parse_example(serialized):
    """Parses one serialized example (graph-safe) into ``(image_raw: tf.string scalar, label: tf.int64 scalar)``."""
    parsed = tf.io.parse_single_example(serialized, FEATURES)
    return parsed["image_raw"], parsed["label"]


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


def atomic_write_text(path, text):
    """Writes ``text`` to ``path`` through a temporary name, renamed when complete."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
