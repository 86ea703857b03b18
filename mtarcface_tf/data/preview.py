"""PNG grids of faces with and without synthetic masks, for people to judge the augmentation."""
import os

import cv2
import numpy as np

from mtarcface_tf.atomic import atomic_path

LABEL_HEIGHT_RATIO = 260.0   # text scale = tile height / this


def faces_from_records(path, count, size):
    """Returns up to ``count`` uint8 faces [N, size, size, 3] read from TFRecords at ``path`` (any ``list_shards``
    form)."""
    import tensorflow as tf
    from mtarcface_tf.data import records
    faces = []
    for serialized in tf.data.TFRecordDataset(records.list_shards(path)).take(count):
        image_raw, _ = records.parse_example(serialized)
        image = tf.io.decode_image(image_raw, channels=3, expand_animations=False)
        faces.append(tf.image.resize(image, (size, size), method="area").numpy())
    return np.round(np.stack(faces)).astype(np.uint8)


def faces_from_photos(folder, count, size, detector="retinaface"):
    """Detects, aligns and returns up to ``count`` faces from the photos under ``folder`` (recursively; one per
    sub-folder in turn).

    Returns ``(faces uint8 [N, size, size, 3] RGB, landmarks float32 [N, 5, 2] in the crops, skipped int)``:
    the largest face of each photo, aligned to the template with its landmarks mapped through the alignment;
    photos without a face (or unreadable) are skipped and counted.
    """
    from mtarcface_tf.data.convert import IMAGE_EXTENSIONS
    from mtarcface_tf.faces.align import align_face_and_landmarks
    from mtarcface_tf.faces.detect import InvalidImageError, make_detector, read_image_rgb
    by_folder = {}
    for root, _, names in sorted(os.walk(folder)):
        by_folder[root] = sorted(os.path.join(root, n) for n in names if n.lower().endswith(IMAGE_EXTENSIONS))
    # Round robin over the folders (one photo of each person before a second one of anybody).
    paths = [p for _, p in sorted((rank, p) for files in by_folder.values() for rank, p in enumerate(files))]
    if not paths:
        raise FileNotFoundError(f"{folder}: no photos found")
    detector = make_detector(detector) if isinstance(detector, str) else detector
    faces, landmarks, skipped = [], [], 0
    for path in paths:
        if len(faces) == count:
            break
        try:
            photo = read_image_rgb(path)
        except InvalidImageError:
            skipped += 1
            continue
        face = detector.detect_largest(photo)
        if face is None:
            skipped += 1
            continue
        crop, mapped = align_face_and_landmarks(photo, face.landmarks, size)
        faces.append(crop)
        landmarks.append(mapped)
    return np.asarray(faces, np.uint8), np.asarray(landmarks, np.float32), skipped


def _label(tile, text):
    """Writes ``text`` on the tile's bottom edge (white with a dark outline), in place."""
    scale = tile.shape[0] / LABEL_HEIGHT_RATIO
    for colour, thickness in (((0, 0, 0), 3), ((255, 255, 255), 1)):
        cv2.putText(tile, text, (2, tile.shape[0] - 4), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thickness,
                    cv2.LINE_AA)


def mask_preview_grid(faces, cols, probability=1.0, seed=0, landmarks=None):
    """Masks ``faces`` with ``MaskAugmenter`` and lays them out: each clean row is followed by its masked row.

    Args:
      faces: uint8 [N, S, S, 3] aligned faces; N is cut to a multiple of ``cols``.
      cols: tiles per row. probability, seed: of the augmenter.
      landmarks: optional float32 [N, 5, 2] landmarks (pixels) the masks are fitted to.
    Returns:
      (grid uint8 [2 * N / cols * S, cols * S, 3] RGB, number of masked faces).
    """
    from mtarcface_tf.data.masks import MaskAugmenter
    count = len(faces) // cols * cols
    faces = np.asarray(faces)[:count]
    if not len(faces):
        raise ValueError(f"need at least cols={cols} faces for a preview grid")
    if landmarks is not None:
        landmarks = np.asarray(landmarks, np.float32)[:count]
    masked, labels = MaskAugmenter(probability=probability, seed=seed)(faces, landmarks=landmarks)
    masked, labels = np.asarray(masked).copy(), np.asarray(labels)
    clean = faces.copy()
    for tile in clean:
        _label(tile, "clean")
    for tile, label in zip(masked, labels):
        _label(tile, "mask=1" if label else "mask=0")
    rows = []
    for start in range(0, len(faces), cols):
        rows += [np.concatenate(list(clean[start:start + cols]), axis=1),
                 np.concatenate(list(masked[start:start + cols]), axis=1)]
    return np.concatenate(rows, axis=0), int(labels.sum())


def write_png(path, image_rgb):
    """Writes an RGB uint8 image as PNG through a temporary name."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_path(path, ".png") as tmp:
        cv2.imwrite(tmp, cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
