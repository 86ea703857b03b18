"""Writes a PNG grid of faces with and without MaskAugmenter masks, each tile labelled.

  python tools/preview_masks.py --output=docs/mask_preview.png [--rows=4 --cols=6 --seed=0]
                                [--input=TFRECORDS] [--image_size=80]

Faces come from --input (TFRecords: directory, manifest, glob or file) when given, else from SynthFaces
(mtarcface_tf.data.synthetic) when it is installed, else from simple faces drawn at the template points.
Odd rows show the clean faces, the row below each shows the same faces through the augmenter.
"""
import os
import sys

import cv2
import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("output", "docs/mask_preview.png", "PNG file to write.")
flags.DEFINE_integer("rows", 4, "Rows of tiles (pairs of clean/augmented rows are made from rows // 2 * cols faces).")
flags.DEFINE_integer("cols", 6, "Tiles per row.")
flags.DEFINE_integer("seed", 0, "Seed of the masks (and of the faces).")
flags.DEFINE_string("input", "", "TFRecords to take faces from (default: SynthFaces or drawn faces).")
flags.DEFINE_integer("image_size", 80, "Tile size in pixels (80 keeps the PNG under 300 KB).")
flags.DEFINE_float("probability", 1.0, "Mask probability of the augmented rows.")


def _faces_from_records(path, count, size):
    """Returns up to ``count`` uint8 faces [N, size, size, 3] from TFRecords at ``path``."""
    import tensorflow as tf
    from mtarcface_tf.data import records
    dataset = tf.data.TFRecordDataset(records.list_shards(path)).take(count)
    faces = []
    for serialized in dataset:
        image_raw, _ = records.parse_example(serialized)
        image = tf.io.decode_image(image_raw, channels=3, expand_animations=False)
        faces.append(tf.image.resize(image, (size, size), method="area").numpy())
    return np.round(np.stack(faces)).astype(np.uint8)


def _drawn_faces(count, size, seed):
    """Returns ``count`` simple faces [N, size, size, 3] uint8: head ellipse, eyes, nose, mouth at the template."""
    from mtarcface_tf.data import masks
    rng = np.random.default_rng(seed)
    scale = 4  # draw at 4x and shrink, for smooth edges
    big = masks.TEMPLATE_SIZE * scale
    points = masks.ARCFACE_TEMPLATE * scale
    out = []
    for _ in range(count):
        background = rng.integers(40, 200, 3).tolist()
        skin = (np.array([225, 185, 150]) * rng.uniform(0.45, 1.1)).clip(0, 255).tolist()
        image = np.full((int(big), int(big), 3), background, np.uint8)
        centre = (int(points[2][0]), int(points[2][1] - 6 * scale))
        cv2.ellipse(image, centre, (int(44 * scale), int(58 * scale)), 0, 0, 360, skin, -1, cv2.LINE_AA)
        for eye in points[:2]:
            cv2.ellipse(image, tuple(int(v) for v in eye), (7 * scale, 4 * scale), 0, 0, 360, (250, 250, 250), -1)
            cv2.circle(image, tuple(int(v) for v in eye), 3 * scale, (60, 40, 30), -1, cv2.LINE_AA)
        nose = points[2]
        cv2.line(image, (int(nose[0]), int(nose[1] - 14 * scale)), (int(nose[0]), int(nose[1])),
                 (150, 100, 80), 2 * scale, cv2.LINE_AA)
        cv2.line(image, tuple(int(v) for v in points[3]), tuple(int(v) for v in points[4]), (170, 60, 60),
                 3 * scale, cv2.LINE_AA)
        # light from one side, so the shading of the masks is visible
        ramp = np.linspace(rng.uniform(0.7, 1.0), rng.uniform(0.7, 1.0), int(big))[None, :, None]
        image = (image * ramp).astype(np.uint8)
        out.append(cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA))
    return np.stack(out)


def _faces(count, size, seed):
    """Returns ``count`` faces from --input, SynthFaces or the drawn fallback, and where they came from."""
    if FLAGS.input:
        return _faces_from_records(FLAGS.input, count, size), FLAGS.input
    try:
        from mtarcface_tf.data import synthetic
    except ImportError:
        return _drawn_faces(count, size, seed), "drawn faces"
    faces, _ = synthetic.render_faces(count, 1, image_size=size, seed=seed)
    return faces[:count], "SynthFaces"


def _label(tile, text):
    """Writes ``text`` on the tile's bottom edge (white with a dark outline)."""
    height = tile.shape[0]
    scale = tile.shape[0] / 260.0
    for colour, thickness in (((0, 0, 0), 3), ((255, 255, 255), 1)):
        cv2.putText(tile, text, (2, height - 4), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thickness, cv2.LINE_AA)


def main(argv):
    del argv
    import tensorflow as tf
    from mtarcface_tf.data import masks

    pairs = max(1, FLAGS.rows // 2)
    count = pairs * FLAGS.cols
    try:
        faces, source = _faces(count, FLAGS.image_size, FLAGS.seed)
    except (FileNotFoundError, tf.errors.OpError) as error:
        print(f"preview_masks: --input={FLAGS.input}: {error}".splitlines()[0], file=sys.stderr)
        sys.exit(1)
    augmenter = masks.MaskAugmenter(probability=FLAGS.probability, seed=FLAGS.seed)
    masked, labels = augmenter(tf.constant(faces))
    masked, labels = masked.numpy(), labels.numpy()
    rows = []
    for p in range(pairs):
        block = slice(p * FLAGS.cols, (p + 1) * FLAGS.cols)
        clean_row, masked_row = faces[block].copy(), masked[block].copy()
        for tile in clean_row:
            _label(tile, "clean")
        for tile, label in zip(masked_row, labels[block]):
            _label(tile, "mask=1" if label else "mask=0")
        rows += [np.concatenate(list(clean_row), axis=1), np.concatenate(list(masked_row), axis=1)]
    grid = np.concatenate(rows, axis=0)
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
    tmp = FLAGS.output + ".tmp.png"
    cv2.imwrite(tmp, cv2.cvtColor(grid, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    os.replace(tmp, FLAGS.output)
    print(f"wrote {FLAGS.output}: {count} faces from {source}, {int(labels.sum())} masked")


if __name__ == "__main__":
    app.run(main)
