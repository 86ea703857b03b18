"""Face recognition from the command line: enroll a gallery, identify faces in photos/folders/videos, verify pairs.

  python tools/recognize.py enroll   --model=export --gallery=people.npz --images=photos/   [--svm]
  python tools/recognize.py identify --model=export --gallery=people.npz --input=PATH|--camera=0 --output_dir=out
  python tools/recognize.py verify   --model=export IMAGE_A IMAGE_B

--input is an image, a folder of images or a video file. --aligned skips detection for pre-aligned faces
(e.g. SynthFaces); --detector picks MTCNN or RetinaFace; --all_faces handles every face instead of the largest.
identify writes annotated images/video plus results.csv and results.json to --output_dir.
"""
import csv
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import cv2  # pylint: disable=wrong-import-position
from absl import app, flags, logging  # pylint: disable=wrong-import-position
from tqdm import tqdm  # pylint: disable=wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "SavedModel directory (or TF Serving base dir, training workdir, checkpoint).")
flags.DEFINE_string("gallery", None, "Gallery file (.npz) written by enroll and read by identify.")
flags.DEFINE_string("images", None, "enroll: folder with one sub-folder of photos per person.")
flags.DEFINE_string("input", None, "identify: image file, folder of images or video file.")
flags.DEFINE_integer("camera", None, "identify: webcam index (instead of --input).")
flags.DEFINE_string("output_dir", "recognize_out", "identify: where annotated media, results.csv/json go.")
flags.DEFINE_enum("detector", "mtcnn", ["mtcnn", "retinaface"], "Face detector.")
flags.DEFINE_bool("aligned", False, "Inputs are already aligned faces: skip detection and alignment.")
flags.DEFINE_bool("all_faces", False, "identify: every detected face, not only the largest.")
flags.DEFINE_float("threshold", None, "Cosine similarity threshold (default: the export's calibrated one).")
flags.DEFINE_integer("top_k", 5, "identify: candidates listed per face.")
flags.DEFINE_bool("svm", False, "enroll: also train an SVM classifier over the gallery's embeddings.")
flags.DEFINE_integer("max_frames", 0, "identify on video/camera: stop after this many frames (0 = all / until q).")
flags.mark_flag_as_required("model")

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
CSV_FIELDS = ["source", "frame", "face", "identity", "similarity", "mask", "mask_probability", "box", "note", "error"]


class UsageError(ValueError):
    """A command line that cannot run (missing flag or file)."""


def _recognizer(gallery):
    from mtarcface_tf.inference.recognizer import FaceRecognizer
    return FaceRecognizer(FLAGS.model, gallery=gallery, threshold=FLAGS.threshold, detector=FLAGS.detector)


def _enroll():
    from mtarcface_tf.inference.gallery import Gallery
    if not FLAGS.gallery or not FLAGS.images:
        raise UsageError("enroll needs --gallery=FILE.npz and --images=DIR (one sub-folder per person).")
    gallery = Gallery.load(FLAGS.gallery) if os.path.isfile(FLAGS.gallery) else Gallery(use_svm=FLAGS.svm)
    gallery.use_svm = gallery.use_svm or FLAGS.svm
    recognizer = _recognizer(gallery)
    summary = recognizer.enroll_folder(FLAGS.images, aligned=FLAGS.aligned)
    for path, reason in summary["failed"]:
        print(f"skipped: {reason}" if reason.startswith(path) else f"skipped {path}: {reason}", file=sys.stderr)
    if not summary["enrolled"]:
        raise UsageError(f"{FLAGS.images}: no face could be enrolled ({len(summary['failed'])} failures above).")
    recognizer.gallery.save(FLAGS.gallery)
    images = sum(summary["enrolled"].values())
    print(f"enrolled {len(summary['enrolled'])} people from {images} images into {FLAGS.gallery} "
          f"({len(recognizer.gallery)} people in total); {len(summary['failed'])} images failed")
    print(json.dumps({"enrolled": summary["enrolled"], "failed": len(summary["failed"])}))
    return 0


def _rows(source, frame, results):
    return [{"source": source, "frame": frame, "face": index, "identity": result["identity"],
             "similarity": round(result["similarity"], 6),
             "mask": result["mask"]["status"] if result["mask"] else "unknown",
             "mask_probability": result["mask"]["probability"] if result["mask"] else "",
             "box": " ".join(f"{value:.1f}" for value in result["box"]), "note": result["note"], "error": ""}
            for index, result in enumerate(results)]


def _error_row(source, frame, error):
    return {**{field: "" for field in CSV_FIELDS}, "source": source, "frame": frame, "error": str(error)}


def _identify_images(recognizer, paths, failures, skip_errors):
    """Identifies faces in image files; with ``skip_errors`` a bad file is reported, counted and skipped."""
    from mtarcface_tf.inference.detect import InvalidImageError, read_image_rgb
    from mtarcface_tf.inference.recognizer import NoFaceError, annotate
    rows = []
    for path in tqdm(paths, desc="identifying", unit="img", disable=len(paths) < 2):
        try:
            results = recognizer.identify(path, FLAGS.top_k, aligned=FLAGS.aligned, all_faces=FLAGS.all_faces)
        except (NoFaceError, InvalidImageError) as error:
            if not skip_errors:
                raise
            print(f"skipped: {error}" if str(error).startswith(path) else f"skipped {path}: {error}", file=sys.stderr)
            failures.append(path)
            rows.append(_error_row(path, "", error))
            continue
        canvas = annotate(read_image_rgb(path), results)
        cv2.imwrite(os.path.join(FLAGS.output_dir, os.path.basename(path)), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
        rows.extend(_rows(path, "", results))
    return rows


def _open_video(source):
    capture = cv2.VideoCapture(source)
    if not capture.isOpened():
        if isinstance(source, int):
            raise UsageError(f"camera {source}: cannot be opened (no webcam here?); use --input=FILE instead.")
        raise UsageError(f"{source}: cannot be opened as a video; use an MP4/AVI file OpenCV can read.")
    return capture


def _identify_video(recognizer, capture, source, failures):
    from mtarcface_tf.inference.recognizer import NoFaceError, annotate
    name = f"camera{source}" if isinstance(source, int) else os.path.splitext(os.path.basename(source))[0]
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    writer, rows, frame = None, [], 0
    with tqdm(total=total, desc="frames", unit="frame") as progress:
        while not FLAGS.max_frames or frame < FLAGS.max_frames:
            ok, bgr = capture.read()
            if not ok:
                break
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            try:
                results = recognizer.identify(rgb, FLAGS.top_k, aligned=FLAGS.aligned, all_faces=FLAGS.all_faces)
            except NoFaceError:
                failures.append(f"{name}#{frame}")
                results = []
            if writer is None:
                path = os.path.join(FLAGS.output_dir, f"{name}_annotated.mp4")
                writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (rgb.shape[1], rgb.shape[0]))
            writer.write(cv2.cvtColor(annotate(rgb, results), cv2.COLOR_RGB2BGR))
            rows.extend(_rows(name, frame, results))
            frame += 1
            progress.update(1)
    capture.release()
    if writer is not None:
        writer.release()
    if frame == 0:
        raise UsageError(f"{source}: no frame could be read from the video.")
    return rows


def _identify():
    from mtarcface_tf.inference.detect import read_image_rgb
    from mtarcface_tf.inference.recognizer import list_files
    if not FLAGS.gallery:
        raise UsageError("identify needs --gallery=FILE.npz (create it with the enroll command).")
    source = FLAGS.camera if FLAGS.camera is not None else FLAGS.input
    if source is None:
        raise UsageError("identify needs --input=IMAGE|FOLDER|VIDEO or --camera=INDEX.")
    if isinstance(source, str) and not os.path.exists(source):
        raise UsageError(f"{source}: no such file or folder; check --input.")
    # Cheap checks of the input come before loading the model, so that a bad path fails at once.
    video = isinstance(source, int) or source.lower().endswith(VIDEO_EXTENSIONS)
    capture = _open_video(source) if video else None
    if not video and not os.path.isdir(source):
        read_image_rgb(source)
    recognizer = _recognizer(FLAGS.gallery)
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    failures = []
    if video:
        rows = _identify_video(recognizer, capture, source, failures)
        total = len({(row["source"], row["frame"]) for row in rows}) + len(failures)
    else:
        folder = os.path.isdir(source)
        paths = list_files(source) if folder else [source]
        rows, total = _identify_images(recognizer, paths, failures, skip_errors=folder), len(paths)
    with open(os.path.join(FLAGS.output_dir, "results.csv"), "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    with open(os.path.join(FLAGS.output_dir, "results.json"), "w", encoding="utf-8") as handle:
        json.dump(rows, handle, indent=1)
    faces = [row for row in rows if not row["error"]]
    print(f"{total} inputs, {len(failures)} without a usable face or unreadable, {len(faces)} faces "
          f"({sum(row['identity'] != 'unknown' for row in faces)} recognized); results in {FLAGS.output_dir}")
    print(json.dumps({"inputs": total, "failed": len(failures), "faces": len(faces)}))
    return 1 if total and len(failures) == total else 0


def _verify(paths):
    if len(paths) != 2:
        raise UsageError("verify needs exactly two images: verify --model=EXPORT IMAGE_A IMAGE_B.")
    result = _recognizer(None).verify(paths[0], paths[1], aligned=FLAGS.aligned)
    masks = [result[key]["status"] if result[key] else "unknown" for key in ("mask_a", "mask_b")]
    print(f"{'same person' if result['same'] else 'different people'}: cosine similarity {result['similarity']:.4f} "
          f"(threshold {result['threshold']:.4f}); masks: {masks[0]} / {masks[1]}")
    print(json.dumps(result))
    return 0


def main(argv):
    from mtarcface_tf.inference.detect import DetectorUnavailableError, InvalidImageError
    from mtarcface_tf.inference.gallery import GalleryError
    from mtarcface_tf.inference.recognizer import ModelLoadError, NoFaceError
    logging.set_verbosity(logging.ERROR)
    commands = {"enroll": _enroll, "identify": _identify, "verify": lambda: _verify(argv[2:])}
    if len(argv) < 2 or argv[1] not in commands:
        print(f"error: give a command first: {' | '.join(commands)} (see --help).", file=sys.stderr)
        return 1
    try:
        return commands[argv[1]]()
    except (UsageError, ModelLoadError, GalleryError, NoFaceError, InvalidImageError,
            DetectorUnavailableError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    app.run(main)
