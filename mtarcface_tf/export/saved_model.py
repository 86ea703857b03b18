"""SavedModel export of the MTArcFace backbone with TF Serving signatures.

The export holds only the backbone's variables (the ArcFace class centres are training-only and left out) and two
signatures, both taking raw pixels so that clients never normalize:

- ``serving_default``: ``images`` uint8 [None, S, S, 3] RGB, already aligned to the ArcFace template.
- ``serve_jpeg``: ``images`` string [None] encoded images (JPEG, PNG, BMP, GIF), decoded to RGB and resized to S×S
  in the graph.

Both return ``embedding`` float32 [None, D] (L2-normalized) and, when the model has the mask head, ``mask_prob``
float32 [None, 2] (softmax; index 1 = mask). A model without a mask head (the ArcFace baseline) has no ``mask_prob``
output at all, rather than a NaN placeholder, so clients cannot mistake it for a prediction.

Metadata the applications need (input size, embedding size, calibrated threshold, what the model was trained on)
goes to ``assets.extra/mtarcface.json`` next to ``saved_model.pb``. This module owns the output convention
(``output_heads``), the signature names, that metadata file, and reading the calibrated threshold of an evaluation
``report.json`` (``read_report_threshold``); loading any model source to embed with is ``embedder.py``.
"""
import json
import os

import tensorflow as tf

from mtarcface_tf.atomic import atomic_directory
from mtarcface_tf.data import pipeline, records, synthetic
from mtarcface_tf.export.report_file import ReportFileError, read_report
from mtarcface_tf.model.build import backbone_of

SERVING_SIGNATURE = "serving_default"
JPEG_SIGNATURE = "serve_jpeg"
METADATA_DIR = "assets.extra"
METADATA_FILE = "mtarcface.json"
THRESHOLD_KEYS = ("cosine_similarity", "squared_distance")


class ExportError(ValueError):
    """An export that cannot be written (target exists, model unfit, ...); the message names the path and the fix."""


def output_heads(outputs):
    """The export's output convention, from a backbone's outputs (graph-safe).

    Args:
      outputs: dict with ``embedding`` [B, D] and, with a mask head, ``mask_logits`` [B, 2] (any float dtype).

    Returns:
      dict: ``embedding`` float32 [B, D] (raw, not normalized) and, only with a mask head, ``mask_prob`` float32
      [B, 2] (softmax; index 1 = mask).
    """
    result = {"embedding": tf.cast(outputs["embedding"], tf.float32)}
    if "mask_logits" in outputs:
        result["mask_prob"] = tf.nn.softmax(tf.cast(outputs["mask_logits"], tf.float32), axis=-1)
    return result


def _serving_functions(backbone, input_size):
    """Returns (serve_uint8, serve_encoded) tf.functions over ``backbone``; see the module docstring."""
    def heads(pixels):
        result = output_heads(backbone(pipeline.normalize(pixels), training=False))
        result["embedding"] = tf.math.l2_normalize(result["embedding"], axis=-1)
        return result

    def decode(encoded):
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
        return tf.image.resize(tf.cast(image, tf.float32), [input_size, input_size])

    @tf.function(input_signature=[tf.TensorSpec([None, input_size, input_size, 3], tf.uint8, name="images")])
    def serve_uint8(images):
        # Loaded signatures check the dtype but not the shape; fail at the input with a clear message.
        return heads(tf.ensure_shape(images, [None, input_size, input_size, 3]))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
    def serve_encoded(images):
        pixels = tf.map_fn(decode, images,
                           fn_output_signature=tf.TensorSpec([input_size, input_size, 3], tf.float32))
        return heads(tf.clip_by_value(pixels, 0.0, 255.0))

    return serve_uint8, serve_encoded


def exportable_backbone(model, error=ExportError):
    """Returns ``build.backbone_of(model)``; raises ``error`` when its outputs are not a dict holding ``embedding``."""
    backbone = backbone_of(model)
    if not isinstance(backbone.output, dict) or "embedding" not in backbone.output:
        raise error("exporting needs a model from build_mtarcface (or its .backbone) whose outputs include "
                    "'embedding'.")
    return backbone


def training_data(config):
    """Describes the data a run trained on, from its config, for the export metadata.

    Args:
      config: the run's ConfigDict (``data.train``; ``data.synthetic.identities`` when ``data.train`` is empty).

    Returns:
      dict: ``train`` (str, the configured path or ""), ``source`` (str: the records' manifest ``source``,
      "synthfaces" for SynthFaces, or "unknown" when there is no manifest) and ``synthfaces`` (bool).
    """
    train = str(config.data.get("train", "") or "")
    if not train:
        generated = config.data.get("synthetic", {}).get("identities", 0) > 0
        source = synthetic.MANIFEST_SOURCE if generated else "unknown"
    else:
        try:
            manifest = records.find_manifest(train)
        except (OSError, ValueError):  # moved or damaged since training: the export itself is still fine
            manifest = None
        source = str(manifest.get("source", "unknown")) if manifest else "unknown"
    return {"train": train, "source": source, "synthfaces": source == synthetic.MANIFEST_SOURCE}


def model_metadata(model, threshold=None, trained_on=None):
    """Describes a model for ``assets.extra/mtarcface.json``.

    Args:
      model: a model from ``build_mtarcface`` (or its ``backbone``).
      threshold: optional ``{"cosine_similarity": x, "squared_distance": y}`` (as in eval's report.json).
      trained_on: optional ``training_data(config)`` of the run.

    Returns:
      dict with ``input_size`` (int), ``embedding_size`` (int), ``mask_head`` (bool), ``normalization`` and, when
      given, ``recommended_threshold`` and ``training_data``.
    """
    backbone = exportable_backbone(model)
    metadata = {
        "input_size": int(backbone.input.shape[1]),
        "embedding_size": int(backbone.output["embedding"].shape[-1]),
        "mask_head": "mask_logits" in backbone.output,
        "normalization": {"mean": pipeline.PIXEL_MEAN, "scale": pipeline.PIXEL_SCALE, "channels": "RGB"},
        "signatures": [SERVING_SIGNATURE, JPEG_SIGNATURE],
    }
    if threshold:
        metadata["recommended_threshold"] = {key: float(value) for key, value in dict(threshold).items()
                                             if key in THRESHOLD_KEYS}
        by_condition = dict(threshold).get("by_condition")
        if by_condition:     # per probe condition (clean / masked): what identification applies by mask status
            metadata["recommended_threshold"]["by_condition"] = {
                condition: {"cosine_similarity": float(entry["cosine_similarity"]),
                            "far_target": float(entry["far_target"])} for condition, entry in by_condition.items()}
    if trained_on:
        metadata["training_data"] = dict(trained_on)
    return metadata


def export_saved_model(model, export_dir, threshold=None, trained_on=None):
    """Writes the backbone of ``model`` as a SavedModel to ``export_dir`` (atomically: temp dir, then rename).

    Args:
      model: a model from ``build_mtarcface`` (``model.backbone`` is exported; ``model.arcface`` is not), or a
        backbone itself.
      export_dir: target directory; must not exist. For TF Serving pass a version directory such as ``OUT/1``
        (see ``next_version_dir``).
      threshold: optional calibrated thresholds ``{"cosine_similarity": x, "squared_distance": y}`` stored in
        ``assets.extra/mtarcface.json``.
      trained_on: optional ``training_data(config)`` of the run, stored there as ``training_data``.

    Returns:
      ``export_dir`` (str).

    Raises:
      ExportError: ``export_dir`` exists, or the model has no ``embedding`` output.
    """
    export_dir = os.fspath(export_dir)
    if os.path.exists(export_dir):
        raise ExportError(f"{export_dir}: already exists; choose a new directory (tools/export.py picks the next "
                          "free version number).")
    backbone = exportable_backbone(model)
    metadata = model_metadata(backbone, threshold, trained_on)
    serve_uint8, serve_encoded = _serving_functions(backbone, metadata["input_size"])

    module = tf.Module()
    # Only the backbone's variables are tracked, so the class centres cannot end up in the export.
    module.backbone_variables = list(backbone.weights)
    module.serve_uint8 = serve_uint8
    module.serve_encoded = serve_encoded

    with atomic_directory(export_dir) as target:
        tf.saved_model.save(module, target, signatures={
            SERVING_SIGNATURE: serve_uint8.get_concrete_function(),
            JPEG_SIGNATURE: serve_encoded.get_concrete_function(),
        })
        os.makedirs(os.path.join(target, METADATA_DIR), exist_ok=True)
        with open(os.path.join(target, METADATA_DIR, METADATA_FILE), "w", encoding="utf-8") as handle:
            json.dump(metadata, handle, indent=2)
    return export_dir


def next_version_dir(base_dir):
    """Returns ``base_dir/N`` (str) with N the smallest integer >= 1 above every numeric version already there."""
    base_dir = os.fspath(base_dir)
    versions = [int(name) for name in os.listdir(base_dir) if name.isdigit()] if os.path.isdir(base_dir) else []
    return os.path.join(base_dir, str(max(versions, default=0) + 1))


def find_saved_model(path):
    """Resolves a SavedModel directory: ``path`` itself, or the highest numeric version inside it (TF Serving layout).

    Args:
      path: a SavedModel directory or a TF Serving model base directory.

    Returns:
      str directory holding ``saved_model.pb``, or None when there is none.
    """
    path = os.fspath(path)
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    if not os.path.isdir(path):
        return None
    versions = sorted((int(name) for name in os.listdir(path)
                       if name.isdigit() and os.path.isfile(os.path.join(path, name, "saved_model.pb"))), reverse=True)
    return os.path.join(path, str(versions[0])) if versions else None


def read_metadata(saved_model_dir):
    """Returns the dict of ``assets.extra/mtarcface.json`` in ``saved_model_dir``, or {} when the file is absent."""
    path = os.path.join(os.fspath(saved_model_dir), METADATA_DIR, METADATA_FILE)
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def read_report_threshold(report_path):
    """Returns ``recommended_threshold`` (dict) of an evaluation ``report.json``, or None when absent.

    Raises:
      ExportError: the file exists but is not a JSON object.
    """
    if not os.path.isfile(os.fspath(report_path)):
        return None
    try:
        return read_report(report_path, required=()).get("recommended_threshold")
    except ReportFileError as error:
        raise ExportError(f"{error}, or pass --report=''.") from error
