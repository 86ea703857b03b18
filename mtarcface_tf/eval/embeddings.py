"""Embeddings (and mask probabilities) of many uint8 face images, batched through tf.data, with the flip test.

The embed function comes from ``mtarcface_tf.export.embedder.make_embed_fn`` (Keras model, SavedModel or workdir).
"""
import numpy as np
import tensorflow as tf
from mtarcface_tf.progress import progress_bar

from mtarcface_tf.export.embedder import l2_normalize


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


def embed_with_flip(embed_fn, batch, flip=True):
    """Embeds one batch, with insightface's flip test: the raw embeddings of each face and of its mirror are added.

    Args:
      embed_fn: called on uint8 [B or 2B, S, S, 3]; returns embeddings [.., D] or ``(embeddings, mask_prob)``.
      batch: uint8 [B, S, S, 3] RGB faces (numpy array or tensor).
      flip: embed the horizontal mirrors too (one call on 2B images).

    Returns:
      ``(embedding, flip_sum, mask_prob)``: float32 [B, D] raw embeddings of the faces; float32 [B, D]
      embedding(face) + embedding(mirror), or None without ``flip``; [B, 2] mask probabilities of the faces, or
      None when ``embed_fn`` gives none.
    """
    count = batch.shape[0]
    output = embed_fn(tf.concat([batch, tf.reverse(batch, axis=[2])], axis=0) if flip else batch)
    embeddings, probs = output if isinstance(output, tuple) else (output, None)
    embeddings = np.asarray(embeddings, np.float32)
    probs = None if probs is None else np.asarray(probs)[:count]
    return embeddings[:count], (embeddings[:count] + embeddings[count:] if flip else None), probs


def extract(embed_fn, images, batch_size=128, flip=True, desc="embedding"):
    """Embeds images in batches, with insightface's flip test.

    Args:
      embed_fn: an ``EmbedFn`` (or any callable uint8 [B, S, S, 3] -> (embeddings, mask_prob or None) with an
        ``input_size`` attribute); images of another size are resized to it (one warning per EmbedFn).
      images: uint8 [N, H, W, 3] RGB.
      batch_size: images per call (with ``flip`` the call sees 2 x batch_size: images and their mirrors).
      flip: also embed the horizontal mirrors.
      desc: label of the progress bar.

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
    batches = _batches(images, batch_size, input_size, note_resize)
    for batch in progress_bar(batches, total=total, desc=desc, unit="batch"):
        embeddings, flip_sum, probs = embed_with_flip(embed_fn, batch, flip)
        plain.append(embeddings)
        if flip:
            flipped.append(flip_sum)
        if probs is not None:
            mask_prob.append(probs)
    return dict(embedding=l2_normalize(np.concatenate(plain)),
                embedding_flip=l2_normalize(np.concatenate(flipped)) if flip else None,
                mask_prob=np.concatenate(mask_prob) if mask_prob else None)
