"""Benchmark: training-input throughput (img/s) with decode only and with mask augmentation (p=0.5).

  python bench/pipeline.py [--images=2000] [--batch_size=128] [--batches=60] [--quick]

Writes a TFRecord of 112x112 JPEGs (random smooth content, with landmarks: the template under a random rotation)
to a temporary directory, then runs pipeline.make_train_dataset over it with mask_probability 0, and 0.5 with
mask_placement "template" and "landmarks" (the default), alternating, after a warm-up each, ``--rounds`` times
(default 10), and reports the MEDIAN over the rounds of each setting's img/s (wall clock) and of the per-round mask
cost (1 - with masks / decode only of the same round), with its range, plus images per CPU-second of this process.
The painter is compiled with XLA once per shape and process (a few seconds each, at the start of training): an
untimed first round of each setting compiles the shapes it meets, so that the rounds measure the steady state (a
rare shape first met later slows its round, which the median discounts).
Prints human-readable lines, then ONE JSON line, saved with results.save_result as docs/results/pipeline.json
(pipeline_quick.json with --quick).
Targets: >= 1,500 img/s with masks on 2 cores at 112x112; masks cost <= 30% of decode-only throughput.
"""
import os
import statistics
import tempfile
import time

from mtarcface_tf.quiet import quiet_tensorflow

quiet_tensorflow()  # first: TensorFlow's log lines off (--verbosity=0 or MTARCFACE_TF_LOGS=1 bring them back)

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from mtarcface_tf.results import report_result  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("images", 2000, "JPEGs in the temporary TFRecord.")
flags.DEFINE_integer("batch_size", 128, "Batch size.")
flags.DEFINE_integer("batches", 60, "Timed batches per run.")
flags.DEFINE_integer("warmup", 10, "Untimed batches before timing.")
flags.DEFINE_integer("image_size", 112, "Image size.")
flags.DEFINE_integer("rounds", 10, "Alternating rounds of both settings; the median of each is reported.")
flags.DEFINE_bool("quick", False, "Fewer images and batches (finishes in well under 30 s).")

TARGET_IMG_S = 1_500
TARGET_MASK_COST = 0.30


def write_records(directory, count, size, seed=0):
    """Writes ``count`` random smooth JPEG faces-sized images with landmarks (the template rotated up to 20 degrees
    about the centre) into ``directory``; returns the manifest path."""
    from mtarcface_tf.data import masks, records, shards
    rng = np.random.default_rng(seed)
    template = masks.template_points(size)
    with shards.ShardedRecordWriter(directory, "bench", num_shards=4) as writer:
        for i in range(count):
            small = rng.integers(0, 256, (14, 14, 3), dtype=np.uint8)
            image = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
            matrix = cv2.getRotationMatrix2D(((size - 1) / 2, (size - 1) / 2), rng.uniform(-20, 20), 1.0)
            landmarks = template @ matrix[:, :2].T + matrix[:, 2]
            writer.write(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes(), i % 100,
                         landmarks)
        writer.close(source="bench/pipeline.py")
    return records.manifest_path(directory, "bench")


def measure(path, mask_probability, placement, batches, warmup):
    """Returns (img/s of wall time, img per CPU-second of this process) over ``batches`` batches after warm-up."""
    from mtarcface_tf.data import pipeline
    dataset = pipeline.make_train_dataset(path, FLAGS.batch_size, image_size=FLAGS.image_size,
                                          mask_probability=mask_probability, shuffle_buffer=1000,
                                          mask_placement=placement)
    iterator = iter(dataset)
    for _ in range(warmup):
        next(iterator)
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(batches):
        images, _ = next(iterator)
    images.numpy()
    count = batches * FLAGS.batch_size
    return count / (time.perf_counter() - start), count / (time.process_time() - cpu_start)


def _range(values, digits=1):
    values = list(values)
    return [round(min(values), digits), round(max(values), digits)]


def main(argv):
    del argv
    count = 1000 if FLAGS.quick else FLAGS.images
    batches = 10 if FLAGS.quick else FLAGS.batches
    rounds = 3 if FLAGS.quick else FLAGS.rounds
    warmup = 3 if FLAGS.quick else FLAGS.warmup
    with tempfile.TemporaryDirectory() as directory:
        path = write_records(directory, count, FLAGS.image_size)
        # Alternate the settings, so that other jobs on the machine slow all alike within a round.
        runs = {"decode_only": [], "template": [], "landmarks": []}
        settings = {"decode_only": (0.0, "template"), "template": (0.5, "template"), "landmarks": (0.5, "landmarks")}
        for name in runs:
            measure(path, *settings[name], batches, warmup)
        for _ in range(rounds):
            for name, results in runs.items():
                results.append(measure(path, *settings[name], batches, warmup))
    wall = {name: statistics.median(r[0] for r in results) for name, results in runs.items()}
    cpu = {name: statistics.median(r[1] for r in results) for name, results in runs.items()}
    costs = {name: [1.0 - masked[0] / clean[0] for clean, masked in zip(runs["decode_only"], runs[name])]
             for name in ("template", "landmarks")}
    cost = {name: statistics.median(values) for name, values in costs.items()}
    cost_cpu = {name: 1.0 - cpu[name] / cpu["decode_only"] for name in ("template", "landmarks")}
    load = os.getloadavg()[0]
    print(f"median of {rounds} alternating rounds (load average {load:.1f}):")
    for name in runs:
        print(f"{name:12s}: {wall[name]:8.0f} img/s  range {min(r[0] for r in runs[name]):.0f}-"
              f"{max(r[0] for r in runs[name]):.0f}  ({FLAGS.image_size}x{FLAGS.image_size}, batch {FLAGS.batch_size})")
    for name in ("template", "landmarks"):
        print(f"mask cost, {name} placement: {cost[name]:.1%} of decode-only throughput (target <= "
              f"{TARGET_MASK_COST:.0%}), range {min(costs[name]):.1%}-{max(costs[name]):.1%}; per CPU-second "
              f"{cost_cpu[name]:.1%}")
    figures = {"statistic": f"median of {rounds} alternating rounds",
               "decode_only_img_s": round(wall["decode_only"], 1), "with_masks_img_s": round(wall["landmarks"], 1),
               "template_masks_img_s": round(wall["template"], 1),
               "decode_only_img_s_range": _range(r[0] for r in runs["decode_only"]),
               "with_masks_img_s_range": _range(r[0] for r in runs["landmarks"]),
               "mask_cost": round(cost["landmarks"], 3), "template_mask_cost": round(cost["template"], 3),
               "mask_cost_range": _range(costs["landmarks"], 3),
               "template_mask_cost_range": _range(costs["template"], 3),
               "decode_only_img_per_cpu_s": round(cpu["decode_only"], 1),
               "with_masks_img_per_cpu_s": round(cpu["landmarks"], 1),
               "mask_cost_cpu": round(cost_cpu["landmarks"], 3),
               "template_mask_cost_cpu": round(cost_cpu["template"], 3),
               "image_size": FLAGS.image_size, "batch_size": FLAGS.batch_size, "images": count,
               "batches_per_run": batches}
    report_result('pipeline_quick' if FLAGS.quick else 'pipeline', figures)


if __name__ == "__main__":
    app.run(main)
