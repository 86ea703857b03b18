"""Benchmark: MTCNN against RetinaFace on real photos, as they are and with masks painted on the faces.

Run:
  python bench/detect_realfaces.py [--images=../shared/data/realfaces-dev] [--detectors=mtcnn,retinaface]
      [--paint_with=mtcnn] [--preview=/tmp/painted.png]

Every photo under --images (searched recursively) is read once. The --paint_with detector finds the reference faces
of each photo; each is aligned onto the ArcFace template (at about its size in the photo), painted with
``MaskAugmenter`` (every face masked; instance seeds --seed, --seed + 1, ... in turn) and warped back into the
photo with the inverse similarity transform, only where the mask changed pixels. Each detector then runs on the
photos as they are and on the painted photos. A reference face counts as found when a detection's eye midpoint
lies within --match_eyes inter-ocular distances of the reference's. Times are per whole photo (full resolution,
as tools/recognize.py passes it), one pass after a warm-up call, the detectors taking turns photo by photo;
medians and means over the photos. Prints a line per detector and condition, then ONE JSON line, saved as
docs/results/--result.json.
"""
import os
import statistics
import time

from mtarcface_tf.quiet import quiet_tensorflow

quiet_tensorflow()  # first: TensorFlow's log lines off (--verbosity=0 or MTARCFACE_TF_LOGS=1 bring them back)

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from mtarcface_tf.data.masks import MaskAugmenter  # noqa: E402
from mtarcface_tf.faces import align, detect  # noqa: E402
from mtarcface_tf.results import report_result  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = flags.FLAGS
flags.DEFINE_string("images", os.path.join(REPO, "..", "shared", "data", "realfaces-dev"),
                    "Folder of photos (searched recursively).")
flags.DEFINE_list("detectors", ["mtcnn", "retinaface"], "Detectors to compare.")
flags.DEFINE_string("paint_with", "mtcnn", "Detector whose faces are the reference faces that get masks.")
flags.DEFINE_float("match_eyes", 0.5, "A detection matches a reference face when their eye midpoints are closer than "
                   "this many inter-ocular distances.")
flags.DEFINE_integer("max_crop", 448, "Largest side of the aligned crop that masks are painted on.")
flags.DEFINE_integer("seed", 0, "Seed of the painted masks.")
flags.DEFINE_string("preview", None, "Write a PNG grid of the first painted photos here (e.g. /tmp/painted.png).")
flags.DEFINE_integer("preview_count", 12, "Photos in the --preview grid.")
flags.DEFINE_string("result", "detect_realfaces", "Name of the result file (docs/results/NAME.json); empty: none.")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
PREVIEW_TILE = 256


def photos(folder):
    """Returns {relative path: uint8 [H, W, 3] RGB} for the readable photos under ``folder``."""
    found = {}
    for root, _, names in sorted(os.walk(folder)):
        for name in sorted(names):
            if name.lower().endswith(IMAGE_EXTENSIONS):
                path = os.path.join(root, name)
                try:
                    found[os.path.relpath(path, folder)] = detect.read_image_rgb(path)
                except detect.ImageReadError as error:
                    logging.warning("skipped: %s", error)
    return found


def crop_size(landmarks, max_crop):
    """Side (int) of an aligned crop that keeps the face at about its size in the photo, 112..max_crop."""
    template = align.ARCFACE_TEMPLATE
    scale = np.linalg.norm(landmarks[1] - landmarks[0]) / np.linalg.norm(template[1] - template[0])
    return int(np.clip(round(align.TEMPLATE_SIZE * scale), align.TEMPLATE_SIZE, max_crop))


def paint_mask(image, landmarks, seed, max_crop):
    """Paints a mask on one face of a photo.

    Args:
      image: uint8 [H, W, 3] RGB photo. landmarks: float [5, 2] of the face (template order).
      seed: int choosing the mask (a MaskAugmenter instance seed).

    Returns:
      uint8 [H, W, 3]: the photo with the mask painted on the aligned crop warped back where it changed pixels.
    """
    size = crop_size(landmarks, max_crop)
    matrix = align.estimate_similarity(landmarks, align.template_for(size))
    crop = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR)
    painted, _ = MaskAugmenter(probability=1.0, seed=seed)(crop[None])
    painted = painted.numpy()[0]
    changed = np.any(painted != crop, axis=-1).astype(np.float32)
    inverse = cv2.invertAffineTransform(matrix)
    height, width = image.shape[:2]
    back = cv2.warpAffine(painted, inverse, (width, height), flags=cv2.INTER_LINEAR).astype(np.float32)
    alpha = cv2.warpAffine(changed, inverse, (width, height), flags=cv2.INTER_LINEAR)[..., None]
    return np.round(image * (1.0 - alpha) + back * alpha).astype(np.uint8)


def eye_midpoint(face):
    return face.landmarks[:2].mean(axis=0)


def matched(reference, faces, tolerance):
    """True when a face of ``faces`` has its eye midpoint within ``tolerance`` inter-ocular distances of the
    reference's."""
    inter_ocular = np.linalg.norm(reference.landmarks[1] - reference.landmarks[0])
    return any(np.linalg.norm(eye_midpoint(face) - eye_midpoint(reference)) < tolerance * inter_ocular
               for face in faces)


def run_detectors(detectors, images):
    """Runs every detector on every photo, alternating detectors photo by photo so that other load on the machine
    slows them alike. Returns {detector name: ({photo: list[Face]}, {photo: seconds})}."""
    first = next(iter(images.values()))
    for detector in detectors.values():
        detector.detect(first)  # warm-up: builds the network and traces its functions
    runs = {name: ({}, {}) for name in detectors}
    for photo, image in images.items():
        for name, detector in detectors.items():
            start = time.perf_counter()
            runs[name][0][photo] = detector.detect(image)
            runs[name][1][photo] = time.perf_counter() - start
    return runs


def summary(faces, seconds, references, tolerance):
    """Figures of one detector on one condition (dict)."""
    total = sum(len(refs) for refs in references.values())
    missed = [name for name, refs in references.items() for ref in refs if not matched(ref, faces[name], tolerance)]
    hits = total - len(missed)
    return dict(
        photos=len(faces),
        photos_with_a_face=sum(bool(found) for found in faces.values()),
        faces_found=sum(len(found) for found in faces.values()),
        reference_faces=total,
        reference_faces_found=hits,
        reference_found_fraction=round(hits / total, 4) if total else None,
        median_ms_per_photo=round(1000 * statistics.median(seconds.values()), 1),
        mean_ms_per_photo=round(1000 * statistics.mean(seconds.values()), 1),
        reference_faces_missed_in=missed,
    )


def preview_grid(images, path, count):
    """Writes a PNG grid of up to ``count`` photos, each fitted into a PREVIEW_TILE square."""
    tiles = []
    for image in list(images.values())[:count]:
        scale = PREVIEW_TILE / max(image.shape[:2])
        small = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)),
                           interpolation=cv2.INTER_AREA)
        tile = np.zeros((PREVIEW_TILE, PREVIEW_TILE, 3), np.uint8)
        tile[:small.shape[0], :small.shape[1]] = small
        tiles.append(tile)
    columns = 4
    tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % columns)
    rows = [np.concatenate(tiles[i:i + columns], axis=1) for i in range(0, len(tiles), columns)]
    cv2.imwrite(path, cv2.cvtColor(np.concatenate(rows, axis=0), cv2.COLOR_RGB2BGR))


def main(argv):
    del argv
    try:
        images = photos(FLAGS.images) if os.path.isdir(FLAGS.images) else {}
        detectors = {name: detect.make_detector(name) for name in dict.fromkeys(FLAGS.detectors + [FLAGS.paint_with])}
    except (ValueError, detect.DetectorUnavailableError) as error:
        print(f"error: {error}")
        raise SystemExit(1) from None
    if not images:
        print(f"error: no readable photos under {FLAGS.images}; pass --images=FOLDER with JPEG/PNG files.")
        raise SystemExit(1)

    runs = {"as_they_are": run_detectors(detectors, images)}
    references = runs["as_they_are"][FLAGS.paint_with][0]
    painted, seed = {}, FLAGS.seed
    for name, image in images.items():
        for face in references[name]:
            image = paint_mask(image, face.landmarks, seed, FLAGS.max_crop)
            seed += 1
        painted[name] = image
    if FLAGS.preview:
        preview_grid(painted, FLAGS.preview, FLAGS.preview_count)
        print(f"painted photos: {FLAGS.preview}")
    runs["masks_painted"] = run_detectors({name: detectors[name] for name in FLAGS.detectors}, painted)

    figures = {name: {} for name in FLAGS.detectors}
    for condition, by_detector in runs.items():
        for detector_name in FLAGS.detectors:
            faces, seconds = by_detector[detector_name]
            figures[detector_name][condition] = row = summary(faces, seconds, references, FLAGS.match_eyes)
            print(f"{detector_name:>10} {condition:<13} reference faces found {row['reference_faces_found']}/"
                  f"{row['reference_faces']}, {row['faces_found']} faces in all, median "
                  f"{row['median_ms_per_photo']} ms per photo (mean {row['mean_ms_per_photo']})")
    record = dict(benchmark="detect_realfaces", photos=len(images), images=os.path.basename(
        os.path.normpath(FLAGS.images)), paint_with=FLAGS.paint_with, match_eyes=FLAGS.match_eyes, detectors=figures)
    report_result(FLAGS.result, record, save=bool(FLAGS.result))


if __name__ == "__main__":
    app.run(main)
