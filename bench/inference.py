"""Inference speed: exported SavedModel vs the Keras model, batch throughput, detection + alignment per image.

  python bench/inference.py            # the paper's LResNet-50 at 112x112 (random weights)
  python bench/inference.py --quick    # a small LResNet at 64x64

Batch-1 latencies of the SavedModel, the same Keras model in a ``tf.function`` (uint8 in, normalization inside,
as the export) and in eager mode are timed ALTERNATELY, one call of each per round, median per variant: other jobs
on a shared machine then slow all three alike instead of whichever ran during a busy spell.
Prints one line per measurement, then ONE JSON line, saved with results.save_result as docs/results/inference.json
(inference_quick.json with --quick). Goal: SavedModel batch-1 latency <= 1.1x the Keras model's.
"""
import os
import tempfile
import time

from mtarcface_tf.quiet import quiet_tensorflow

quiet_tensorflow()  # first: TensorFlow's log lines off (--verbosity=0 or MTARCFACE_TF_LOGS=1 bring them back)

from absl import app, flags  # noqa: E402

from mtarcface_tf.results import median_seconds  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_bool("quick", False, "Small network at 64x64 instead of the paper's LResNet-50 at 112x112.")
flags.DEFINE_integer("iters", 30, "Timed calls per latency measurement (after warm-up).")
flags.DEFINE_integer("batch_size", 32, "Batch size of the throughput measurement.")
flags.DEFINE_integer("detect_iters", 5, "Timed detections of the astronaut image.")
flags.DEFINE_bool("detection", True, "Also time MTCNN detection + alignment.")


def _alternating_medians(functions, iters, warmup=3):
    """Returns {name: median seconds} of ``functions`` (name -> no-arg callable), called in turn ``iters`` times."""
    import numpy as np
    for function in functions.values():
        for _ in range(warmup):
            function()
    times = {name: [] for name in functions}
    for _ in range(iters):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(values)) for name, values in times.items()}


def _model():
    from mtarcface_tf.configs import common
    from mtarcface_tf.model import build_mtarcface
    config = common.inference_config(small=FLAGS.quick)
    if FLAGS.quick:
        config.model.input_size = 64
        config.model.embedding_size = 128
    return build_mtarcface(config.num_classes, config), config


def _detection_seconds():
    import skimage.data
    from mtarcface_tf.faces.align import align_face
    from mtarcface_tf.faces.detect import make_detector
    detector, image = make_detector("mtcnn"), skimage.data.astronaut()
    detect_s = median_seconds(lambda: detector.detect_largest(image), FLAGS.detect_iters, warmup=1)
    face = detector.detect_largest(image)
    align_s = median_seconds(lambda: align_face(image, face.landmarks), 50)
    return detect_s, align_s


def main(argv):
    del argv
    import numpy as np
    import tensorflow as tf
    from mtarcface_tf.data.pipeline import normalize
    from mtarcface_tf.export.embedder import l2_normalize, make_embed_fn
    from mtarcface_tf.export.saved_model import SERVING_SIGNATURE, export_saved_model

    model, config = _model()
    size = config.model.input_size
    backbone = model.backbone

    keras_graph = make_embed_fn(backbone)   # the Keras model in a tf.function, as evaluation runs it

    with tempfile.TemporaryDirectory() as folder:
        export_dir = export_saved_model(model, os.path.join(folder, "1"))
        signature = tf.saved_model.load(export_dir).signatures[SERVING_SIGNATURE]
        rng = np.random.default_rng(0)
        one = tf.constant(rng.integers(0, 256, (1, size, size, 3), dtype=np.uint8))
        batch = tf.constant(rng.integers(0, 256, (FLAGS.batch_size, size, size, 3), dtype=np.uint8))
        keras_embedding = l2_normalize(keras_graph(one)[0])
        parity = float(np.max(np.abs(signature(images=one)["embedding"].numpy() - keras_embedding)))
        medians = _alternating_medians({
            "saved": lambda: signature(images=one)["embedding"].numpy(),
            "keras": lambda: keras_graph(one)[0],
            "eager": lambda: np.asarray(backbone(normalize(one), training=False)["embedding"]),
        }, FLAGS.iters)
        saved_s, keras_s, eager_s = medians["saved"], medians["keras"], medians["eager"]
        batch_s = median_seconds(lambda: signature(images=batch)["embedding"].numpy(), max(3, FLAGS.iters // 5))
    device = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
    result = {
        "network": "quick" if FLAGS.quick else "lresnet50", "input_size": size, "device": device,
        "saved_model_batch1_ms": saved_s * 1e3, "keras_graph_batch1_ms": keras_s * 1e3,
        "keras_eager_batch1_ms": eager_s * 1e3, "saved_over_keras": saved_s / keras_s,
        f"saved_model_batch{FLAGS.batch_size}_img_per_s": FLAGS.batch_size / batch_s,
        "max_abs_diff_saved_vs_keras": parity,
    }
    print(f"{result['network']} {size}x{size} on {device}: batch-1 latency SavedModel {saved_s * 1e3:.2f} ms, "
          f"Keras (tf.function) {keras_s * 1e3:.2f} ms, Keras eager {eager_s * 1e3:.2f} ms "
          f"-> SavedModel/Keras {saved_s / keras_s:.3f} (goal <= 1.1)")
    print(f"throughput at batch {FLAGS.batch_size}: {FLAGS.batch_size / batch_s:.1f} images/s")
    if FLAGS.detection:
        detect_s, align_s = _detection_seconds()
        result.update({"mtcnn_detect_ms": detect_s * 1e3, "align_ms": align_s * 1e3})
        print(f"MTCNN detection on astronaut (512x512): {detect_s * 1e3:.1f} ms, alignment {align_s * 1e3:.2f} ms")
    result["statistic"] = f"median of {FLAGS.iters} alternating calls"
    from mtarcface_tf.results import report_result
    report_result('inference_quick' if FLAGS.quick else 'inference', result)


if __name__ == "__main__":
    app.run(main)
