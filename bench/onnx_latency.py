"""ONNX (onnxruntime) vs SavedModel latency on CPU, batch 1 and batch 64, same network and faces. (Not named onnx.py:
that would shadow the onnx package for tf2onnx.)

  python bench/onnx_latency.py            # the paper's LResNet-50 at 112x112 (random weights)
  python bench/onnx_latency.py --quick    # a small LResNet at 112x112

Needs the [onnx] extra. Prints one line per measurement, then ONE JSON line, saved to docs/results/onnx.json
(onnx_quick.json with --quick). Both runtimes use every core they see; on a machine shared with other jobs
onnxruntime suffered more than TensorFlow (4x slower at batch 1 at a load average of 18, faster when idle).
"""
import os
import tempfile

from mtarcface_tf.quiet import quiet_tensorflow

quiet_tensorflow()  # first: TensorFlow's log lines off (--verbosity=0 or MTARCFACE_TF_LOGS=1 bring them back)

from absl import app, flags  # noqa: E402

from mtarcface_tf.results import median_seconds  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_bool("quick", False, "Small network instead of the paper's LResNet-50.")
flags.DEFINE_integer("iters_1", 20, "Timed calls at batch 1 (after warm-up).")
flags.DEFINE_integer("iters_64", 3, "Timed calls at batch 64 (after warm-up).")
BATCHES = (1, 64)


def _model():
    from mtarcface_tf.configs import common
    from mtarcface_tf.model.build import build_mtarcface
    config = common.inference_config(small=FLAGS.quick)
    return build_mtarcface(config.num_classes, config)


def main(argv):
    del argv
    import numpy as np
    import onnxruntime
    import tensorflow as tf
    from mtarcface_tf.export import onnx as onnx_export
    from mtarcface_tf.export.saved_model import SERVING_SIGNATURE, export_saved_model
    from mtarcface_tf.results import report_result

    model = _model()
    with tempfile.TemporaryDirectory() as tmp:
        saved = export_saved_model(model, os.path.join(tmp, "saved"))
        paths = onnx_export.export_onnx(model, os.path.join(tmp, "onnx"))
        signature = tf.saved_model.load(saved).signatures[SERVING_SIGNATURE]
        session = onnxruntime.InferenceSession(paths["model"], providers=["CPUExecutionProvider"])
        names = [output.name for output in session.get_outputs()]
        figures = {"model": "LResNet-50 112x112" if not FLAGS.quick else "small LResNet 112x112",
                   "onnxruntime": onnxruntime.__version__, "tensorflow": tf.__version__}
        for batch in BATCHES:
            faces = np.random.default_rng(batch).integers(0, 256, (batch, 112, 112, 3), dtype=np.uint8)
            tensor, blob = tf.constant(faces), onnx_export.to_insightface_input(faces)
            iters = FLAGS.iters_1 if batch == 1 else FLAGS.iters_64
            saved_s = median_seconds(lambda: signature(images=tensor)["embedding"].numpy(), iters)
            onnx_s = median_seconds(lambda: session.run(names, {"input": blob}), iters)
            figures[f"saved_model_batch{batch}_ms"] = round(1000 * saved_s, 2)
            figures[f"onnxruntime_batch{batch}_ms"] = round(1000 * onnx_s, 2)
            figures[f"onnx_speedup_batch{batch}"] = round(saved_s / onnx_s, 3)
            print(f"batch {batch}: SavedModel {1000 * saved_s:.1f} ms, onnxruntime {1000 * onnx_s:.1f} ms "
                  f"(x{saved_s / onnx_s:.2f})")
        parity = onnx_export.onnx_parity(paths["model"], onnx_export.saved_model_reference(saved, num_images=8))
        figures.update({f"parity_{key}": value for key, value in parity.items()})
        print(f"parity: min cosine {parity['min_cosine']:.7f}, mask_prob max |diff| "
              f"{parity.get('mask_prob_max_abs_diff', float('nan')):.2e}")
    report_result("onnx_quick" if FLAGS.quick else "onnx", figures)


if __name__ == "__main__":
    app.run(main)
