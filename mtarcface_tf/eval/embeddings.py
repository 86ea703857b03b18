"""Embeddings (and mask probabilities) of many uint8 face images, batched through tf.data, with the flip test.

Sources: a Keras model from ``mtarcface_tf.model.build_mtarcface`` (or any Keras model whose call returns
``{"embedding": [B, D], "mask_logits": [B, 2]?}`` on normalized images), a SavedModel directory written by
``mtarcface_tf.export`` (signature ``serving_default``: uint8 RGB -> ``embedding``, ``mask_prob``), or a training
workdir / checkpoint read with ``mtarcface_tf.train.checkpoints.load_model``.
"""
import logging
import os

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from mtarcface_tf.data.pipeline import normalize

log = logging.getLogger(__name__)

DEFAULT_INPUT_SIZE = 112
SAVED_MODEL_SIGNATURE = "serving_default"


class EmbeddingSourceError(ValueError):
    """A model source that cannot give embeddings (not a model, wrong signature, other architecture)."""


class EmbedFn:
    """A callable ``images uint8 [B, S, S, 3] RGB -> (embeddings float32 [B, D], mask_prob float32 [B, 2] or None)``.

    ``input_size`` is S, the side the model expects; ``name`` says where the model came from.
    """

    def __init__(self, fn, input_size, name):
        self._fn = fn
        self.input_size = int(input_size)
        self.name = name
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


def _keras_input_size(model):
    for candidate in (model, getattr(model, "backbone", None)):
        try:
            shape = candidate.input_shape
        except (AttributeError, ValueError):
            continue
        if shape and shape[1]:
            return shape[1]
    return DEFAULT_INPUT_SIZE


def _from_keras(model, name):
    @tf.function(reduce_retracing=True)
    def run(images):
        outputs = model(normalize(images), training=False)
        if not isinstance(outputs, dict) or "embedding" not in outputs:
            raise EmbeddingSourceError(f"{name}: the model must return a dict with 'embedding' (and optionally "
                                       f"'mask_logits'); build it with mtarcface_tf.model.build_mtarcface")
        embedding = tf.cast(outputs["embedding"], tf.float32)
        if "mask_logits" not in outputs:
            return embedding, None
        return embedding, tf.nn.softmax(tf.cast(outputs["mask_logits"], tf.float32), axis=-1)

    return EmbedFn(run, _keras_input_size(model), name)


def _from_saved_model(path):
    loaded = tf.saved_model.load(path)
    if SAVED_MODEL_SIGNATURE not in loaded.signatures:
        raise EmbeddingSourceError(f"{path}: SavedModel has no '{SAVED_MODEL_SIGNATURE}' signature; export it "
                                   f"with tools/export.py")
    signature = loaded.signatures[SAVED_MODEL_SIGNATURE]
    (input_name, spec), = signature.structured_input_signature[1].items()
    if "embedding" not in signature.structured_outputs:
        raise EmbeddingSourceError(f"{path}: signature '{SAVED_MODEL_SIGNATURE}' returns no 'embedding'; export "
                                   f"it with tools/export.py")
    has_mask = "mask_prob" in signature.structured_outputs

    def run(images):
        outputs = signature(**{input_name: images})
        return outputs["embedding"], outputs["mask_prob"] if has_mask else None

    return EmbedFn(run, spec.shape[1] or DEFAULT_INPUT_SIZE, path)


def _from_checkpoint(path):
    # The trainer's module, needed only for this source; its CheckpointError (a ValueError) names the path and
    # says when the weights come from another architecture.
    from mtarcface_tf.train.checkpoints import load_model
    model, _ = load_model(path)
    return _from_keras(model, path)


def make_embed_fn(source):
    """Returns an ``EmbedFn`` for a model source.

    Args:
      source: a Keras model (called as ``model(normalized_images, training=False)`` -> dict with ``embedding``
        [B, D] and optionally ``mask_logits`` [B, 2]); or a path: a SavedModel directory (has saved_model.pb),
        or a training workdir / checkpoint for ``mtarcface_tf.train.checkpoints.load_model``.

    Returns:
      ``EmbedFn``: ``images uint8 [B, S, S, 3] RGB -> (embeddings float32 [B, D], mask_prob [B, 2] or None)``.
      Keras embeddings are raw (not normalized), SavedModel ones L2-normalized; mask_prob sums to 1 per row.

    Raises:
      FileNotFoundError for a missing path; a ValueError naming the path for anything else unusable
      (EmbeddingSourceError, or the trainer's CheckpointError for a checkpoint of another architecture).
    """
    if isinstance(source, keras.Model):
        return _from_keras(source, source.name)
    if not isinstance(source, (str, os.PathLike)):
        raise EmbeddingSourceError(f"cannot embed with a {type(source).__name__}; give a Keras model, a "
                                   f"SavedModel directory or a training workdir/checkpoint")
    path = os.fspath(source)
    if not os.path.exists(path) and not tf.io.gfile.glob(path + "*"):
        raise FileNotFoundError(f"{path}: no such model (give a SavedModel directory or a training workdir)")
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return _from_saved_model(path)
    return _from_checkpoint(path)


def l2_normalize(embeddings):
    """Returns float32 [N, D] rows scaled to unit L2 norm (all-zero rows stay zero)."""
    embeddings = np.asarray(embeddings, np.float32)
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    return embeddings / np.where(norms == 0, 1, norms)


def _batches(images, batch_size, input_size, note_resize):
    def slices():
        for start in range(0, len(images), batch_size):
            yield images[start:start + batch_size]

    dataset = tf.data.Dataset.from_generator(
        slices, output_signature=tf.TensorSpec((None,) + images.shape[1:], tf.uint8))
    if images.shape[1:3] != (input_size, input_size):
        note_resize(images.shape[1], images.shape[2])
        dataset = dataset.map(lambda x: tf.cast(tf.round(tf.clip_by_value(
            tf.image.resize(x, (input_size, input_size), antialias=True), 0, 255)), tf.uint8))
    return dataset.prefetch(tf.data.AUTOTUNE)


def extract(embed_fn, images, batch_size=128, flip=True, desc="embedding"):
    """Embeds images in batches, with insightface's flip test.

    Args:
      embed_fn: an ``EmbedFn`` (or any callable uint8 [B, S, S, 3] -> (embeddings, mask_prob or None) with an
        ``input_size`` attribute); images of another size are resized to it (one warning per EmbedFn).
      images: uint8 [N, H, W, 3] RGB.
      batch_size: images per call (with ``flip`` the call sees 2 x batch_size: images and their mirrors).
      flip: also embed the horizontal mirrors.
      desc: tqdm label.

    Returns:
      dict: ``embedding`` float32 [N, D] L2-normalized embeddings of the images; ``embedding_flip`` float32 [N, D]
      (with ``flip``, else None): normalize(embedding(image) + embedding(mirror)) of the raw embeddings, as
      insightface; ``mask_prob`` float32 [N, 2] of the unflipped images, or None when the model has no mask head.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8 or not len(images):
        raise ValueError(f"images must be uint8 [N, H, W, 3] with N > 0, got {images.dtype} {images.shape}")
    input_size = getattr(embed_fn, "input_size", images.shape[1])
    note_resize = getattr(embed_fn, "note_resize", lambda height, width: None)
    plain, flipped, mask_prob = [], [], []
    total = -(-len(images) // batch_size)
    for batch in tqdm(_batches(images, batch_size, input_size, note_resize), total=total, desc=desc, unit="batch"):
        if flip:
            embeddings, probs = embed_fn(tf.concat([batch, tf.reverse(batch, axis=[2])], axis=0))
            count = len(batch)
            plain.append(embeddings[:count])
            flipped.append(embeddings[:count] + embeddings[count:])
            probs = None if probs is None else probs[:count]
        else:
            embeddings, probs = embed_fn(batch)
            plain.append(embeddings)
        if probs is not None:
            mask_prob.append(probs)
    return dict(embedding=l2_normalize(np.concatenate(plain)),
                embedding_flip=l2_normalize(np.concatenate(flipped)) if flip else None,
                mask_prob=np.concatenate(mask_prob) if mask_prob else None)
