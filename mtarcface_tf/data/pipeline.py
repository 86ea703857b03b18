"""The tf.data training input: TFRecord shards -> decode -> flip -> batch -> random masks -> normalize.

Records that carry landmarks (``records.LANDMARKS_KEY``) get masks fitted to them (``mask_placement="landmarks"``,
the default); records without, and every record with ``mask_placement="template"``, get template-placed masks.

``make_train_dataset`` yields ``(images float32 [B,S,S,3] in [-1, 1], {"identity": int32 [B], "mask": int32 [B]})``.
Masks are painted after batching (``masks.MaskAugmenter`` is vectorised over the batch); the mask pattern of
batch k depends only on (seed, k, input pipeline), although which images land in batch k does not
(the order is not deterministic: speed first).

Corrupt records are skipped and counted, never silently: a record whose bytes are not a complete JPEG/PNG
(header and end marker), or another supported format, is dropped in-graph and counted in the
``CorruptRecordCounter`` passed to ``make_train_dataset`` (and printed to stderr); anything that still fails
to decode (a damaged JPEG body) is dropped by ``Dataset.ignore_errors(log_warning=True)``, which logs it.
"""
import sys

import tensorflow as tf

from mtarcface_tf.data import masks, records
from mtarcface_tf.faces.align import rescale_points

AUTOTUNE = tf.data.AUTOTUNE
PIXEL_MEAN = 127.5
PIXEL_SCALE = 0.0078125
_FLIP_STREAM = 1   # folded into the seed, so flips and masks draw from different random streams

# Magic bytes of the formats tf.io.decode_image reads. JPEG and PNG (what converters write) are also checked
# for their end marker, which catches truncated files.
_JPEG_START, _JPEG_END = b"\xff\xd8\xff", b"\xff\xd9"
_PNG_START, _PNG_END = b"\x89PNG\r\n\x1a\n", b"IEND"
_OTHER_STARTS = (b"GIF87a", b"GIF89a", b"BM")
_WEBP_START, _WEBP_TAG = b"RIFF", b"WEBP"
_MIN_BYTES = 16


def normalize(images):
    """Returns float32 ``(images - 127.5) * 0.0078125`` (RGB 0..255 of any dtype -> [-0.996, 0.996]); graph-safe."""
    return (tf.cast(images, tf.float32) - PIXEL_MEAN) * PIXEL_SCALE


class CorruptRecordCounter:
    """Counts records the training pipeline skipped because their image bytes are corrupt.

    Create it outside any ``strategy.scope()`` (it is a plain CPU variable) and pass it to
    ``make_train_dataset(..., corrupt_counter=counter)``; read ``counter.count`` (a Python int) when logging.
    """

    def __init__(self):
        with tf.init_scope(), tf.device("CPU:0"):
            self.variable = tf.Variable(0, dtype=tf.int64, trainable=False, name="corrupt_records")

    @property
    def count(self):
        """Returns the number of records skipped so far."""
        return int(self.variable.numpy())

    def add(self, bad):
        """Adds ``bad`` (bool or int scalar tensor) to the count; returns the update op's new value."""
        return self.variable.assign_add(tf.cast(bad, tf.int64))


def looks_complete(image_raw):
    """Returns a bool scalar: ``image_raw`` (string scalar) starts like an image and, for JPEG/PNG, ends like one."""
    padded_end = tf.strings.join([b"\0" * _MIN_BYTES, image_raw])
    padded_start = tf.strings.join([image_raw, b"\0" * _MIN_BYTES])
    start3, start8 = tf.strings.substr(padded_start, 0, 3), tf.strings.substr(padded_start, 0, 8)
    jpeg = tf.logical_and(tf.equal(start3, _JPEG_START), tf.equal(tf.strings.substr(padded_end, -2, 2), _JPEG_END))
    png = tf.logical_and(tf.equal(start8, _PNG_START), tf.equal(tf.strings.substr(padded_end, -8, 4), _PNG_END))
    webp = tf.logical_and(tf.equal(tf.strings.substr(padded_start, 0, 4), _WEBP_START),
                          tf.equal(tf.strings.substr(padded_start, 8, 4), _WEBP_TAG))
    other = tf.reduce_any([tf.equal(tf.strings.substr(padded_start, 0, len(s)), s) for s in _OTHER_STARTS])
    long_enough = tf.strings.length(image_raw) >= _MIN_BYTES
    return tf.logical_and(long_enough, tf.reduce_any([jpeg, png, webp, other]))


MASK_PLACEMENTS = ("landmarks", "template")


def decode_record(image_raw, image_size, corrupt_counter=None):
    """Decodes one encoded image (graph-safe) to uint8 [image_size, image_size, 3] RGB.

    Returns ``(image, ok)``: ``ok`` is False (and the image zeros) for bytes that are not a complete image;
    such records are counted in ``corrupt_counter`` when given and reported on stderr.
    The image is resized (bilinear, antialiased) only when its stored size differs from ``image_size``.
    """
    image, ok, _ = _decode(image_raw, image_size, corrupt_counter)
    return image, ok


def _decode(image_raw, image_size, corrupt_counter):
    """decode_record, also returning the stored width (float32 scalar) for scaling landmarks."""
    ok = looks_complete(image_raw)

    def decode():
        return tf.io.decode_image(image_raw, channels=3, expand_animations=False)

    def blank():
        return tf.zeros([image_size, image_size, 3], tf.uint8)

    image = tf.cond(ok, decode, blank)
    stored_width = tf.cast(tf.shape(image)[1], tf.float32)
    same_size = tf.reduce_all(tf.equal(tf.shape(image)[:2], image_size))
    image = tf.cond(same_size, lambda: image, lambda: _resize(image, image_size))
    image = tf.ensure_shape(image, [image_size, image_size, 3])
    with tf.control_dependencies([tf.cond(ok, lambda: tf.constant(True), lambda: _report_corrupt(corrupt_counter))]):
        return tf.identity(image), tf.identity(ok), stored_width


def _decode_with_landmarks(image_raw, landmarks, image_size, corrupt_counter):
    """Returns ``(image, landmarks, ok)`` with the landmarks [5, 2] scaled as the image was resized."""
    image, ok, stored_width = _decode(image_raw, image_size, corrupt_counter)
    ratio = image_size / stored_width
    return image, rescale_points(landmarks, ratio), ok


def flip_landmarks(landmarks, image_size):
    """Returns the landmarks [..., 5, 2] of horizontally flipped images of width ``image_size``: x -> S - 1 - x,
    and left/right eyes and mouth corners swapped (template order is kept)."""
    mirrored = tf.stack([image_size - 1.0 - landmarks[..., 0], landmarks[..., 1]], axis=-1)
    return tf.gather(mirrored, [1, 0, 2, 4, 3], axis=-2)


def _report_corrupt(corrupt_counter):
    """Prints one line about a skipped record to stderr and counts it; returns a dummy bool scalar."""
    updates = [tf.print("mtarcface_tf: skipped a corrupt image record (not a complete JPEG/PNG/GIF/BMP/WebP)",
                        output_stream=sys.stderr)]
    if corrupt_counter is not None:
        updates.append(corrupt_counter.add(1))
    with tf.control_dependencies(updates):
        return tf.constant(False)


def _resize(image, image_size):
    """Resizes a uint8 [H,W,3] image to [image_size, image_size, 3] uint8."""
    resized = tf.image.resize(image, [image_size, image_size], method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)


def _raw_records(path, input_context, shuffle_buffer, seed, repeat):
    """Returns a dataset of serialized examples from ``path``: sharded per input pipeline, interleaved, shuffled."""
    files = records.list_shards(path)
    dataset = tf.data.Dataset.from_tensor_slices(files)
    pipelines = input_context.num_input_pipelines if input_context is not None else 1
    shard_files = pipelines > 1 and len(files) >= pipelines
    if shard_files:
        dataset = dataset.shard(pipelines, input_context.input_pipeline_id)
    dataset = dataset.shuffle(len(files), seed=seed)
    dataset = dataset.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 16),
                                 num_parallel_calls=AUTOTUNE, deterministic=False)
    if pipelines > 1 and not shard_files:
        dataset = dataset.shard(pipelines, input_context.input_pipeline_id)
    if shuffle_buffer > 1:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed)
    return dataset.repeat() if repeat else dataset


def _augment_batch(seed, pipeline_id, mask_probability, flip, mask_placement):
    """Returns the per-batch map: (index, (images uint8, labels, landmarks)) -> (normalized images, targets)."""
    augmenter = masks.MaskAugmenter(probability=mask_probability, seed=seed)

    def augment(index, batch):
        images, labels, landmarks = batch
        batch_seed = tf.stack([tf.cast(index, tf.int32), tf.constant(pipeline_id, tf.int32)])
        if flip:
            flip_seed = tf.random.experimental.stateless_fold_in(batch_seed, _FLIP_STREAM)
            mirrored = tf.where(tf.random.stateless_uniform([tf.shape(images)[0]], flip_seed) < 0.5)
            # Scattering the flipped half is several times cheaper than tf.where over the whole batch.
            images = tf.tensor_scatter_nd_update(images, mirrored, tf.reverse(tf.gather_nd(images, mirrored), [2]))
            landmarks = tf.tensor_scatter_nd_update(
                landmarks, mirrored, flip_landmarks(tf.gather_nd(landmarks, mirrored), images.shape[2]))
        if mask_probability > 0:
            placed = landmarks if mask_placement == "landmarks" else None
            images, mask_labels = augmenter(images, seed=batch_seed, landmarks=placed)
        else:
            mask_labels = tf.zeros([tf.shape(images)[0]], tf.int32)
        return normalize(images), {"identity": tf.cast(labels, tf.int32), "mask": mask_labels}

    return augment


def make_train_dataset(path, batch_size, *, image_size=112, mask_probability=0.5, flip=True, shuffle_buffer=20000,
                       seed=0, input_context=None, repeat=True, identities_per_batch=0, corrupt_counter=None,
                       mask_placement="landmarks"):
    """Returns the training ``tf.data.Dataset`` over the TFRecords at ``path``.

    Args:
      path: TFRecords: a directory, a ``*.manifest.json``, a glob or one file (see ``records.list_shards``).
      batch_size: images per batch. With ``input_context`` (``strategy.distribute_datasets_from_function``)
        this is the PER-REPLICA batch: pass ``input_context.get_per_replica_batch_size(global_batch)``.
      image_size: output size S; stored images of another size are resized.
      mask_probability: chance each image gets a synthetic mask (0 disables the augmenter).
      flip: random horizontal flips.
      shuffle_buffer: records in the shuffle buffer (<= 1: no shuffling).
      seed: seed of shuffling, flips and masks (the masks of batch k are reproducible; the order is not).
      input_context: ``tf.distribute.InputContext`` or None; files (or records, when there are fewer files than
        input pipelines) are sharded across input pipelines.
      repeat: repeat forever (training) or one pass.
      identities_per_batch: P > 0 gives identity-balanced batches for triplet losses: P distinct identities
        with K = batch_size / P images each (batch_size must be divisible by P); identities with fewer than K
        images in the stream are never drawn, and a batch with a corrupt record is dropped whole.
      corrupt_counter: optional ``CorruptRecordCounter`` counting skipped corrupt records.
      mask_placement: "landmarks" (masks fitted to each record's landmarks where it has them, the template
        elsewhere) or "template" (the template for every image).

    Returns:
      Dataset of ``(images float32 [B,S,S,3] in [-1, 1], {"identity": int32 [B], "mask": int32 [B]})``,
      batches always full (drop_remainder).

    Raises:
      FileNotFoundError: nothing at ``path``. ValueError: batch_size not divisible by identities_per_batch, or an
        unknown mask_placement.
    """
    if mask_placement not in MASK_PLACEMENTS:
        raise ValueError(f"mask_placement must be one of {MASK_PLACEMENTS}, got {mask_placement!r}")
    raw = _raw_records(path, input_context, shuffle_buffer, seed, repeat)
    pipeline_id = input_context.input_pipeline_id if input_context is not None else 0
    if identities_per_batch > 0:
        batches = _identity_balanced_batches(raw, batch_size, identities_per_batch, image_size, corrupt_counter)
    else:
        batches = _shuffled_batches(raw, batch_size, image_size, corrupt_counter)
    augment = _augment_batch(seed, pipeline_id, mask_probability, flip, mask_placement)
    dataset = batches.enumerate().map(augment, num_parallel_calls=AUTOTUNE, deterministic=False)
    options = tf.data.Options()
    # Parallelism comes from parallel map calls; multi-threaded single ops only add synchronisation cost here.
    options.threading.max_intra_op_parallelism = 1
    return dataset.with_options(options).prefetch(AUTOTUNE)


def _shuffled_batches(raw, batch_size, image_size, corrupt_counter):
    """Returns batches of (uint8 images [B,S,S,3], int64 labels [B], float32 landmarks [B,5,2] (NaN where a
    record has none)) from serialized examples."""

    def parse(serialized):
        image_raw, label, landmarks = records.parse_example_with_landmarks(serialized)
        image, landmarks, ok = _decode_with_landmarks(image_raw, landmarks, image_size, corrupt_counter)
        return image, label, landmarks, ok

    decoded = raw.map(parse, num_parallel_calls=AUTOTUNE, deterministic=False).ignore_errors(log_warning=True)
    decoded = decoded.filter(_is_ok).map(_drop_ok)
    return decoded.batch(batch_size, drop_remainder=True, num_parallel_calls=AUTOTUNE, deterministic=False)


def _identity_balanced_batches(raw, batch_size, identities, image_size, corrupt_counter):
    """Returns P x K batches (uint8 images [P*K,S,S,3], int64 labels [P*K], float32 landmarks [P*K,5,2]): P distinct
    identities, K images each."""
    if batch_size % identities:
        raise ValueError(f"batch_size {batch_size} is not divisible by identities_per_batch {identities}")
    per_identity = batch_size // identities
    parsed = raw.map(records.parse_example_with_landmarks, num_parallel_calls=AUTOTUNE)
    groups = parsed.group_by_window(
        key_func=lambda image_raw, label, landmarks: label,
        reduce_func=lambda key, window: window.batch(per_identity, drop_remainder=True),
        window_size=per_identity)
    groups = groups.shuffle(8 * identities).batch(identities, drop_remainder=True)
    # Two groups of one identity can meet in a batch; such batches are dropped to keep P distinct identities.
    groups = groups.filter(lambda image_raw, labels, landmarks: tf.equal(tf.size(tf.unique(labels[:, 0]).y),
                                                                          identities))

    def decode_batch(image_raw, labels, landmarks):
        images, landmarks, ok = tf.map_fn(
            lambda r: _decode_with_landmarks(r[0], r[1], image_size, corrupt_counter),
            (tf.reshape(image_raw, [-1]), tf.reshape(landmarks, [-1, records.NUM_LANDMARKS, 2])),
            fn_output_signature=(tf.TensorSpec([image_size, image_size, 3], tf.uint8),
                                 tf.TensorSpec([records.NUM_LANDMARKS, 2], tf.float32), tf.TensorSpec([], tf.bool)))
        return images, tf.reshape(labels, [-1]), landmarks, tf.reduce_all(ok)

    decoded = groups.map(decode_batch, num_parallel_calls=AUTOTUNE, deterministic=False).ignore_errors(log_warning=True)
    return decoded.filter(_is_ok).map(_drop_ok)


def _is_ok(images, labels, landmarks, ok):
    """Filter predicate: keeps elements whose ``ok`` flag is True."""
    del images, labels, landmarks
    return ok


def _drop_ok(images, labels, landmarks, ok):
    """Returns ``(images, labels, landmarks)`` without the ``ok`` flag."""
    del ok
    return images, labels, landmarks


def make_eval_images_dataset(images_uint8, batch_size, image_size=None):
    """Returns a dataset of normalized float32 batches [b,S,S,3] (in order, last batch partial) for embedding.

    Args:
      images_uint8: uint8 numpy array or tensor [N,H,W,3] RGB.
      batch_size: images per batch.
      image_size: resize to S x S (area) when given and different from the stored size.
    """
    dataset = tf.data.Dataset.from_tensor_slices(images_uint8).batch(batch_size)
    stored = images_uint8.shape[1]

    def prepare(images):
        if image_size is not None and image_size != stored:
            images = tf.image.resize(images, [image_size, image_size], method="area")
        return normalize(images)

    return dataset.map(prepare, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)
