"""Exports a trained MTArcFace model as a SavedModel for TF Serving (and optionally TFLite).

  python tools/export.py --workdir=runs/tiny --export_dir=export [--tflite]
  python tools/export.py --checkpoint=runs/tiny/ckpt-300 --export_dir=export
  python tools/export.py --workdir=runs/tiny --export_dir=export --onnx      # needs pip install -e '.[onnx]'

Writes export/N/ (N = next free version; TF Serving's layout) with assets.extra/mtarcface.json holding the input
size, what the model was trained on (training_data) and, when the workdir has an evaluation report.json, the
recommended threshold. A TFLite or ONNX failure after the SavedModel is written says that the SavedModel is fine. With --tflite, also
export/tflite/N/model_float.tflite and model_dynamic_int8.tflite, and prints their parity with the Keras model.
With --onnx, also export/onnx/N/model.onnx (outputs embedding, mask_prob) and export/onnx/N/insightface/model.onnx
(embedding only, for insightface's model_zoo loader), both NCHW RGB normalized by the caller as (x - 127.5) / 127.5,
and prints their parity with the SavedModel (onnxruntime).
"""
import json
import os
import shutil
import sys

from mtarcface_tf.quiet import quiet_tensorflow

quiet_tensorflow()  # first: TensorFlow's log lines off (--verbosity=0 or MTARCFACE_TF_LOGS=1 bring them back)

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Training workdir (its newest checkpoint is exported).")
flags.DEFINE_string("checkpoint", None, "Checkpoint prefix to export instead of --workdir's newest.")
flags.DEFINE_string("export_dir", None, "Model base directory; the export goes to EXPORT_DIR/<next version>.")
flags.DEFINE_string("report", None, "Evaluation report.json with recommended_threshold (default: WORKDIR/report.json "
                    "when there is one; an explicit path must exist; '' for none).")
flags.DEFINE_bool("tflite", False, "Also write float and dynamic-range int8 TFLite models and check their parity.")
flags.DEFINE_bool("onnx", False, "Also write ONNX models in insightface's convention and check their parity.")
flags.mark_flag_as_required("export_dir")


def _check_paths():
    """Cheap checks before the model loads: an explicit --report must exist; --export_dir must be a folder."""
    if FLAGS.report and not os.path.isfile(FLAGS.report):
        raise ValueError(f"{FLAGS.report}: no such report; pass the report.json tools/evaluate.py wrote, or "
                         "--report='' to export without a threshold.")
    extras = [name for name, wanted in (("tflite", FLAGS.tflite), ("onnx", FLAGS.onnx)) if wanted]
    for folder in [FLAGS.export_dir] + [os.path.join(FLAGS.export_dir, name) for name in extras]:
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise ValueError(f"{folder}: is a file, not a folder; choose another --export_dir.")


def _export_tflite(version_dir, model):
    """Writes the TFLite models; on failure removes the partial folder and says the SavedModel is fine."""
    from mtarcface_tf.export.tflite import export_tflite

    folder = os.path.join(FLAGS.export_dir, "tflite", os.path.basename(version_dir))
    existed = os.path.exists(folder)
    try:
        results = export_tflite(version_dir, model, folder)
    except Exception as error:  # pylint: disable=broad-except  (any converter failure; the SavedModel is done)
        if not existed:
            shutil.rmtree(folder, ignore_errors=True)
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        print(f"error: TFLite export failed ({reason}); the SavedModel in {version_dir} is complete and usable.",
              file=sys.stderr)
        return 1
    for quantization, result in results.items():
        print(f"TFLite {quantization}: {result['path']} ({result['bytes']} bytes), max |diff| of embeddings "
              f"{result['max_abs_diff']:.2e}, min cosine {result['min_cosine']:.6f}")
    print(json.dumps({"export_dir": version_dir, "tflite_dir": folder}))
    return 0


def main(argv):
    del argv
    from mtarcface_tf.export.saved_model import ExportError, export_saved_model, next_version_dir, \
        read_report_threshold, training_data
    from mtarcface_tf.model.workdir import load_model

    source = FLAGS.checkpoint or FLAGS.workdir
    if not source:
        print("error: pass --workdir=RUN_DIR or --checkpoint=PREFIX.", file=sys.stderr)
        return 1
    report = FLAGS.report if FLAGS.report is not None else (
        os.path.join(FLAGS.workdir, "report.json") if FLAGS.workdir else "")
    try:
        _check_paths()
        if FLAGS.onnx:
            from mtarcface_tf.export.onnx import require_onnx
            require_onnx()
        model, config = load_model(source)
        threshold = read_report_threshold(report) if report else None
        version_dir = export_saved_model(model, next_version_dir(FLAGS.export_dir), threshold=threshold,
                                         trained_on=training_data(config))
    except (ExportError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"SavedModel written to {version_dir} (threshold: {threshold or 'not calibrated'})")
    status = _export_tflite(version_dir, model) if FLAGS.tflite else 0
    if FLAGS.onnx:
        status = _export_onnx(model, version_dir) or status
    return status


def _export_onnx(model, version_dir):
    from mtarcface_tf.export import onnx

    folder = os.path.join(FLAGS.export_dir, "onnx", os.path.basename(version_dir))
    try:
        paths = onnx.export_onnx(model, folder)
    except (onnx.OnnxExportError, OSError) as error:
        print(f"error: {error}; the SavedModel in {version_dir} is complete and usable.", file=sys.stderr)
        return 1
    reference = onnx.saved_model_reference(version_dir)
    for kind, path in paths.items():
        parity = onnx.onnx_parity(path, reference)
        mask = parity.get("mask_prob_max_abs_diff")
        print(f"ONNX {kind}: {path}, min cosine with the SavedModel {parity['min_cosine']:.6f}"
              + ("" if mask is None else f", max |diff| of mask_prob {mask:.2e}"))
    size = onnx.input_size(paths["insightface"])
    if size != onnx.INSIGHTFACE_SIZE:
        print(f"note: input {size}x{size}; insightface's model_zoo only routes {onnx.INSIGHTFACE_SIZE}x"
              f"{onnx.INSIGHTFACE_SIZE} models to ArcFaceONNX (load this one with onnxruntime directly)")
    print(json.dumps({"export_dir": version_dir, "onnx_dir": folder}))
    return 0


if __name__ == "__main__":
    app.run(main)
