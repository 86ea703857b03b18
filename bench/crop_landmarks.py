"""Benchmark: can a detector find the five landmarks again on 112x112 aligned crops (the landmark pass of
``tools/convert.py --source=tfrecord --add_landmarks``)?

  python bench/crop_landmarks.py [--detectors=retinaface,mtcnn] [--synthetic=60] [--photos=../shared/data/realfaces-dev]

Crops are padded by half their side (edge replicated) and upscaled x2 before detection
(``detect.landmarks_on_aligned_crop``). Two sets: SynthFaces aligned crops with the generator's pose (yaw +-20
deg), compared with the exact landmarks; and aligned crops of real photographs, compared with the landmarks the
same detector found on the whole photo, mapped through the alignment. Reports crops without a face, mean and 90th
percentile landmark error (pixels of the crop) and ms per crop. Prints human lines, then ONE JSON line (saved as
docs/results/crop_landmarks.json).
"""
import os
import time

import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_list("detectors", ["retinaface", "mtcnn"], "Detectors to measure.")
flags.DEFINE_integer("synthetic", 60, "SynthFaces crops.")
flags.DEFINE_string("photos", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data",
                                           "realfaces-dev"), "Folder of real photographs (skipped when absent).")

POSE = dict(rotation=8.0, scale=0.05, shift=3.0, yaw=20.0)
SIZE = 112


def score(detector, crops, truth):
    """Returns dict(crops, no_face, mean_error_px, p90_error_px, ms_per_crop)."""
    from mtarcface_tf.faces.detect import landmarks_on_aligned_crop
    errors, missed, start = [], 0, time.perf_counter()
    for crop, expected in zip(crops, truth):
        found = landmarks_on_aligned_crop(detector, crop)
        if found is None:
            missed += 1
            continue
        errors.append(float(np.linalg.norm(found - expected, axis=1).mean()))
    return dict(crops=len(crops), no_face=missed, mean_error_px=round(float(np.mean(errors)), 2),
                p90_error_px=round(float(np.percentile(errors, 90)), 2),
                ms_per_crop=round(1000 * (time.perf_counter() - start) / len(crops), 1))


def main(argv):
    del argv
    from mtarcface_tf.data import preview, synthetic
    from mtarcface_tf.faces.detect import landmarks_on_aligned_crop, make_detector
    from mtarcface_tf.results import report_result
    faces, _, landmarks = synthetic.render_faces(FLAGS.synthetic, 1, image_size=SIZE, seed=5, pose=POSE,
                                                 with_landmarks=True)
    figures = {"padding": 0.5, "upscale": 2.0, "synthetic_pose": POSE}
    for name in FLAGS.detectors:
        detector = make_detector(name)
        landmarks_on_aligned_crop(detector, faces[0])   # untimed: the first call builds the detector's graphs
        figures[name] = {"synthfaces": score(detector, faces, landmarks)}
        if os.path.isdir(FLAGS.photos):
            crops, truth, skipped = preview.faces_from_photos(FLAGS.photos, 10_000, SIZE, detector)
            figures[name]["real_photos"] = dict(score(detector, crops, truth), photos_without_face=skipped)
        for kind, result in figures[name].items():
            print(f"{name:10s} {kind:11s}: no face on {result['no_face']} of {result['crops']} crops, landmark error "
                  f"mean {result['mean_error_px']} px, p90 {result['p90_error_px']} px, "
                  f"{result['ms_per_crop']} ms/crop")
    report_result('crop_landmarks', figures)


if __name__ == "__main__":
    app.run(main)
