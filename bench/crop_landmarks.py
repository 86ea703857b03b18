"""Benchmark: the five landmarks of 112x112 aligned crops (``tools/convert.py --source=tfrecord --add_landmarks``):
the fast path (MTCNN's O-Net on the template's box, refined on a box fitted to its first answer, RetinaFace where
O-Net is unsure) against the fixed box alone, and RetinaFace and MTCNN run as detectors on every crop.

  python bench/crop_landmarks.py [--synthetic=60] [--photos=../shared/data/realfaces-dev] [--stage_crops=32768]

Two sets: SynthFaces aligned crops with the generator's pose (yaw +-20 deg), compared with the exact landmarks; and
aligned crops of real photographs (RetinaFace on the whole photo, aligned to the template), compared with
RetinaFace's landmarks of the whole photo mapped through the alignment. For each method: crops without landmarks,
faces lost (crops where RetinaFace on the crop finds a face and the method gives none), mean, 90th percentile and
largest error (pixels of the crop), mean distance to RetinaFace-on-the-crop's landmarks, and ms per crop (one
crop at a time for the detectors, batches for O-Net). Then the whole stage (``convert.add_landmarks``: read,
decode, landmarks, write) on ``--stage_crops`` JPEG records (the real-photo crops repeated, else SynthFaces) with
2 worker processes, in a fresh process as the tool runs it: crops/s, and crops per CPU-second of all its processes
(the figure that holds on a shared machine, start-up included), and again on ``--stage_large_crops`` records: the
difference of the two runs is the stage's own rate with its start-up left out (what MS1MV2's 5.8M crops see); then,
in the first run's process, one worker's steady state
(``LandmarkJob.write`` after a warm-up, as a worker runs it: start-up, which MS1MV2's 5.8M crops make negligible,
left out), crops per CPU-second, and twice that as the projection for 2 idle cores. O-Net alone, one pass: crops
per CPU-second.
Prints human lines, then ONE JSON line (saved as docs/results/crop_landmarks.json).
"""
import os
import json
import resource
import subprocess
import sys
import tempfile
import time

from mtarcface_tf.quiet import quiet_tensorflow

quiet_tensorflow()  # first: TensorFlow's log lines off (--verbosity=0 or MTARCFACE_TF_LOGS=1 bring them back)

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("synthetic", 60, "SynthFaces crops.")
flags.DEFINE_string("photos", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data",
                                           "realfaces-dev"), "Folder of real photographs (skipped when absent).")
flags.DEFINE_integer("stage_crops", 32768, "Records the whole add_landmarks stage is timed on.")
flags.DEFINE_integer("stage_large_crops", 131072, "The stage timed again on this many records: the difference of "
                     "the two runs is its rate with start-up left out, as on MS1MV2's 5.8M crops (0: skip).")
flags.DEFINE_integer("workers", 2, "Worker processes of the timed stage.")
flags.DEFINE_string("stage_input", None, "Internal: time add_landmarks on this folder's records, print JSON.")
flags.DEFINE_bool("stage_steady", True, "Internal: with --stage_input, also time one worker's steady state.")
flags.DEFINE_float("onet_seconds", 5.0, "Seconds each O-Net-alone timing runs.")

POSE = {"rotation": 8.0, "scale": 0.05, "shift": 3.0, "yaw": 20.0}
SIZE = 112
WARM_UP_CROPS = 512   # records a worker's steady-state timing runs first, untimed


def errors(found, truth):
    """Mean landmark distance per crop (float [N], NaN where nothing was found)."""
    return np.linalg.norm(found - truth, axis=-1).mean(axis=-1)


def summary(found, truth, seconds, retinaface_on_crop):
    """Returns the figures of one method on one set (found: float [N, 5, 2], NaN rows where none)."""
    error = errors(found, truth)
    has, reference = ~np.isnan(error), ~np.isnan(errors(retinaface_on_crop, truth))
    agreement = errors(found, retinaface_on_crop)[has & reference]
    return {"crops": len(found), "no_face": int((~has).sum()), "faces_lost": int((reference & ~has).sum()),
            "mean_error_px": round(float(error[has].mean()), 2),
            "p90_error_px": round(float(np.percentile(error[has], 90)), 2),
            "max_error_px": round(float(error[has].max()), 2),
            "mean_distance_to_retinaface_on_crop_px": round(float(agreement.mean()), 2),
            "ms_per_crop": round(1000 * seconds / len(found), 2)}


def by_detector(detector, crops):
    """Landmarks of each crop found by ``detector`` (float32 [N, 5, 2], NaN rows where none) and seconds taken."""
    from mtarcface_tf.faces.detect import landmarks_on_aligned_crop
    landmarks_on_aligned_crop(detector, crops[0])   # untimed: the first call builds the detector's graphs
    start, found = time.perf_counter(), []
    for crop in crops:
        points = landmarks_on_aligned_crop(detector, crop)
        found.append(np.full((5, 2), np.nan, np.float32) if points is None else points)
    return np.stack(found), time.perf_counter() - start


def by_landmarker(landmarker, crops):
    """Landmarks from a CropLandmarker (float32 [N, 5, 2]), the share sent to its fallback, and seconds taken."""
    landmarker.onet(crops[:1])                      # untimed: builds the graph
    start = time.perf_counter()
    result = landmarker(crops)
    return result.landmarks, float(result.fallback.mean()), time.perf_counter() - start


def onet_cpu_rate(crops):
    """O-Net alone on the fixed box, batches of BATCH_SIZE: (crops per CPU-second of this process, crops per
    second)."""
    from mtarcface_tf.faces.crop_landmarks import CropLandmarker
    landmarker = CropLandmarker(fallback=None)
    batch = np.resize(crops, (landmarker.batch_size,) + crops.shape[1:])
    landmarker.onet(batch)
    done, start, wall = 0, time.process_time(), time.perf_counter()
    while time.perf_counter() - wall < FLAGS.onet_seconds:
        landmarker.onet(batch)
        done += len(batch)
    return round(done / (time.process_time() - start)), round(done / (time.perf_counter() - wall))


def time_stage(crops, count, workers, steady=True):
    """Times ``add_landmarks`` (fast path) on ``count`` JPEG records made of ``crops``; returns its figures (with
    one worker's steady state when ``steady``).

    The stage runs in a fresh process (``--stage_input``), as the tool runs it.
    """
    from mtarcface_tf.data import convert, shards
    from mtarcface_tf.images import encode_jpeg
    encoded = [encode_jpeg(crop, convert.DEFAULT_JPEG_QUALITY) for crop in crops]
    with tempfile.TemporaryDirectory() as folder:
        with shards.ShardedRecordWriter(os.path.join(folder, "src"), "train", num_shards=workers) as writer:
            for i in range(count):
                writer.write(encoded[i % len(encoded)], i // 16)
            writer.close()
        command = [sys.executable, os.path.abspath(__file__), f"--stage_input={folder}", f"--workers={workers}",
                   f"--stage_steady={steady}"]
        lines = subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip().splitlines()
    return json.loads(lines[-1])


class _Uncounted:
    """A progress counter that counts nothing (``LandmarkJob.write`` outside the engine)."""

    def add(self, n=1):
        del n

    def flush(self):
        pass


def steady_worker_rate(folder):
    """One worker's steady state: ``LandmarkJob.write`` in this process with the workers' TensorFlow threads, timed
    after a warm-up shard (start-up left out): crops per CPU-second."""
    import tensorflow as tf
    from mtarcface_tf.data import convert
    tf.config.threading.set_intra_op_parallelism_threads(convert.WORKER_THREADS)
    tf.config.threading.set_inter_op_parallelism_threads(convert.WORKER_THREADS)
    job = convert.LandmarkJob(os.path.join(folder, "src"), "retinaface")
    with tf.io.TFRecordWriter(os.path.join(folder, "steady.tfrecord")) as writer:
        job.write(0, WARM_UP_CROPS, writer, _Uncounted())
        start = time.process_time()
        job.write(0, len(job), writer, _Uncounted())
        return round(len(job) / (time.process_time() - start))


def run_stage(folder, workers, steady):
    """``add_landmarks`` on ``folder``/src into ``folder``/out, timed: returns its figures (this process and its
    workers' CPU time; one worker's steady state when ``steady``)."""
    from mtarcface_tf.data import convert
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    start = time.perf_counter()
    manifest = convert.add_landmarks(os.path.join(folder, "src"), os.path.join(folder, "out"), "train",
                                     workers=workers, num_shards=workers, progress=False)
    seconds = time.perf_counter() - start
    cpu = sum((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime) for before, after in
              zip(usage, [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]))
    figures = {"records": manifest["images"], "workers": workers, "seconds": round(seconds, 1),
               "crops_per_s": round(manifest["images"] / seconds), "cpu_seconds": round(cpu, 2),
               "crops_per_cpu_s": round(manifest["images"] / cpu),
               "sent_to_fallback": manifest["notes"].get(convert.LandmarkJob.FALLBACK, 0),
               "no_landmarks": manifest["notes"].get(convert.LandmarkJob.NO_FACE, 0)}
    if steady:
        figures["one_worker_steady_crops_per_cpu_s"] = steady_worker_rate(folder)
    return figures


def marginal(small, large):
    """The stage's rate with start-up left out, from two runs of it (``time_stage`` figures) on different sizes:
    {"crops_per_s": extra records / extra seconds, "start_up_s": what the small run took beyond its records at that
    rate}."""
    rate = (large["records"] - small["records"]) / (large["seconds"] - small["seconds"])
    return {"crops_per_s": round(rate), "start_up_s": round(small["seconds"] - small["records"] / rate, 1)}


def compare(sets, retinaface, mtcnn):
    """Runs every method on every set ``{name: (crops, truth)}``; returns ``{method: {set: figures}}``."""
    from mtarcface_tf.faces.crop_landmarks import CropLandmarker
    figures = {"onet_fast_path": {}, "onet_without_fallback": {}, "onet_fixed_box_fast_path": {}, "retinaface": {},
               "mtcnn": {}}
    for name, (crops, truth) in sets.items():
        reference, seconds = by_detector(retinaface, crops)
        figures["retinaface"][name] = summary(reference, truth, seconds, reference)
        found, seconds = by_detector(mtcnn, crops)
        figures["mtcnn"][name] = summary(found, truth, seconds, reference)
        found, _, seconds = by_landmarker(CropLandmarker(fallback=None, batch_size=len(crops)), crops)
        figures["onet_without_fallback"][name] = summary(found, truth, seconds, reference)
        found, share, seconds = by_landmarker(CropLandmarker(fallback=retinaface, batch_size=len(crops)),
                                              crops)
        figures["onet_fast_path"][name] = dict(summary(found, truth, seconds, reference), sent_to_fallback=share)
        found, share, seconds = by_landmarker(CropLandmarker(fallback=retinaface, batch_size=len(crops),
                                                             refine=False), crops)
        figures["onet_fixed_box_fast_path"][name] = dict(summary(found, truth, seconds, reference),
                                                         sent_to_fallback=share)
    return figures


def main(argv):
    del argv
    if FLAGS.stage_input:
        print(json.dumps(run_stage(FLAGS.stage_input, FLAGS.workers, FLAGS.stage_steady)))
        return
    from mtarcface_tf.data import preview, synthetic
    from mtarcface_tf.faces import crop_landmarks
    from mtarcface_tf.faces.detect import make_detector
    from mtarcface_tf.results import report_result
    retinaface, mtcnn = make_detector("retinaface"), make_detector("mtcnn")
    faces, _, landmarks = synthetic.render_faces(FLAGS.synthetic, 1, image_size=SIZE, seed=5, pose=POSE,
                                                 with_landmarks=True)
    sets = {"synthfaces": (faces, landmarks)}
    if os.path.isdir(FLAGS.photos):
        crops, truth, _ = preview.faces_from_photos(FLAGS.photos, 10_000, SIZE, retinaface)
        sets["real_photos"] = (crops, truth)
    figures = {"synthetic_pose": POSE, "onet_box": list(crop_landmarks.ONET_BOX),
               "min_confidence": crop_landmarks.MIN_CONFIDENCE,
               "max_pass_disagreement": crop_landmarks.MAX_PASS_DISAGREEMENT,
               "min_box_move": crop_landmarks.MIN_BOX_MOVE, "cpu_count": os.cpu_count()}
    figures.update(compare(sets, retinaface, mtcnn))
    for method in ("onet_fast_path", "onet_without_fallback", "onet_fixed_box_fast_path", "retinaface", "mtcnn"):
        for name, result in figures[method].items():
            print(f"{method:22s} {name:11s}: no landmarks on {result['no_face']} of {result['crops']} crops "
                  f"({result['faces_lost']} lost), error mean {result['mean_error_px']} px, p90 "
                  f"{result['p90_error_px']} px, to RetinaFace-on-crop "
                  f"{result['mean_distance_to_retinaface_on_crop_px']} px, {result['ms_per_crop']} ms/crop")
    stage_crops = sets["real_photos"][0] if "real_photos" in sets else faces
    stage = time_stage(stage_crops, FLAGS.stage_crops, FLAGS.workers)
    figures["stage"] = dict(stage, crops_from="real_photos" if "real_photos" in sets else "synthfaces",
                            projected_crops_per_s_on_2_idle_cores=2 * stage["one_worker_steady_crops_per_cpu_s"])
    print(f"add_landmarks stage: {figures['stage']}")
    if FLAGS.stage_large_crops:
        figures["stage_large"] = time_stage(stage_crops, FLAGS.stage_large_crops, FLAGS.workers, steady=False)
        figures["stage_marginal"] = marginal(figures["stage"], figures["stage_large"])
        print(f"add_landmarks stage on {FLAGS.stage_large_crops:,} records: {figures['stage_large']}; start-up left "
              f"out: {figures['stage_marginal']}")
    per_cpu, per_s = onet_cpu_rate(sets.get("real_photos", sets["synthfaces"])[0])
    figures["onet_alone_one_pass"] = {"crops_per_cpu_s": per_cpu, "crops_per_s": per_s}
    print(f"O-Net alone, one pass: {per_cpu} crops per CPU-second ({per_s}/s)")
    report_result("crop_landmarks", figures)


if __name__ == "__main__":
    app.run(main)
