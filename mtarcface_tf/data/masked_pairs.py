"""Clean, masked, mixed and combined variants of a verification set (pairs interleaved as in a ``.bin``).

* ``clean``: the pairs as given;
* ``masked``: both images of every pair masked;
* ``mixed``: the first image of each pair masked, the second clean (the same mask as in ``masked``);
* ``combined``: clean + masked + mixed concatenated.

Masks come from ``MaskAugmenter(probability=1)`` applied in fixed-size batches with per-batch seeds, so every
image's mask depends only on ``seed`` and its position, never on the machine or on the set's length.
"""
import numpy as np
import tensorflow as tf

from mtarcface_tf.data import masks
from mtarcface_tf.faces.align import rescale_points

# The paper's table: clean pairs, both faces masked, one of the two masked; the variant names' one home.
PAPER_VARIANTS = ("clean", "masked", "mixed")
VARIANTS = PAPER_VARIANTS + ("combined",)   # combined: the three sets as one
MASK_BATCH = 128


def _resize(images, image_size):
    """Returns uint8 images resized (area) to ``image_size`` when it is given and differs."""
    if image_size is None or image_size == images.shape[1]:
        return images
    resized = tf.image.resize(images, [image_size, image_size], method="area")
    return tf.saturate_cast(tf.round(resized), tf.uint8).numpy()


def mask_all(images, seed=0, batch_size=MASK_BATCH, landmarks=None, first_batch=0):
    """Returns every image of ``images`` (uint8 [N,S,S,3]) with a mask painted on it, uint8 [N,S,S,3].

    Batch b (of ``batch_size`` images, the last one padded) uses call seed ``[first_batch + b, 0]`` of a
    ``MaskAugmenter(probability=1, seed=seed)``; ``first_batch`` lets a long list be masked in chunks with the
    masks it would get in one call. ``landmarks`` (float32 [N, 5, 2], pixels) fit the masks to each face; None
    places them on the template.
    """
    augmenter = masks.MaskAugmenter(probability=1.0, seed=seed)
    paint = tf.function(augmenter.__call__)
    out = np.empty_like(images)
    for b, start in enumerate(range(0, len(images), batch_size)):
        chunk = images[start:start + batch_size]
        padding = batch_size - len(chunk)
        padded = np.concatenate([chunk, np.zeros((padding,) + chunk.shape[1:], np.uint8)]) if padding else chunk
        marks = None
        if landmarks is not None:
            marks = np.asarray(landmarks[start:start + batch_size], np.float32)
            marks = tf.constant(np.concatenate([marks, np.full((padding, 5, 2), np.nan, np.float32)]))
        masked, _ = paint(tf.constant(padded), seed=tf.constant([first_batch + b, 0], tf.int32), landmarks=marks)
        out[start:start + len(chunk)] = masked.numpy()[:len(chunk)]
    return out


def mask_labels_for(variant, num_pairs):
    """Returns the int32 mask labels [2N] (or [6N] for ``combined``) of the images of ``variant``."""
    clean = np.zeros(2 * num_pairs, np.int32)
    masked = np.ones(2 * num_pairs, np.int32)
    mixed = np.tile(np.array([1, 0], np.int32), num_pairs)
    labels = {"clean": clean, "masked": masked, "mixed": mixed,
              "combined": np.concatenate([clean, masked, mixed])}
    if variant not in labels:
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    return labels[variant]


def masked_variants(images, issame, seed=0, image_size=None, landmarks=None):
    """Returns the four variants of a verification set.

    Args:
      images: uint8 [2N, S, S, 3] RGB aligned faces, pair i = images[2i], images[2i+1].
      issame: bool [N].
      seed: int seed of the masks.
      image_size: resize the faces (area) to this size first, when given (the demo evaluates at 64).
      landmarks: optional float32 [2N, 5, 2] landmarks (pixels of ``images``) the masks are fitted to.

    Returns:
      dict ``variant -> (images uint8 [2N,S,S,3] ([6N,...] for "combined"), issame bool [N] ([3N]))`` for
      ``clean``, ``masked``, ``mixed``, ``combined``; ``mask_labels_for(variant, N)`` gives the mask labels.

    Raises:
      ValueError: the image count is not twice the pair count, or the images are not [2N,S,S,3] uint8.
    """
    images = np.asarray(images)
    issame = np.asarray(issame, bool)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 [2N, S, S, 3], got {images.dtype} {images.shape}")
    if len(images) != 2 * len(issame):
        raise ValueError(f"{len(images)} images for {len(issame)} pairs: a verification set holds 2 images per pair")
    clean = _resize(images, image_size)
    if landmarks is not None:
        ratio = clean.shape[1] / images.shape[1]
        landmarks = rescale_points(np.asarray(landmarks, np.float32), ratio)
    masked = mask_all(clean, seed, landmarks=landmarks)
    mixed = clean.copy()
    mixed[0::2] = masked[0::2]
    combined = np.concatenate([clean, masked, mixed])
    return {
        "clean": (clean, issame),
        "masked": (masked, issame),
        "mixed": (mixed, issame),
        "combined": (combined, np.concatenate([issame, issame, issame])),
    }
