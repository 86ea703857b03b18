"""Exports a trained MTArcFace model as a SavedModel for TF Serving (and optionally TFLite).

  python tools/export.py --workdir=runs/tiny --export_dir=export [--tflite]
  python tools/export.py --checkpoint=runs/tiny/ckpt-300 --export_dir=export
  python tools/export.py --workdir=runs/tiny --export_dir=export --onnx      # needs pip install -e '.[onnx]'

Writes export/N/ (N = next free version; TF Serving's layout) with assets.extra/mtarcface.json holding the input
size, what the model was trained on (training_data) and, when the workdir has an evaluation report.json, the
recommended threshold. A TFLite or ONNX failure after the SavedModel is written says that the SavedModel is fine.
With --tflite, also
export/tflite/N/model_float.tflite and model_dynamic_int8.tflite, and prints their parity with the Keras model.
With --onnx, also export/onnx/N/model.onnx (outputs embedding, mask_prob) and export/onnx/N/insightface/model.onnx
(embedding only, for insightface's model_zoo loader), both NCHW RGB normalized by the caller as (x - 127.5) / 127.5,
and prints their parity with the SavedModel (onnxruntime).
"""
import sys

from mtarcface_tf.quiet import quiet_tensorflow

quiet_tensorflow()  # first: TensorFlow's log lines off (--verbosity=0 or MTARCFACE_TF_LOGS=1 bring them back)

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Training workdir (its newest checkpoint is exported).")
flags.DEFINE_string("checkpoint", None, "Checkpoint prefix to export instead of --workdir's newest.")
flags.DEFINE_string("export_dir", None, "Model base directory; the export goes to EXPORT_DIR/<next version>.")
flags.DEFINE_string("report", None, "Evaluation report.json with recommended_threshold (default: the exported "
                    "workdir's report.json when there is one; an explicit path must exist; '' for none).")
flags.DEFINE_bool("tflite", False, "Also write float and dynamic-range int8 TFLite models and check their parity.")
flags.DEFINE_bool("onnx", False, "Also write ONNX models in insightface's convention and check their parity.")
flags.mark_flag_as_required("export_dir")


def main(argv):
    del argv
    from mtarcface_tf.export.run import export_source
    from mtarcface_tf.export.saved_model import ExportError

    source = FLAGS.checkpoint or FLAGS.workdir
    if not source:
        print("error: pass --workdir=RUN_DIR or --checkpoint=PREFIX.", file=sys.stderr)
        return 1
    try:
        result = export_source(source, FLAGS.export_dir, report=FLAGS.report, tflite=FLAGS.tflite, onnx=FLAGS.onnx)
    except (ExportError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    app.run(main)
