"""Benchmark: RecordIO -> TFRecord conversion speed (records/s) on a synthetic .rec of small JPEG faces.

  python bench/convert.py [--records=20000] [--workers=2] [--quick]

Prints human-readable lines, then ONE JSON line. Target: >= 5,000 records/s with 2 workers on 2 cores.
"""
import os
import platform
import tempfile
import time

from mtarcface_tf.quiet import quiet_tensorflow

quiet_tensorflow()  # first: TensorFlow's log lines off (--verbosity=0 or MTARCFACE_TF_LOGS=1 bring them back)

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from mtarcface_tf.data import convert, recordio  # noqa: E402
from mtarcface_tf.results import report_result  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("records", 20_000, "Images in the synthetic .rec.")
flags.DEFINE_integer("workers", 2, "Conversion worker processes.")
flags.DEFINE_integer("images_per_identity", 50, "Images per identity in the synthetic .rec.")
flags.DEFINE_integer("distinct_images", 64, "Distinct random JPEGs the records cycle through.")
flags.DEFINE_bool("quick", False, "3,000 records instead of --records.")

TARGET_RECORDS_PER_S = 5_000


def _jpegs(count, seed=0):
    """Returns ``count`` encoded 112x112 JPEGs of smooth random images (a few KB each, like aligned faces)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        small = rng.integers(0, 256, (14, 14, 3), dtype=np.uint8)
        image = cv2.resize(small, (112, 112), interpolation=cv2.INTER_CUBIC)
        out.append(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes())
    return out


def make_rec(rec_path, num_images, per_identity, distinct):
    """Writes an insightface-style .rec/.idx (header, images, identity records); returns the identity count."""
    jpegs = _jpegs(distinct)
    labels = np.arange(num_images) // per_identity
    images = (jpegs[key % distinct] for key in range(1, num_images + 1))
    return recordio.write_training_set(rec_path, labels, images)[1]


def main(argv):
    del argv
    num = 3_000 if FLAGS.quick else FLAGS.records
    with tempfile.TemporaryDirectory() as tmp:
        rec = os.path.join(tmp, "train.rec")
        identities = make_rec(rec, num, FLAGS.images_per_identity, FLAGS.distinct_images)
        size_mb = os.path.getsize(rec) / 2**20
        print(f"synthetic .rec: {num} images, {identities} identities, {size_mb:.1f} MB")
        start = time.perf_counter()
        manifest = convert.convert_recordio(rec, os.path.join(tmp, "out"), "train", workers=FLAGS.workers,
                                            num_shards=FLAGS.workers, progress=False)
        seconds = time.perf_counter() - start
    if manifest["images"] != num or manifest["identities"] != identities:
        raise SystemExit(f"conversion wrote {manifest['images']} images / {manifest['identities']} identities, "
                         f"expected {num} / {identities}")
    rate = num / seconds
    print(f"converted {num} records in {seconds:.2f} s with {FLAGS.workers} workers: {rate:,.0f} records/s "
          f"(target >= {TARGET_RECORDS_PER_S:,})")
    figures = {"bench": "convert", "records_per_s": round(rate, 1), "records": num,
               "workers": FLAGS.workers, "seconds": round(seconds, 3), "target_records_per_s":
               TARGET_RECORDS_PER_S, "machine": f"{platform.node()} {os.cpu_count()} cpus"}
    report_result('convert_quick' if FLAGS.quick else 'convert', figures)


if __name__ == "__main__":
    app.run(main)
