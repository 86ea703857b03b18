"""The export sequence behind ``tools/export.py``: a trained model -> SavedModel (TF Serving layout, calibrated
threshold) -> optionally TFLite and ONNX, each checked for parity and reported in one line."""
import json
import os
import shutil

from mtarcface_tf.export.report_file import REPORT_FILE
from mtarcface_tf.export.saved_model import (ExportError, export_saved_model, next_version_dir, read_report_threshold,
                                             training_data)


def _check_paths(export_dir, report, extras):
    """Cheap checks before the model loads: an explicit ``report`` must exist; ``export_dir`` must be a folder."""
    if report and not os.path.isfile(report):
        raise ExportError(f"{report}: no such report; pass the report.json tools/evaluate.py wrote, or "
                          "--report='' to export without a threshold.")
    for folder in [export_dir] + [os.path.join(export_dir, name) for name in extras]:
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise ExportError(f"{folder}: is a file, not a folder; choose another --export_dir.")


def _export_tflite(model, version_dir, export_dir, log):
    """Writes the TFLite models; on failure removes the partial folder and says the SavedModel is fine.
    Returns True when written."""
    from mtarcface_tf.export.tflite import export_tflite  # pylint: disable=import-outside-toplevel

    folder = os.path.join(export_dir, "tflite", os.path.basename(version_dir))
    existed = os.path.exists(folder)
    try:
        results = export_tflite(version_dir, model, folder)
    except Exception as error:  # pylint: disable=broad-except  (any converter failure; the SavedModel is done)
        if not existed:
            shutil.rmtree(folder, ignore_errors=True)
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        log(f"error: TFLite export failed ({reason}); the SavedModel in {version_dir} is complete and usable.",
            error=True)
        return False
    for quantization, result in results.items():
        log(f"TFLite {quantization}: {result['path']} ({result['bytes']} bytes), max |diff| of embeddings "
            f"{result['max_abs_diff']:.2e}, min cosine {result['min_cosine']:.6f}")
    log(json.dumps({"export_dir": version_dir, "tflite_dir": folder}))
    return True


def _export_onnx(model, version_dir, export_dir, log):
    """Writes the ONNX models and prints their parity with the SavedModel. Returns ``(paths {kind: path}, the
    smallest cosine between their embeddings and the SavedModel's)``, or None when they could not be written."""
    from mtarcface_tf.export import onnx  # pylint: disable=import-outside-toplevel

    folder = os.path.join(export_dir, "onnx", os.path.basename(version_dir))
    try:
        paths = onnx.export_onnx(model, folder)
    except (onnx.OnnxExportError, OSError) as error:
        log(f"error: {error}; the SavedModel in {version_dir} is complete and usable.", error=True)
        return None
    reference = onnx.saved_model_reference(version_dir)
    cosines = []
    for kind, path in paths.items():
        parity = onnx.onnx_parity(path, reference)
        cosines.append(parity["min_cosine"])
        mask = parity.get("mask_prob_max_abs_diff")
        log(f"ONNX {kind}: {path}, min cosine with the SavedModel {parity['min_cosine']:.6f}"
            + ("" if mask is None else f", max |diff| of mask_prob {mask:.2e}"))
    size = onnx.input_size(paths["insightface"])
    if not onnx.routes_to_recognition(size):
        log(f"note: input {size}x{size}; insightface's model_zoo routes square inputs of "
            f"{onnx.INSIGHTFACE_MIN_SIZE} or more, multiples of {onnx.INSIGHTFACE_SIZE_STEP} (not "
            f"{onnx.INSIGHTFACE_LANDMARK_SIZE}), to ArcFaceONNX (load this one with onnxruntime directly)")
    log(json.dumps({"export_dir": version_dir, "onnx_dir": folder}))
    return paths, min(cosines)


def export_source(source, export_dir, report=None, tflite=False, onnx=False, log=None):
    """Exports a trained model: SavedModel, then optionally TFLite and ONNX with their parity lines.

    Args:
      source: a training workdir (its newest checkpoint) or a checkpoint prefix.
      export_dir: model base folder; the SavedModel goes to ``export_dir/N`` (N the next free version), TFLite to
        ``export_dir/tflite/N``, ONNX to ``export_dir/onnx/N``.
      report: report.json with the calibrated threshold; None = ``source/report.json`` when there is one; "" = none.
      tflite, onnx: also write these formats (a failure there leaves the SavedModel complete and is reported).
      log: ``log(line, error=False)`` for each result line (default: print, errors to stderr).

    Returns:
      dict: ``export_dir`` (the SavedModel's folder), ``threshold`` (dict or None), ``failed`` (list of the
      formats that could not be written), ``onnx`` ({kind: path} of the ONNX files, or None) and
      ``onnx_min_cosine`` (their parity with the SavedModel, or None).

    Raises:
      ExportError, ModelLoadError (a ValueError), OSError: nothing was exported (the message names the fix).
    """
    from mtarcface_tf.model.workdir import load_model  # pylint: disable=import-outside-toplevel
    log = log or _print
    if report is None:
        candidate = os.path.join(source, REPORT_FILE)
        report = candidate if os.path.isdir(source) and os.path.isfile(candidate) else ""
    extras = [name for name, wanted in (("tflite", tflite), ("onnx", onnx)) if wanted]
    _check_paths(export_dir, report, extras)
    if onnx:
        from mtarcface_tf.export.onnx import require_onnx  # pylint: disable=import-outside-toplevel
        require_onnx()
    model, config = load_model(source)
    threshold = read_report_threshold(report) if report else None
    version_dir = export_saved_model(model, next_version_dir(export_dir), threshold=threshold,
                                     trained_on=training_data(config))
    log(f"SavedModel written to {version_dir} (threshold: {threshold or 'not calibrated'})")
    failed = []
    if tflite and not _export_tflite(model, version_dir, export_dir, log):
        failed.append("tflite")
    written = _export_onnx(model, version_dir, export_dir, log) if onnx else None
    if onnx and written is None:
        failed.append("onnx")
    onnx_paths, onnx_cosine = written or (None, None)
    return {"export_dir": version_dir, "threshold": threshold, "failed": failed, "onnx": onnx_paths,
            "onnx_min_cosine": onnx_cosine}


def _print(line, error=False):
    import sys  # pylint: disable=import-outside-toplevel
    print(line, file=sys.stderr if error else sys.stdout, flush=True)
