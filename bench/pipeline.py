"""Benchmark: training-input throughput (img/s) with decode only and with mask augmentation (p=0.5).

  python bench/pipeline.py [--images=2000] [--batch_size=128] [--batches=60] [--quick]

Writes a TFRecord of 112x112 JPEGs (random smooth content) to a temporary directory, then runs
pipeline.make_train_dataset over it with mask_probability 0 and 0.5, alternating, after a warm-up each,
``--rounds`` times (default 10), and reports the MEDIAN over the rounds of each setting's img/s (wall clock) and
of the per-round mask cost (1 - with masks / decode only of the same round), with its range, plus images per
CPU-second of this process. Prints human-readable lines, then ONE JSON line, saved with results.save_result as
docs/results/pipeline.json (pipeline_quick.json with --quick).
Targets: >= 1,500 img/s with masks on 2 cores at 112x112; masks cost <= 30% of decode-only throughput.
"""
import json
import os
import statistics
import tempfile
import time

import cv2
import numpy as np
from absl import app, flags

from mtarcface_tf.results import save_result

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
    """Writes ``count`` random smooth JPEG faces-sized images into ``directory``; returns the manifest path."""
    from mtarcface_tf.data import records, shards
    rng = np.random.default_rng(seed)
    with shards.ShardedRecordWriter(directory, "bench", num_shards=4) as writer:
        for i in range(count):
            small = rng.integers(0, 256, (14, 14, 3), dtype=np.uint8)
            image = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
            writer.write(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes(), i % 100)
        writer.close(source="bench/pipeline.py")
    return records.manifest_path(directory, "bench")


def measure(path, mask_probability, batches, warmup):
    """Returns (img/s of wall time, img per CPU-second of this process) over ``batches`` batches after warm-up."""
    from mtarcface_tf.data import pipeline
    dataset = pipeline.make_train_dataset(path, FLAGS.batch_size, image_size=FLAGS.image_size,
                                          mask_probability=mask_probability, shuffle_buffer=1000)
    iterator = iter(dataset)
    for _ in range(warmup):
        next(iterator)
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(batches):
        images, _ = next(iterator)
    images.numpy()
    count = batches * FLAGS.batch_size
    return count / (time.perf_counter() - start), count / (time.process_time() - cpu_start)


def _range(values):
    values = list(values)
    return [round(min(values), 1), round(max(values), 1)]


def main(argv):
    del argv
    count = 1000 if FLAGS.quick else FLAGS.images
    batches = 10 if FLAGS.quick else FLAGS.batches
    rounds = 3 if FLAGS.quick else FLAGS.rounds
    warmup = 3 if FLAGS.quick else FLAGS.warmup
    with tempfile.TemporaryDirectory() as directory:
        path = write_records(directory, count, FLAGS.image_size)
        # Alternate the two settings, so that other jobs on the machine slow both alike within a round.
        runs = {0.0: [], 0.5: []}
        for _ in range(rounds):
            for probability, results in runs.items():
                results.append(measure(path, probability, batches, warmup))
    decode_only, with_masks = (statistics.median(r[0] for r in runs[p]) for p in (0.0, 0.5))
    decode_cpu, masks_cpu = (statistics.median(r[1] for r in runs[p]) for p in (0.0, 0.5))
    costs = [1.0 - masked[0] / clean[0] for clean, masked in zip(runs[0.0], runs[0.5])]
    costs_cpu = [1.0 - masked[1] / clean[1] for clean, masked in zip(runs[0.0], runs[0.5])]
    cost, cost_cpu = statistics.median(costs), statistics.median(costs_cpu)
    load = os.getloadavg()[0]
    print(f"median of {rounds} alternating rounds (load average {load:.1f}):")
    print(f"decode only : {decode_only:8.0f} img/s  ({FLAGS.image_size}x{FLAGS.image_size}, batch {FLAGS.batch_size})"
          f"  range {min(r[0] for r in runs[0.0]):.0f}-{max(r[0] for r in runs[0.0]):.0f}")
    print(f"with masks  : {with_masks:8.0f} img/s  (p=0.5; target >= {TARGET_IMG_S})"
          f"  range {min(r[0] for r in runs[0.5]):.0f}-{max(r[0] for r in runs[0.5]):.0f}")
    print(f"mask cost   : {cost:8.1%}  of decode-only throughput (target <= {TARGET_MASK_COST:.0%}), "
          f"range {min(costs):.1%}-{max(costs):.1%}")
    print(f"per CPU-second of this process: decode only {decode_cpu:.0f}, with masks {masks_cpu:.0f} img, "
          f"mask cost {cost_cpu:.1%} (less sensitive to other load)")
    figures = {"statistic": f"median of {rounds} alternating rounds",
               "decode_only_img_s": round(decode_only, 1), "with_masks_img_s": round(with_masks, 1),
               "decode_only_img_s_range": _range(r[0] for r in runs[0.0]),
               "with_masks_img_s_range": _range(r[0] for r in runs[0.5]),
               "mask_cost": round(cost, 3), "mask_cost_range": [round(min(costs), 3), round(max(costs), 3)],
               "decode_only_img_per_cpu_s": round(decode_cpu, 1), "with_masks_img_per_cpu_s": round(masks_cpu, 1),
               "mask_cost_cpu": round(cost_cpu, 3), "image_size": FLAGS.image_size, "batch_size": FLAGS.batch_size,
               "images": count, "batches_per_run": batches}
    print(f"saved {save_result('pipeline_quick' if FLAGS.quick else 'pipeline', figures)}")
    print(json.dumps(figures))


if __name__ == "__main__":
    app.run(main)
