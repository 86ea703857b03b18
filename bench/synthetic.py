"""Benchmark: SynthFaces rendering speed (faces/s), one process and the full generate_dataset with workers.

  python bench/synthetic.py [--faces=4000] [--workers=2] [--image_size=112] [--quick]

Prints human-readable lines, then ONE JSON line. Target: >= 500 faces/s at 112x112 with 2 workers on 2 cores
(end to end: render, JPEG-encode, write TFRecords).
"""
import os
import platform
import tempfile
import time

from mtarcface_tf.quiet import quiet_tensorflow

quiet_tensorflow()  # first: TensorFlow's log lines off (--verbosity=0 or MTARCFACE_TF_LOGS=1 bring them back)

from absl import app, flags  # noqa: E402

from mtarcface_tf.data import synthetic  # noqa: E402
from mtarcface_tf.results import report_result  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("faces", 4000, "Training faces generated end to end (identities x 20 images).")
flags.DEFINE_integer("workers", 2, "Rendering processes of generate_dataset.")
flags.DEFINE_integer("image_size", 112, "Side of the faces.")
flags.DEFINE_bool("quick", False, "1,000 faces instead of --faces.")

TARGET_FACES_PER_S = 500
IMAGES_PER_IDENTITY = 20


def main(argv):
    del argv
    import cv2
    import tensorflow  # noqa: F401  imported before timing: generate_dataset writes TFRecords
    faces = 1000 if FLAGS.quick else FLAGS.faces
    identities = max(1, faces // IMAGES_PER_IDENTITY)
    cv2.setNumThreads(1)
    synthetic.render_faces(1, 2, image_size=FLAGS.image_size)  # warm-up
    one = min(400, faces) // IMAGES_PER_IDENTITY
    start = time.perf_counter()
    synthetic.render_faces(one, IMAGES_PER_IDENTITY, image_size=FLAGS.image_size, seed=1)
    single = one * IMAGES_PER_IDENTITY / (time.perf_counter() - start)
    print(f"render_faces, one process: {single:.0f} faces/s at {FLAGS.image_size}x{FLAGS.image_size}")
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        synthetic.generate_dataset(os.path.join(tmp, "synth"), identities, IMAGES_PER_IDENTITY, 0, 0,
                                   image_size=FLAGS.image_size, workers=FLAGS.workers, progress=False)
        seconds = time.perf_counter() - start
    total = identities * IMAGES_PER_IDENTITY
    rate = total / seconds
    print(f"generate_dataset, {FLAGS.workers} workers: {total} faces in {seconds:.1f} s = {rate:.0f} faces/s "
          f"(target >= {TARGET_FACES_PER_S}; includes starting the worker processes)")
    figures = {"bench": "synthetic", "faces_per_s": round(rate, 1),
               "single_process_faces_per_s": round(single, 1),
               "faces": total, "image_size": FLAGS.image_size, "workers": FLAGS.workers,
               "cpu_count": os.cpu_count(), "machine": platform.machine(),
               "target_faces_per_s": TARGET_FACES_PER_S, "meets_target": rate >= TARGET_FACES_PER_S}
    report_result('synthetic_quick' if FLAGS.quick else 'synthetic', figures)


if __name__ == "__main__":
    app.run(main)
