"""Writes a PNG grid of faces with and without MaskAugmenter masks, each tile labelled.

  python tools/preview_masks.py --output=docs/mask_preview.png [--rows=4 --cols=6 --seed=0]
                                [--input=TFRECORDS | --photos=DIR [--detector=retinaface]] [--image_size=80]
  python tools/preview_masks.py --photos=FOLDER --output=masks_on_my_photos.png --rows=6 --cols=8 --image_size=112

Faces come from --input (TFRecords: directory, manifest, glob or file), from --photos (photographs: the
largest face of each is detected, aligned, and its mask fitted to its landmarks), else from SynthFaces (masks
fitted to the generator's landmarks). Each row of clean faces is followed by the same faces through the augmenter.
"""
import sys

from mtarcface_tf.quiet import quiet_tensorflow

quiet_tensorflow()  # first: TensorFlow's log lines off (--verbosity=0 or MTARCFACE_TF_LOGS=1 bring them back)

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("output", "docs/mask_preview.png", "PNG file to write.")
flags.DEFINE_integer("rows", 4, "Rows of tiles (half clean, half masked).")
flags.DEFINE_integer("cols", 6, "Tiles per row.")
flags.DEFINE_integer("seed", 0, "Seed of the masks (and of the faces).")
flags.DEFINE_string("input", "", "TFRecords to take faces from (default: SynthFaces).")
flags.DEFINE_string("photos", "", "Folder of photographs to detect, align and mask (instead of --input).")
flags.DEFINE_enum("detector", "retinaface", ["retinaface", "mtcnn"], "Face detector for --photos.")
flags.DEFINE_integer("image_size", 80, "Tile size in pixels (80 keeps the PNG under 300 KB).")
flags.DEFINE_float("probability", 1.0, "Mask probability of the augmented rows.")


def main(argv):
    del argv
    from mtarcface_tf.data import preview, synthetic
    from mtarcface_tf.faces.detect import DetectorUnavailableError
    count = max(1, FLAGS.rows // 2) * FLAGS.cols
    landmarks, source = None, FLAGS.photos or FLAGS.input or "SynthFaces"
    try:
        if FLAGS.photos:
            faces, landmarks, skipped = preview.faces_from_photos(FLAGS.photos, count, FLAGS.image_size,
                                                                  FLAGS.detector)
            print(f"{skipped} photos without a face skipped")
        elif FLAGS.input:
            faces = preview.faces_from_records(FLAGS.input, count, FLAGS.image_size)
        else:
            faces, _, landmarks = synthetic.render_faces(count, 1, image_size=FLAGS.image_size, seed=FLAGS.seed,
                                                         with_landmarks=True)
        grid, masked = preview.mask_preview_grid(faces, FLAGS.cols, FLAGS.probability, FLAGS.seed, landmarks)
    except (FileNotFoundError, ValueError, DetectorUnavailableError) as error:
        sys.exit(f"error: {source}: {error}")
    try:
        preview.write_png(FLAGS.output, grid)
    except OSError as error:
        sys.exit(f"error: {FLAGS.output}: cannot be written ({error.strerror or error}); choose another --output.")
    print(f"wrote {FLAGS.output}: {len(faces)} faces from {source}, {masked} masked")


if __name__ == "__main__":
    app.run(main)
