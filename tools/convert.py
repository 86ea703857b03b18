"""Converts training/evaluation data into the TFRecord shards the trainer reads.

  python tools/convert.py --source=recordio --input=faces_emore/train.rec --output_dir=data/ms1mv2 --workers=2
  python tools/convert.py --source=folder --input=my_faces/ --output_dir=data/mine [--align [--detector=mtcnn]]
  python tools/convert.py --source=bin --input=faces_emore/lfw.bin --output_dir=data/lfw_images
  python tools/convert.py --source=tfrecord --add_landmarks --input=data/ms1mv2 --output_dir=data/ms1mv2_landmarks

Re-running into an output that already holds the data set is refused; --resume continues an interrupted run.
"""
import os
import sys

from mtarcface_tf.quiet import quiet_tensorflow

quiet_tensorflow()  # first: TensorFlow's log lines off (--verbosity=0 or MTARCFACE_TF_LOGS=1 bring them back)

from absl import app, flags  # noqa: E402

from mtarcface_tf.data import convert, shards  # noqa: E402
from mtarcface_tf.data.bin_pairs import BinFormatError, UnsafeFileError  # noqa: E402
from mtarcface_tf.data.recordio import RecordIOError  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_enum("source", "recordio", ["recordio", "folder", "bin", "tfrecord"],
                  "Kind of input. bin: a verification .bin's images in order (pair i = images 2i, 2i+1), the two "
                  "images of a same-pair sharing a label and each image of a different-pair getting its own (a label "
                  "is not a person: one person in several pairs gets several); NAME.pairs.json keeps the pairs. "
                  "tfrecord: existing records, copied with --add_landmarks.")
flags.DEFINE_string("input", None, "The .rec file, the identity-folder tree, the .bin file or the TFRecords.")
flags.DEFINE_string("idx", None, "The .idx of a .rec (default: beside it; without one the .rec is scanned).")
flags.DEFINE_string("output_dir", None, "Directory of the TFRecord shards and the manifest.")
flags.DEFINE_string("name", "train", "Data set name: shards NAME-0000i-of-000NN.tfrecord, NAME.manifest.json.")
flags.DEFINE_integer("num_shards", 0, "Number of shards; 0: one per 100k images, at least one per worker.")
flags.DEFINE_integer("workers", 2, "Processes writing shards in parallel.")
flags.DEFINE_bool("align", False, "Folder source: detect and align each face (else inputs must be aligned).")
flags.DEFINE_enum("detector", None, ["mtcnn", "retinaface"],
                  "Face detector used with --align and --add_landmarks (default: retinaface, which finds more masked "
                  "faces; mtcnn, with a note, where retinaface's weights are not installed).")
flags.DEFINE_bool("add_landmarks", False, "TFRecord source: copy the records adding the five landmarks detected on "
                                          "each aligned crop (masks are then fitted to them).")
flags.DEFINE_enum("landmark_method", convert.DEFAULT_LANDMARK_METHOD, list(convert.LANDMARK_METHODS),
                  "--add_landmarks: onet = MTCNN's O-Net on the template's face box of each crop, batched (no "
                  "detection; --detector only where O-Net is unsure, docs/landmarks.md); detector = --detector on "
                  "every crop (about 50x slower).")
flags.DEFINE_integer("image_size", convert.DEFAULT_IMAGE_SIZE, "Side of the aligned faces in pixels.")
flags.DEFINE_bool("resume", False, "Continue an interrupted conversion in --output_dir.")
flags.mark_flags_as_required(["input", "output_dir"])


def _check_output_dir(path):
    """Refuses, before any work, an --output_dir that is a file, lies under a file, or cannot be written."""
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(os.path.abspath(existing))
    if not os.path.isdir(existing):
        raise shards.ConversionError(f"{existing}: is a file, not a folder; choose another --output_dir.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise shards.ConversionError(f"{existing}: not writable; choose another --output_dir.")


def main(argv):
    del argv
    from mtarcface_tf.faces.detect import DetectorUnavailableError
    try:
        _check_output_dir(FLAGS.output_dir)
        manifest = convert.convert_source(FLAGS.source, FLAGS.input, FLAGS.output_dir, FLAGS.name, idx_path=FLAGS.idx,
                                          image_size=FLAGS.image_size, align=FLAGS.align,
                                          with_landmarks=FLAGS.add_landmarks, detector=FLAGS.detector,
                                          landmark_method=FLAGS.landmark_method,
                                          num_shards=FLAGS.num_shards, workers=FLAGS.workers, resume=FLAGS.resume,
                                          command=" ".join(sys.argv))
    except (shards.ConversionError, FileNotFoundError, RecordIOError, UnsafeFileError, BinFormatError,
            DetectorUnavailableError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    except OSError as err:  # e.g. the disk filled up or permissions changed while writing
        print(f"error: {err.filename or FLAGS.output_dir}: {err.strerror or err}; free space or choose another "
              "--output_dir, then re-run with --resume.", file=sys.stderr)
        sys.exit(1)
    for line in convert.format_summary(manifest, FLAGS.output_dir):
        print(line)


if __name__ == "__main__":
    app.run(main)
