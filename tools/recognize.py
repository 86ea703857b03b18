"""Face recognition from the command line: enroll a gallery, identify faces in photos/folders/videos, verify pairs,
manage the gallery.

  python tools/recognize.py enroll   --model=export --gallery=people --images=photos/   [--svm]
  python tools/recognize.py identify --model=export --gallery=people --input=PATH|--camera=0 --output_dir=out
  python tools/recognize.py verify   --model=export IMAGE_A IMAGE_B
  python tools/recognize.py remove   --gallery=people NAME [NAME ...] [--names_file=leavers.txt]
  python tools/recognize.py rename   --gallery=people OLD NEW
  python tools/recognize.py tune     --gallery=people --pq_bytes=64 --min_candidates=2000
  python tools/recognize.py list     --gallery=people
  python tools/recognize.py stats    --gallery=people

A gallery is a folder (SQLite database + search index, docs/gallery.md); a gallery file people.npz of the earlier
format opens too and becomes the folder people/ on its first write (the file is kept).

--input is an image, a folder of images or a video file. --aligned skips detection for pre-aligned faces
(e.g. SynthFaces); --detector picks RetinaFace (default) or MTCNN; --all_faces handles every face instead of
the largest.
identify writes annotated images/video plus results.csv and results.json to --output_dir.
"""
import sys

from mtarcface_tf.quiet import quiet_tensorflow, tensorflow_logs_wanted

quiet_tensorflow()  # first: TensorFlow's log lines off (--verbosity=0 or MTARCFACE_TF_LOGS=1 bring them back)

from absl import app, flags, logging  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "SavedModel directory (or TF Serving base dir, training workdir, checkpoint).")
flags.DEFINE_string("gallery", None, "Gallery folder written by enroll and read by identify (or an older .npz).")
flags.DEFINE_string("images", None, "enroll: folder with one sub-folder of photos per person.")
flags.DEFINE_string("input", None, "identify: image file, folder of images or video file.")
flags.DEFINE_integer("camera", None, "identify: webcam index (instead of --input).")
flags.DEFINE_string("output_dir", "recognize_out", "identify: where annotated media, results.csv/json go.")
flags.DEFINE_enum("detector", None, ["mtcnn", "retinaface"],
                  "Face detector (default: retinaface, which finds more masked faces; mtcnn, with a note, where "
                  "retinaface's weights are not installed).")
flags.DEFINE_bool("aligned", False, "Inputs are already aligned faces: skip detection and alignment.")
flags.DEFINE_bool("all_faces", False, "identify: every detected face, not only the largest.")
flags.DEFINE_float("threshold", None, "Cosine similarity threshold (default: the export's calibrated one).")
flags.DEFINE_integer("top_k", 5, "identify: candidates listed per face.")
flags.DEFINE_bool("svm", False, "enroll: the gallery keeps an SVM classifier over its embeddings; identify: classify "
                  "with it too (columns svm_identity, svm_probability; on by itself for a gallery enrolled with it).")
flags.DEFINE_integer("max_frames", 0, "identify on video/camera: stop after this many frames (0 = all / until q).")
flags.DEFINE_string("names_file", None, "remove: a text file with one name per line, removed (with any NAME "
                    "arguments) in one transaction.")
flags.DEFINE_integer("pq_bytes", None, "tune: bytes per person of the ANN's codes (docs/gallery.md, operating "
                     "points; the default is one 4-bit code per 2 dimensions).")
flags.DEFINE_integer("min_candidates", None, "tune: ANN candidates re-ranked exactly per query, at least.")
flags.DEFINE_bool("force", False, "Use a gallery enrolled with another model (its similarities are not comparable).")


def main(argv):
    # Imported here so that --help answers before TensorFlow loads.
    from mtarcface_tf.faces.detect import DetectorUnavailableError, InvalidImageError
    from mtarcface_tf.inference import media
    from mtarcface_tf.inference.gallery import GalleryError
    from mtarcface_tf.inference.recognizer import NoFaceError
    from mtarcface_tf.model.workdir import ModelLoadError
    if not tensorflow_logs_wanted():
        logging.set_verbosity(logging.ERROR)   # per-image notes go to results.csv, not the terminal
    try:
        return media.run_command(
            argv[1] if len(argv) > 1 else "", argv[2:], FLAGS.model, gallery=FLAGS.gallery, images=FLAGS.images,
            source=FLAGS.camera if FLAGS.camera is not None else FLAGS.input, output_dir=FLAGS.output_dir,
            detector=FLAGS.detector, aligned=FLAGS.aligned, all_faces=FLAGS.all_faces, threshold=FLAGS.threshold,
            top_k=FLAGS.top_k, svm=FLAGS.svm, max_frames=FLAGS.max_frames, force=FLAGS.force,
            names_file=FLAGS.names_file,
            settings={"pq_bytes": FLAGS.pq_bytes, "min_candidates": FLAGS.min_candidates})
    except (media.UsageError, ModelLoadError, GalleryError, NoFaceError, InvalidImageError,
            DetectorUnavailableError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # a folder or file that cannot be written (disk full, permissions)
        print(f"error: {error.filename or FLAGS.output_dir}: {error.strerror or error}; choose a writable place.",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    app.run(main)
