"""One loader for every model source: Keras model, SavedModel or training workdir -> ``EmbedFn`` (embed function
+ input size + metadata). Evaluation, the trainer's evaluation, the recognizer, the TFLite parity check and the
benchmarks all embed through it, so the output-heads convention (``embedding``, ``mask_prob``) has one reader here
and one writer (``saved_model.output_heads``). Also the numpy ``l2_normalize`` every embedding consumer uses.

Sources: a Keras model from ``mtarcface_tf.model.build_mtarcface`` (or any Keras model whose call returns
``{"embedding": [B, D], "mask_logits": [B, 2]?}`` on normalized images), a SavedModel directory written by
``export_saved_model`` (or a TF Serving base directory: its newest numeric version), or a training workdir /
checkpoint read with ``mtarcface_tf.model.workdir.load_model``.
"""
import logging
import os

import keras
import numpy as np
import tensorflow as tf

from mtarcface_tf.data.pipeline import normalize
from mtarcface_tf.export.saved_model import (SERVING_SIGNATURE, ExportError, find_saved_model, output_heads,
                                             read_metadata, read_report_threshold, training_data)
from mtarcface_tf.export.report_file import REPORT_FILE
from mtarcface_tf.model.workdir import ModelLoadError, load_model

log = logging.getLogger(__name__)

DEFAULT_INPUT_SIZE = 112


class EmbedFn:
    """A callable ``images uint8 [B, S, S, 3] RGB -> (embeddings float32 [B, D], mask_prob float32 [B, 2] or None)``.

    ``input_size`` is S, the side the model expects; ``name`` says where the model came from; ``metadata`` is the
    export's ``assets.extra/mtarcface.json`` dict (a workdir's: ``training_data`` and ``recommended_threshold`` of
    its report.json when there is one; {} for a Keras model).
    """

    def __init__(self, fn, input_size, name, metadata=None):
        self._fn = fn
        self.input_size = int(input_size)
        self.name = name
        self.metadata = dict(metadata or {})
        self._resize_noted = False

    def note_resize(self, height, width):
        """Logs, once per EmbedFn, that HxW images are resized to the model's input size."""
        if not self._resize_noted:
            log.warning("%s: resizing %dx%d images to the model's input size %dx%d (tf.image.resize)", self.name,
                        height, width, self.input_size, self.input_size)
            self._resize_noted = True

    def __call__(self, images):
        embeddings, mask_prob = self._fn(tf.convert_to_tensor(images, tf.uint8))
        return (np.asarray(embeddings, np.float32),
                None if mask_prob is None else np.asarray(mask_prob, np.float32))


def as_embed_fn(source):
    """Returns an ``EmbedFn`` for anything an evaluator accepts.

    Args:
      source: an ``EmbedFn`` (or any callable with an ``input_size``), returned as is; a Keras model or a path,
        loaded with ``make_embed_fn``; or a bare callable ``uint8 [B, S, S, 3] -> embeddings [B, D]`` (or
        ``(embeddings, mask_prob)``), taken to expect ``DEFAULT_INPUT_SIZE`` faces.

    Raises:
      ModelLoadError for a source that is none of these.
    """
    if hasattr(source, "input_size"):
        return source
    if callable(source) and not isinstance(source, keras.Model):
        return EmbedFn(lambda images: _with_mask_prob(source(images)), DEFAULT_INPUT_SIZE,
                       getattr(source, "__name__", type(source).__name__))
    return make_embed_fn(source)


def _with_mask_prob(output):
    return output if isinstance(output, tuple) else (output, None)


def l2_normalize(embeddings):
    """Returns float32 [N, D] rows scaled to unit L2 norm; all-zero rows stay zero (never NaN)."""
    embeddings = np.asarray(embeddings, np.float32)
    norms = np.linalg.norm(embeddings, axis=-1, keepdims=True)
    return embeddings / np.where(norms == 0, 1, norms)


def _keras_input_size(model):
    for candidate in (model, getattr(model, "backbone", None)):
        try:
            shape = candidate.input_shape
        except (AttributeError, ValueError):
            continue
        if shape and shape[1]:
            return shape[1]
    return DEFAULT_INPUT_SIZE


def _from_keras(model, name, metadata=None):
    @tf.function(reduce_retracing=True)
    def run(images):
        outputs = model(normalize(images), training=False)
        if not isinstance(outputs, dict) or "embedding" not in outputs:
            raise ModelLoadError(f"{name}: the model must return a dict with 'embedding' (and optionally "
                                 f"'mask_logits'); build it with mtarcface_tf.model.build_mtarcface")
        heads = output_heads(outputs)
        return heads["embedding"], heads.get("mask_prob")

    return EmbedFn(run, _keras_input_size(model), name, metadata)


def _first_line(error):
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _from_saved_model(path):
    try:
        loaded = tf.saved_model.load(path)
    except (OSError, ValueError, tf.errors.OpError) as error:
        raise ModelLoadError(f"{path}: the SavedModel cannot be loaded ({_first_line(error)}); export it again with "
                             "tools/export.py.") from error
    if SERVING_SIGNATURE not in loaded.signatures:
        raise ModelLoadError(f"{path}: SavedModel has no '{SERVING_SIGNATURE}' signature; export it with "
                             f"tools/export.py")
    signature = loaded.signatures[SERVING_SIGNATURE]
    (input_name, spec), = signature.structured_input_signature[1].items()
    if "embedding" not in signature.structured_outputs:
        raise ModelLoadError(f"{path}: signature '{SERVING_SIGNATURE}' returns no 'embedding'; export it with "
                             f"tools/export.py")
    has_mask = "mask_prob" in signature.structured_outputs
    try:
        metadata = read_metadata(path)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"{path}: assets.extra/mtarcface.json is not valid JSON ({error}); export the model "
                             "again with tools/export.py.") from error

    def run(images):
        outputs = signature(**{input_name: images})
        return outputs["embedding"], outputs["mask_prob"] if has_mask else None

    return EmbedFn(run, metadata.get("input_size") or spec.shape[1] or DEFAULT_INPUT_SIZE, path, metadata)


def _from_workdir(path):
    model, config = load_model(path)
    metadata = {"training_data": training_data(config)}
    report = os.path.join(path, REPORT_FILE) if os.path.isdir(path) else ""
    try:
        threshold = read_report_threshold(report) if report else None
    except ExportError as error:
        raise ModelLoadError(f"{report}: not a valid report.json; re-run tools/evaluate.py, or delete it to use the "
                             "default threshold.") from error
    if threshold:
        metadata["recommended_threshold"] = threshold
    return _from_keras(model, path, metadata)


def make_embed_fn(source):
    """Returns an ``EmbedFn`` for a model source.

    Args:
      source: a Keras model (called as ``model(normalized_images, training=False)`` -> dict with ``embedding``
        [B, D] and optionally ``mask_logits`` [B, 2]); or a path: a SavedModel directory (has saved_model.pb), a
        TF Serving base directory (its newest numeric version), a training workdir or a checkpoint prefix.

    Returns:
      ``EmbedFn``: ``images uint8 [B, S, S, 3] RGB -> (embeddings float32 [B, D], mask_prob [B, 2] or None)``.
      Keras embeddings are raw (not normalized), SavedModel ones L2-normalized; mask_prob sums to 1 per row.

    Raises:
      ModelLoadError (a ValueError) naming the source and the fix for anything unusable (missing path, not a
      model, a corrupt saved_model.pb or metadata, a checkpoint of another architecture, a workdir's report.json
      that is not JSON).
    """
    if isinstance(source, keras.Model):
        return _from_keras(source, source.name)
    if not isinstance(source, (str, os.PathLike)):
        raise ModelLoadError(f"cannot embed with a {type(source).__name__}; give a Keras model, a SavedModel "
                             f"directory or a training workdir/checkpoint")
    path = os.fspath(source)
    saved_model_dir = find_saved_model(path)
    if saved_model_dir:
        return _from_saved_model(saved_model_dir)
    if os.path.isdir(path) or tf.io.gfile.exists(path + ".index"):
        return _from_workdir(path)
    raise ModelLoadError(f"{path}: not a SavedModel (no saved_model.pb) nor a training checkpoint; export one with "
                         "tools/export.py --workdir=RUN --export_dir=OUT and pass OUT.")
