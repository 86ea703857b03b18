"""TFDS builders (optional: ``pip install mtarcface_tf[datasets]``) for insightface-format data and SynthFaces.

* ``InsightfaceFaces`` reads a ``manual_dir`` holding insightface's ``train.rec`` / ``train.idx`` and verification
  ``*.bin`` files. Config ``train``: split ``train`` of ``{image, label}``; config ``verification``: one split per
  ``.bin`` (named after the file) of ``{image1, image2, issame}``. Image bytes are stored as they are.
* ``SynthFaces`` calls ``mtarcface_tf.data.synthetic.generate_dataset(output_dir, **generator_kwargs)`` and stores
  the TFRecords it writes (``train.manifest.json``'s shards, else all ``*.tfrecord`` there) as split ``train``.

Without tensorflow_datasets the module imports and ``tfds_available()`` is False; the builders are then None.
"""
import glob
import os
import tempfile

import numpy as np
import tensorflow as tf

from mtarcface_tf.data import bin_pairs, records
from mtarcface_tf.data.recordio import RecordIOReader

try:
    import tensorflow_datasets as tfds
except ImportError:
    tfds = None

TFDS_INSTALL = "pip install 'mtarcface_tf[datasets]'  (or: pip install tensorflow-datasets)"
IMAGE_SIZE = 112


def tfds_available():
    """Returns True when tensorflow_datasets can be imported."""
    return tfds is not None


def _image_label_features():
    return tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(None, None, 3)),
        "label": tfds.features.Tensor(shape=(), dtype=tf.int64),
    })


def _records_examples(files):
    """Yields ``(key, {image, label})`` from TFRecord shards in the ``records`` schema."""
    dataset = tf.data.TFRecordDataset(files).map(records.parse_example)
    for i, (image, label) in enumerate(dataset.as_numpy_iterator()):
        yield i, {"image": image, "label": int(label)}


if tfds is not None:

    class InsightfaceFaces(tfds.core.GeneratorBasedBuilder):
        """insightface training RecordIO (config ``train``) and verification ``.bin`` pairs (``verification``)."""

        VERSION = tfds.core.Version("1.0.0")
        BUILDER_CONFIGS = [
            tfds.core.BuilderConfig(name="train", description="train.rec images with int identity labels"),
            tfds.core.BuilderConfig(name="verification", description="one split per .bin: image pairs, issame"),
        ]
        MANUAL_DOWNLOAD_INSTRUCTIONS = ("Put insightface's train.rec, train.idx and the verification *.bin files "
                                        "(lfw.bin, cfp_fp.bin, agedb_30.bin, ...) into manual_dir.")

        def _info(self):
            if self.builder_config.name == "train":
                features = _image_label_features()
            else:
                features = tfds.features.FeaturesDict({
                    "image1": tfds.features.Image(shape=(None, None, 3)),
                    "image2": tfds.features.Image(shape=(None, None, 3)),
                    "issame": tfds.features.Tensor(shape=(), dtype=tf.bool),
                })
            return tfds.core.DatasetInfo(builder=self, features=features,
                                         homepage="https://github.com/deepinsight/insightface")

        def _split_generators(self, dl_manager):
            manual = os.fspath(dl_manager.manual_dir)
            if self.builder_config.name == "train":
                return {"train": self._generate_examples(os.path.join(manual, "train.rec"))}
            bins = sorted(glob.glob(os.path.join(manual, "*.bin")))
            if not bins:
                raise FileNotFoundError(f"{manual}: no verification .bin files ({self.MANUAL_DOWNLOAD_INSTRUCTIONS})")
            return {os.path.splitext(os.path.basename(b))[0]: self._generate_examples(b) for b in bins}

        def _generate_examples(self, path):
            """Yields the examples of a ``.rec`` (config ``train``) or of a ``.bin`` (``verification``)."""
            if self.builder_config.name == "train":
                yield from self._generate_train(path)
            else:
                yield from self._generate_pairs(path)

        def _generate_train(self, rec_path):
            with RecordIOReader(rec_path) as reader:
                for key, (label, image) in enumerate(reader):
                    yield key, {"image": image, "label": int(label if np.ndim(label) == 0 else label[0])}

        def _generate_pairs(self, bin_path):
            bins, issame = bin_pairs.read_bin_raw(bin_path)
            for i, same in enumerate(issame):
                yield i, {"image1": bins[2 * i], "image2": bins[2 * i + 1], "issame": bool(same)}

    class SynthFaces(tfds.core.GeneratorBasedBuilder):
        """SynthFaces rendered by ``mtarcface_tf.data.synthetic.generate_dataset``; pass its keyword arguments
        as ``SynthFaces(generator_kwargs={...})``."""

        VERSION = tfds.core.Version("1.0.0")

        def __init__(self, *, generator_kwargs=None, **kwargs):
            self.generator_kwargs = dict(generator_kwargs or {})
            super().__init__(**kwargs)

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=_image_label_features())

        def _split_generators(self, dl_manager):
            del dl_manager
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            """Generates SynthFaces into a temporary directory and yields its records."""
            from mtarcface_tf.data import synthetic
            with tempfile.TemporaryDirectory() as tmp:
                synthetic.generate_dataset(tmp, **self.generator_kwargs)
                train_manifest = records.manifest_path(tmp, "train")
                yield from _records_examples(records.list_shards(train_manifest if os.path.exists(train_manifest)
                                                                 else tmp))

else:
    InsightfaceFaces = SynthFaces = None
