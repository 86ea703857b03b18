"""Converts training/evaluation data into the TFRecord shards the trainer reads.

  python tools/convert.py --source=recordio --input=faces_emore/train.rec --output_dir=data/ms1mv2 --workers=2
  python tools/convert.py --source=folder --input=my_faces/ --output_dir=data/mine [--align --detector=mtcnn]
  python tools/convert.py --source=bin --input=faces_emore/lfw.bin --output_dir=data/lfw_images

Re-running into an output that already holds the data set is refused; --resume continues an interrupted run.
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up lines out of the one-line errors

from absl import app, flags  # noqa: E402

from mtarcface_tf.data import convert, shards  # noqa: E402
from mtarcface_tf.data.bin_pairs import BinFormatError, UnsafeFileError  # noqa: E402
from mtarcface_tf.data.recordio import RecordIOError  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_enum("source", "recordio", ["recordio", "folder", "bin"], "Kind of input.")
flags.DEFINE_string("input", None, "The .rec file, the identity-folder tree or the .bin file.")
flags.DEFINE_string("idx", None, "The .idx of a .rec (default: beside it; without one the .rec is scanned).")
flags.DEFINE_string("output_dir", None, "Directory of the TFRecord shards and the manifest.")
flags.DEFINE_string("name", "train", "Data set name: shards NAME-0000i-of-000NN.tfrecord, NAME.manifest.json.")
flags.DEFINE_integer("num_shards", 0, "Number of shards; 0: one per 100k images, at least one per worker.")
flags.DEFINE_integer("workers", 2, "Processes writing shards in parallel.")
flags.DEFINE_bool("align", False, "Folder source: detect and align each face (else inputs must be aligned).")
flags.DEFINE_enum("detector", "mtcnn", ["mtcnn", "retinaface"], "Face detector used with --align.")
flags.DEFINE_integer("image_size", convert.DEFAULT_IMAGE_SIZE, "Side of the aligned faces in pixels.")
flags.DEFINE_bool("resume", False, "Continue an interrupted conversion in --output_dir.")
flags.mark_flags_as_required(["input", "output_dir"])


def _convert():
    common = dict(num_shards=FLAGS.num_shards, workers=FLAGS.workers, resume=FLAGS.resume,
                  command=" ".join(sys.argv))
    if FLAGS.source == "recordio":
        return convert.convert_recordio(FLAGS.input, FLAGS.output_dir, FLAGS.name, idx_path=FLAGS.idx, **common)
    if FLAGS.source == "folder":
        detector = None
        if FLAGS.align:
            from mtarcface_tf.faces.detect import make_detector
            make_detector(FLAGS.detector)  # fails here, in one line, when the detector's package is missing
            detector = FLAGS.detector
        return convert.convert_folder(FLAGS.input, FLAGS.output_dir, FLAGS.name, image_size=FLAGS.image_size,
                                      detector=detector, **common)
    return convert.convert_bin(FLAGS.input, FLAGS.output_dir, FLAGS.name, **common)


def main(argv):
    del argv
    from mtarcface_tf.faces.detect import DetectorUnavailableError
    try:
        manifest = _convert()
    except (shards.ConversionError, FileNotFoundError, RecordIOError, UnsafeFileError, BinFormatError,
            DetectorUnavailableError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    for line in convert.format_summary(manifest, FLAGS.output_dir):
        print(line)


if __name__ == "__main__":
    app.run(main)
