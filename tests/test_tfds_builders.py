"""TFDS builders over insightface-format data in a manual_dir (tensorflow-datasets comes with the [dev] extra)."""
import sys
import types

import cv2
import numpy as np
import pytest

from mtarcface_tf.data import recordio, shards, tfds_builders
from mtarcface_tf.data.bin_pairs import save_bin

import tensorflow_datasets as tfds  # noqa: E402  (part of .[dev]: this test must run in CI, not skip)


def jpeg(seed):
    image = np.random.default_rng(seed).integers(0, 256, (112, 112, 3), dtype=np.uint8)
    return cv2.imencode(".jpg", image)[1].tobytes()


@pytest.fixture
def manual_dir(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    payloads = [recordio.pack_payload([5, 7], b"")]
    payloads += [recordio.pack_payload(float(i // 2), jpeg(i)) for i in range(4)]
    payloads += [recordio.pack_payload([1, 3], b""), recordio.pack_payload([3, 5], b"")]
    recordio.write_recordio(str(manual / "train.rec"), str(manual / "train.idx"), enumerate(payloads))
    images = np.random.default_rng(9).integers(0, 256, (4, 112, 112, 3), dtype=np.uint8)
    save_bin(str(manual / "lfw.bin"), images, [True, False])
    return manual


def test_insightface_train_and_verification(tmp_path, manual_dir):
    config = tfds.download.DownloadConfig(manual_dir=str(manual_dir))
    train = tfds_builders.InsightfaceFaces(config="train", data_dir=str(tmp_path / "tfds"))
    train.download_and_prepare(download_config=config)
    rows = sorted(tfds.as_numpy(train.as_dataset(split="train")), key=lambda r: (r["label"], r["image"].sum()))
    assert [int(r["label"]) for r in rows] == [0, 0, 1, 1]
    assert rows[0]["image"].shape == (112, 112, 3)
    pairs = tfds_builders.InsightfaceFaces(config="verification", data_dir=str(tmp_path / "tfds"))
    pairs.download_and_prepare(download_config=config)
    rows = list(tfds.as_numpy(pairs.as_dataset(split="lfw")))
    assert sorted(bool(r["issame"]) for r in rows) == [False, True]


def test_synthfaces_reads_generator_output(tmp_path, monkeypatch):
    def generate_dataset(output_dir, identities=2):
        with shards.ShardedRecordWriter(output_dir, "train") as writer:
            for i in range(identities * 2):
                writer.write(jpeg(i), i // 2)
            writer.close()

    monkeypatch.setitem(sys.modules, "mtarcface_tf.data.synthetic",
                        types.SimpleNamespace(generate_dataset=generate_dataset))
    import mtarcface_tf.data as data_package
    monkeypatch.setattr(data_package, "synthetic", sys.modules["mtarcface_tf.data.synthetic"], raising=False)
    builder = tfds_builders.SynthFaces(generator_kwargs={"identities": 3}, data_dir=str(tmp_path / "tfds"))
    builder.download_and_prepare()
    labels = sorted(int(r["label"]) for r in tfds.as_numpy(builder.as_dataset(split="train")))
    assert labels == [0, 0, 1, 1, 2, 2]
