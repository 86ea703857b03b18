"""Benchmark: MTCNN against RetinaFace — time per image, faces found, and how well their landmarks agree.

Run:
  python bench/detect.py [--images=DIR] [--detectors=mtcnn,retinaface] [--repeats=3] [--device=CPU:0]

Without --images it uses scikit-image's astronaut and synthetic variants of it (scaled, rotated ±15°, mirrored,
grayscale, and a crop with a drawn mask over the lower face). Timings are medians over --repeats runs after one
warm-up pass over every image. Agreement: on images where both detectors find the largest face at the same place
(box IoU >= 0.5), the mean distance between their five landmarks divided by the first detector's inter-ocular
distance. Prints a line per image and detector, then ONE JSON line, saved as docs/results/detect.json.
"""
import os
import statistics
import time

from mtarcface_tf.quiet import quiet_tensorflow

quiet_tensorflow()  # first: TensorFlow's log lines off (--verbosity=0 or MTARCFACE_TF_LOGS=1 bring them back)

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from mtarcface_tf.faces import detect  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("images", None, "Folder of images to use instead of the built-in astronaut variants.")
flags.DEFINE_list("detectors", ["mtcnn", "retinaface"], "Detectors to compare (the first is the agreement reference).")
flags.DEFINE_integer("repeats", 3, "Timed runs per image (after one warm-up pass).")
flags.DEFINE_string("device", "CPU:0", "TensorFlow device for both detectors, e.g. CPU:0 or GPU:0.")
flags.DEFINE_integer("max_side", 640, "RetinaFace resizes the longer image side down to this.")
flags.DEFINE_float("same_face_iou", 0.5, "Largest faces of two detectors are the same face at this box IoU or more.")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
# Surgical-mask blue, and the astronaut's lower face (nose bridge to chin) in her 512×512 photo's pixels.
MASK_COLOUR = (160, 200, 230)
ASTRONAUT_MASK_POLYGON = np.array([[184, 118], [266, 118], [262, 160], [238, 178], [210, 178], [188, 160]], np.int32)


def rotated(image, degrees):
    """Returns ``image`` rotated by ``degrees`` (counter-clockwise) about its centre, same size."""
    height, width = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)
    return cv2.warpAffine(image, matrix, (width, height), borderMode=cv2.BORDER_REFLECT)


def astronaut_variants():
    """Returns {name: uint8 image} — the astronaut and synthetic variants of it."""
    from skimage import data  # pylint: disable=import-outside-toplevel  (a dev dependency, only for defaults)

    image = data.astronaut()
    masked = image.copy()
    cv2.fillPoly(masked, [ASTRONAUT_MASK_POLYGON], MASK_COLOUR)
    return {
        "astronaut": image,
        "scaled_0.5": cv2.resize(image, (256, 256), interpolation=cv2.INTER_AREA),
        "scaled_2.0": cv2.resize(image, (1024, 1024), interpolation=cv2.INTER_LINEAR),
        "rotated_+15": rotated(image, 15),
        "rotated_-15": rotated(image, -15),
        "mirrored": np.ascontiguousarray(image[:, ::-1]),
        "grayscale": cv2.cvtColor(image, cv2.COLOR_RGB2GRAY),
        "masked_crop": masked[20:260, 110:340],
    }


def folder_images(folder):
    """Returns {file name: RGB image} for the readable images in ``folder``; logs and counts the others."""
    images, skipped = {}, 0
    for name in sorted(os.listdir(folder)):
        if not name.lower().endswith(IMAGE_EXTENSIONS):
            continue
        try:
            images[name] = detect.read_image_rgb(os.path.join(folder, name))
        except detect.ImageReadError as error:
            logging.warning("skipped: %s", error)
            skipped += 1
    if skipped:
        logging.warning("skipped %d unreadable images in %s", skipped, folder)
    return images


def box_iou(first, second):
    """IoU of two x1, y1, x2, y2 boxes (float)."""
    width = min(first[2], second[2]) - max(first[0], second[0])
    height = min(first[3], second[3]) - max(first[1], second[1])
    intersection = max(width, 0.0) * max(height, 0.0)
    union = (first[2] - first[0]) * (first[3] - first[1]) + (second[2] - second[0]) * (second[3] - second[1])
    return float(intersection / (union - intersection)) if union > intersection else 0.0


def landmark_error(reference, other):
    """Mean distance of the five landmarks of ``other`` from ``reference``'s, over ``reference``'s eye distance."""
    inter_ocular = np.linalg.norm(reference.landmarks[1] - reference.landmarks[0])
    return float(np.linalg.norm(other.landmarks - reference.landmarks, axis=1).mean() / inter_ocular)


def time_detector(detector, images, repeats):
    """Returns ({name: median seconds}, {name: list[Face]}) after one warm-up pass over every image."""
    faces = {name: detector.detect(image) for name, image in images.items()}
    seconds = {}
    for name, image in images.items():
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            detector.detect(image)
            runs.append(time.perf_counter() - start)
        seconds[name] = statistics.median(runs)
    return seconds, faces


def build(name):
    if name == "mtcnn":
        return detect.make_detector(name, device=FLAGS.device)
    if name == "retinaface":
        return detect.make_detector(name, max_side=FLAGS.max_side)
    return detect.make_detector(name)


def main(argv):
    del argv
    try:
        images = folder_images(FLAGS.images) if FLAGS.images else astronaut_variants()
        detectors = {name: build(name) for name in FLAGS.detectors}
    except (OSError, ValueError, detect.DetectorUnavailableError) as error:
        print(f"error: {error}")
        raise SystemExit(1) from None
    if not images:
        print(f"error: no readable images in {FLAGS.images}; pass a folder with JPEG/PNG files.")
        raise SystemExit(1)

    summary, faces = {}, {}
    for name, detector in detectors.items():
        start = time.perf_counter()
        detector.detect(next(iter(images.values())))
        first_call_s = time.perf_counter() - start
        seconds, faces[name] = time_detector(detector, images, FLAGS.repeats)
        for image_name, image in images.items():
            found = faces[name][image_name]
            top = f"score {found[0].score:.3f}" if found else "no face"
            print(f"{name:>10}  {image_name:<14} {image.shape[1]:>5}x{image.shape[0]:<5} "
                  f"{1000 * seconds[image_name]:8.1f} ms  {len(found)} face(s), {top}")
        summary[name] = dict(
            first_call_s=round(first_call_s, 2),
            median_ms_per_image=round(1000 * statistics.median(seconds.values()), 1),
            mean_ms_per_image=round(1000 * statistics.mean(seconds.values()), 1),
            faces_found=sum(len(found) for found in faces[name].values()),
            images_with_face=sum(bool(found) for found in faces[name].values()),
        )

    agreement = {}
    reference_name = FLAGS.detectors[0]
    for other_name in FLAGS.detectors[1:]:
        errors = {}
        for image_name in images:
            reference = detect.largest_face(faces[reference_name][image_name])
            other = detect.largest_face(faces[other_name][image_name])
            if reference and other and box_iou(reference.box, other.box) >= FLAGS.same_face_iou:
                errors[image_name] = round(landmark_error(reference, other), 4)
        print(f"landmarks {other_name} vs {reference_name} (mean distance / inter-ocular): {errors}")
        agreement[f"{other_name}_vs_{reference_name}"] = dict(
            faces_compared=len(errors),
            mean=round(statistics.mean(errors.values()), 4) if errors else None,
            max=max(errors.values()) if errors else None,
            per_image=errors,
        )

    figures = dict(benchmark="detect", images=len(images), device=FLAGS.device, repeats=FLAGS.repeats,
                   detectors=summary, landmark_agreement=agreement)
    from mtarcface_tf.results import report_result
    report_result('detect', figures)


if __name__ == "__main__":
    app.run(main)
