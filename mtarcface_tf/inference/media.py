"""The recognition application's commands on media: enroll a folder of people, identify faces in an image, a
folder of images, a video or a camera (annotated copies + ``results.csv`` / ``results.json`` rows), verify a pair.

``run_command`` is what ``tools/recognize.py`` calls; every option is an argument (no flags here). Errors a user
can cause raise ``UsageError`` (or the recognizer's, gallery's and detector's errors), each naming the file and fix.
"""
import csv
import json
import os
import sys

import cv2
import numpy as np
from mtarcface_tf.atomic import atomic_open
from mtarcface_tf.progress import progress_bar

from mtarcface_tf.faces.detect import InvalidImageError, choose_detector, read_image_rgb
from mtarcface_tf.inference.gallery import Gallery
from mtarcface_tf.inference.recognizer import UNKNOWN, FaceRecognizer, NoFaceError, list_files, training_data_warning

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
CSV_FIELDS = ["source", "frame", "face", "identity", "similarity", "svm_identity", "svm_probability", "mask",
              "mask_probability", "box", "note", "error"]
COMMANDS = ("enroll", "identify", "verify", "remove", "rename", "tune", "list", "stats")
BATCH_IMAGES = 32      # images of a folder identified per network call and gallery search
LISTED_NAMES = 10      # names a removal prints; past them, how many more


class UsageError(ValueError):
    """A command that cannot run (missing argument or file); the message names it and the fix."""


def annotate(image_rgb, results):
    """Draws identify results on a copy of an image.

    Args:
      image_rgb: uint8 [H, W, 3] RGB.
      results: list of dicts from ``FaceRecognizer.identify``.

    Returns:
      uint8 [H, W, 3] RGB with a box per face (green = known, red = unknown) and "name score mask" text.
    """
    canvas = np.ascontiguousarray(image_rgb).copy()
    scale = max(canvas.shape[:2]) / 500.0
    for result in results:
        x1, y1, x2, y2 = (int(round(value)) for value in result["box"])
        color = (0, 200, 0) if result["identity"] != UNKNOWN else (220, 0, 0)
        mask = result.get("mask")
        text = f"{result['identity']} {result['similarity']:.2f}" + (
            f" {mask['status']}" if mask else "")
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, max(1, int(2 * scale)))
        cv2.putText(canvas, text, (x1, max(y1 - 4, 12)), cv2.FONT_HERSHEY_SIMPLEX, max(0.35, 0.5 * scale), color,
                    max(1, int(scale)), cv2.LINE_AA)
    return canvas


def result_rows(source, frame, results):
    """Returns one CSV row (dict over ``CSV_FIELDS``) per face of ``FaceRecognizer.identify`` results."""
    return [{"source": source, "frame": frame, "face": index, "identity": result["identity"],
             "similarity": round(result["similarity"], 6),
             "svm_identity": result["svm"]["name"] if result.get("svm") else "",
             "svm_probability": round(result["svm"]["probability"], 6) if result.get("svm") else "",
             "mask": result["mask"]["status"] if result["mask"] else "unknown",
             "mask_probability": result["mask"]["probability"] if result["mask"] else "",
             "box": " ".join(f"{value:.1f}" for value in result["box"]), "note": result["note"], "error": ""}
            for index, result in enumerate(results)]


def error_row(source, frame, error):
    """Returns the CSV row (dict over ``CSV_FIELDS``) of an input that gave no result."""
    return {**{field: "" for field in CSV_FIELDS}, "source": source, "frame": frame, "error": str(error)}


def enroll(recognizer, gallery_path, images_dir, aligned=False, svm=False):
    """Enrolls every sub-folder of ``images_dir`` into the gallery ``gallery_path`` (created or extended; each
    person is committed as enrolled, so an interrupted run keeps everyone enrolled before it).

    Prints the skipped images (stderr), a summary line and a JSON line (stdout). Returns the exit status (0).
    Raises UsageError when no face could be enrolled.
    """
    if svm:
        recognizer.gallery.enable_svm()
    summary = recognizer.enroll_folder(images_dir, aligned=aligned)
    for path, reason in summary["failed"]:
        print(f"skipped: {reason}" if reason.startswith(path) else f"skipped {path}: {reason}", file=sys.stderr)
    if not summary["enrolled"]:
        raise UsageError(f"{images_dir}: no face could be enrolled ({len(summary['failed'])} failures above).")
    directory = recognizer.gallery.save(gallery_path)
    total = len(recognizer.gallery)
    recognizer.gallery.close()
    images = sum(summary["enrolled"].values())
    print(f"enrolled {len(summary['enrolled'])} people from {images} images into {directory} "
          f"({total} people in total); {len(summary['failed'])} images failed")
    print(json.dumps({"enrolled": summary["enrolled"], "failed": len(summary["failed"])}))
    return 0


def identify_images(recognizer, paths, output_dir, failures, skip_errors, top_k=5, aligned=False, all_faces=False):
    """Identifies faces in image files, writing annotated copies to ``output_dir``; returns the CSV rows.

    Images go through the network and the gallery search ``BATCH_IMAGES`` at a time. With ``skip_errors`` an
    unreadable file or one without a face is reported, appended to ``failures`` and skipped (an error row);
    otherwise its error propagates.
    """
    rows = []
    with progress_bar(total=len(paths), desc="identifying", unit="img", disable=len(paths) < 2) as progress:
        for start in range(0, len(paths), BATCH_IMAGES):
            found = []
            for path in paths[start:start + BATCH_IMAGES]:
                try:
                    found.append((path, recognizer.faces(path, aligned, all_faces)))
                except (NoFaceError, InvalidImageError) as error:
                    if not skip_errors:
                        raise
                    print(f"skipped: {error}" if str(error).startswith(path) else f"skipped {path}: {error}",
                          file=sys.stderr)
                    failures.append(path)
                    rows.append(error_row(path, "", error))
            crops = [crop for _, image_crops in found for crop in image_crops]
            if crops:
                embeddings, mask_prob = recognizer.embed(np.stack([crop.crop for crop in crops]))
                results = recognizer.identify_embeddings(embeddings, mask_prob, top_k, crops)
                for path, image_crops in found:
                    image_results, results = results[:len(image_crops)], results[len(image_crops):]
                    canvas = annotate(read_image_rgb(path), image_results)
                    cv2.imwrite(os.path.join(output_dir, os.path.basename(path)),
                                cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
                    rows.extend(result_rows(path, "", image_results))
            progress.update(len(paths[start:start + BATCH_IMAGES]))
    return rows


def open_video(source):
    """Returns an opened ``cv2.VideoCapture`` of a file path or camera index; raises UsageError when it fails."""
    capture = cv2.VideoCapture(source)
    if not capture.isOpened():
        if isinstance(source, int):
            raise UsageError(f"camera {source}: cannot be opened (no webcam here?); use --input=FILE instead.")
        raise UsageError(f"{source}: cannot be opened as a video; use an MP4/AVI file OpenCV can read.")
    return capture


def identify_video(recognizer, capture, source, output_dir, failures, top_k=5, aligned=False, all_faces=False,
                   max_frames=0):
    """Identifies faces frame by frame, writing ``NAME_annotated.mp4`` to ``output_dir``; returns the CSV rows.

    Frames without a face are appended to ``failures`` as ``NAME#FRAME``; ``max_frames`` > 0 stops early.
    Raises UsageError when no frame can be read.
    """
    name = f"camera{source}" if isinstance(source, int) else os.path.splitext(os.path.basename(source))[0]
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    writer, rows, frame = None, [], 0
    with progress_bar(total=total, desc="frames", unit="frame") as progress:
        while not max_frames or frame < max_frames:
            ok, bgr = capture.read()
            if not ok:
                break
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            try:
                results = recognizer.identify(rgb, top_k, aligned=aligned, all_faces=all_faces)
            except NoFaceError:
                failures.append(f"{name}#{frame}")
                results = []
            if writer is None:
                path = os.path.join(output_dir, f"{name}_annotated.mp4")
                writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (rgb.shape[1], rgb.shape[0]))
            writer.write(cv2.cvtColor(annotate(rgb, results), cv2.COLOR_RGB2BGR))
            rows.extend(result_rows(name, frame, results))
            frame += 1
            progress.update(1)
    capture.release()
    if writer is not None:
        writer.release()
    if frame == 0:
        raise UsageError(f"{source}: no frame could be read from the video.")
    return rows


def write_rows(rows, output_dir):
    """Writes ``results.csv`` and ``results.json`` of the rows into ``output_dir``, each under a temporary name
    renamed when complete."""
    csv_path, json_path = (os.path.join(output_dir, name) for name in ("results.csv", "results.json"))
    with atomic_open(csv_path, newline="") as handle:
        writer = csv.DictWriter(handle, CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    with atomic_open(json_path) as handle:
        json.dump(rows, handle, indent=1)


def identify(make_recognizer, source, output_dir, top_k=5, aligned=False, all_faces=False, max_frames=0):
    """Identifies the faces of an image, a folder of images, a video file or a camera (int index).

    ``make_recognizer()`` is called after the cheap checks of ``source`` and ``output_dir``, so a bad path fails before
    the model loads.
    Prints a summary line and a JSON line; returns the exit status (1 when every input failed, else 0).
    """
    if isinstance(source, str) and not os.path.exists(source):
        raise UsageError(f"{source}: no such file or folder; check --input.")
    video = isinstance(source, int) or source.lower().endswith(VIDEO_EXTENSIONS)
    capture = open_video(source) if video else None
    if not video and not os.path.isdir(source):
        read_image_rgb(source)
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise UsageError(f"{output_dir}: is a file, not a folder; choose another --output_dir.")
    recognizer = make_recognizer()
    os.makedirs(output_dir, exist_ok=True)
    failures = []
    options = dict(top_k=top_k, aligned=aligned, all_faces=all_faces)
    if video:
        rows = identify_video(recognizer, capture, source, output_dir, failures, max_frames=max_frames, **options)
        total = len({(row["source"], row["frame"]) for row in rows}) + len(failures)
    else:
        folder = os.path.isdir(source)
        paths = list_files(source) if folder else [source]
        rows = identify_images(recognizer, paths, output_dir, failures, skip_errors=folder, **options)
        total = len(paths)
    write_rows(rows, output_dir)
    faces = [row for row in rows if not row["error"]]
    print(f"{total} inputs, {len(failures)} without a usable face or unreadable, {len(faces)} faces "
          f"({sum(row['identity'] != UNKNOWN for row in faces)} recognized); results in {output_dir}")
    print(json.dumps({"inputs": total, "failed": len(failures), "faces": len(faces)}))
    return 1 if total and len(failures) == total else 0


def verify(recognizer, path_a, path_b, aligned=False):
    """Prints whether two images show the same person (a line and a JSON line); returns the exit status (0)."""
    result = recognizer.verify(path_a, path_b, aligned=aligned)
    masks = [result[key]["status"] if result[key] else "unknown" for key in ("mask_a", "mask_b")]
    print(f"{'same person' if result['same'] else 'different people'}: cosine similarity {result['similarity']:.4f} "
          f"(threshold {result['threshold']:.4f}); masks: {masks[0]} / {masks[1]}")
    print(json.dumps(result))
    return 0


def manage(command, gallery, names, names_file=None, settings=None):
    """The gallery commands without a model: remove NAME... (and the lines of ``names_file``, one name each), rename
    OLD NEW, tune (the ANN ``settings``: {"pq_bytes": int or None, "min_candidates": int or None}), list, stats
    (prints; returns 0)."""
    writable = command in ("remove", "rename", "tune")
    settings = {key: value for key, value in (settings or {}).items() if value is not None}
    if command == "tune" and not settings:
        raise UsageError("tune needs --pq_bytes and/or --min_candidates: tune --gallery=DIR --pq_bytes=64 "
                         "--min_candidates=2000.")
    if command == "remove":
        names = list(names) + read_names(names_file)
        if not names:
            raise UsageError("remove needs the names to remove: remove --gallery=DIR NAME [NAME ...] or "
                             "--names_file=FILE (one name per line).")
    if command == "rename" and len(names) != 2:
        raise UsageError("rename needs two names: rename --gallery=DIR OLD NEW.")
    with Gallery.open(gallery, writable=writable) if writable else Gallery.open(gallery) as opened:
        if command == "remove":
            opened.remove(*names)
            opened.save(gallery)
            more = len(names) - LISTED_NAMES
            print(f"removed {', '.join(names[:LISTED_NAMES])}{f' and {more:,} more' if more > 0 else ''}; "
                  f"{len(opened)} people left in {opened.path}")
        elif command == "rename":
            opened.rename(*names)
            opened.save(gallery)
            print(f"renamed {names[0]} to {names[1]} in {opened.path}")
        elif command == "tune":
            opened.retune(**settings)
            opened.save(gallery)
            stats = opened.stats()
            print(f"{opened.path}: ANN code bytes {stats['index_pq_bytes'] or 'default'}, at least "
                  f"{stats['index_min_candidates']:,} candidates per query ({stats['index_search']} search now)")
        elif command == "list":
            for person_id, name, count in opened.store.people():
                print(f"{person_id}\t{name}\t{count} images")
        else:
            print(json.dumps(opened.stats()))
    return 0


def read_names(path):
    """The names (list[str]) of a UTF-8 text file, one per line, blank lines skipped; [] for ``path`` None.
    Raises UsageError naming the file when it cannot be read."""
    if path is None:
        return []
    try:
        with open(path, encoding="utf-8") as lines:
            return [line.strip() for line in lines if line.strip()]
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"--names_file={path}: cannot be read ({getattr(error, 'strerror', None) or error}); "
                         "give a UTF-8 text file with one name per line.") from error


def run_command(command, paths, model, gallery=None, images=None, source=None, output_dir="recognize_out",
                detector=None, aligned=False, all_faces=False, threshold=None, top_k=5, svm=False, max_frames=0,
                force=False, names_file=None, settings=None):
    """Runs one command of ``tools/recognize.py``; returns its exit status.

    Args:
      command: "enroll" | "identify" | "verify" | "remove" | "rename" | "tune" | "list" | "stats". paths: verify's two
        image paths, remove's names, rename's old and new name.
      model: model path (see ``FaceRecognizer``); not needed by remove / rename / list / stats.
      gallery: the gallery folder (an ``.npz`` of the earlier format opens too and is converted on its first
        write). images: enroll's folder.
      source: identify's image/folder/video path or camera index (int).
      detector: "mtcnn", "retinaface" or None (RetinaFace, or MTCNN with a printed note where it is missing).
      svm: enroll: the gallery keeps an SVM; identify: classify with it too (``svm_identity`` column).
      force: use a gallery enrolled with another model.
      names_file: remove: a text file with one name per line, removed with ``paths`` in the same transaction.
      settings: tune: {"pq_bytes": int or None, "min_candidates": int or None} (None keeps a setting).
      The others: as the tool's flags of the same names.

    Prints one warning line when the model's metadata says it was trained on SynthFaces only.

    Raises:
      UsageError for a missing argument or an unusable input; a bad gallery or image fails before the model loads.
    """
    if command in ("remove", "rename", "tune", "list", "stats"):
        if not gallery:
            raise UsageError(f"{command} needs --gallery=DIR.")
        return manage(command, gallery, paths, names_file, settings)
    if not model:
        raise UsageError(f"{command or 'this command'} needs --model=EXPORT (a SavedModel directory).")

    def make_recognizer(gallery_arg):
        name = detector
        if not aligned:
            name, note = choose_detector(detector)
            if note:
                print(note, file=sys.stderr)
        recognizer = FaceRecognizer(model, gallery=gallery_arg, threshold=threshold, detector=name)
        warning = training_data_warning(recognizer.metadata, model)
        if warning:
            print(warning, file=sys.stderr)
        if gallery_arg is not None:
            gallery_arg.check_model(recognizer.fingerprint, force)
        return recognizer

    def identify_recognizer():
        existing = Gallery.open(gallery)  # before the model: a missing or corrupt gallery fails at once
        if svm:
            existing.enable_svm()
        return make_recognizer(existing)

    if command == "enroll":
        if not gallery or not images:
            raise UsageError("enroll needs --gallery=DIR and --images=DIR (one sub-folder per person).")
        if os.path.isfile(gallery) and not gallery.endswith(".npz"):
            raise UsageError(f"{gallery}: is a file; --gallery takes a gallery folder such as people/.")
        if not os.path.isdir(images):
            raise UsageError(f"{images}: no such folder; --images needs one sub-folder of photos per person.")
        return enroll(make_recognizer(Gallery.open(gallery, writable=True)), gallery, images, aligned, svm)
    if command == "identify":
        if not gallery:
            raise UsageError("identify needs --gallery=DIR (create it with the enroll command).")
        if source is None:
            raise UsageError("identify needs --input=IMAGE|FOLDER|VIDEO or --camera=INDEX.")
        return identify(identify_recognizer, source, output_dir, top_k, aligned, all_faces, max_frames)
    if command == "verify":
        if len(paths) != 2:
            raise UsageError("verify needs exactly two images: verify --model=EXPORT IMAGE_A IMAGE_B.")
        for path in paths:
            read_image_rgb(path)  # before the model: an unreadable image fails at once
        return verify(make_recognizer(None), paths[0], paths[1], aligned)
    raise UsageError(f"give a command first: {' | '.join(COMMANDS)} (see --help).")
