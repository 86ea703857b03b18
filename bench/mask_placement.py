"""Benchmark: where masks land on SynthFaces in large poses, template placement vs landmark placement.

  python bench/mask_placement.py [--faces=1000] [--image_size=112] [--quick]

Renders SynthFaces with rotation +-30 deg, scale +-15%, shift +-8 px and yaw +-30 deg (both ways), paints one mask
per face (MaskAugmenter's random types, jitter and pose) placed from the template and from the face's own
landmarks, and counts the masks that cover the nose tip and both mouth corners (alpha >= 0.5 there) and leave both
eye centres untouched (alpha = 0), at the generator's exact landmarks.
Prints human-readable lines, then ONE JSON line (saved as docs/results/mask_placement.json unless --quick).
"""

from mtarcface_tf.quiet import quiet_tensorflow

quiet_tensorflow()  # first: TensorFlow's log lines off (--verbosity=0 or MTARCFACE_TF_LOGS=1 bring them back)

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("faces", 1000, "Faces rendered (one identity each).")
flags.DEFINE_integer("image_size", 112, "Side of the faces.")
flags.DEFINE_integer("seed", 0, "Seed of faces and masks.")
flags.DEFINE_bool("quick", False, "200 faces, nothing saved.")

LARGE_POSE = dict(rotation=30.0, scale=0.15, shift=8.0, yaw=30.0)
BATCH = 100


def placement_rates(faces, landmarks, seed):
    """Returns {placement: dict(all, nose, mouth_corners, eyes_untouched)} fractions over the faces."""
    import tensorflow as tf
    from mtarcface_tf.data import masks
    rates = {}
    for placement in ("template", "landmarks"):
        checks = []
        for start in range(0, len(faces), BATCH):
            images = tf.constant(faces[start:start + BATCH])
            marks = landmarks[start:start + BATCH]
            draws = tf.random.stateless_uniform([len(marks), 25], [seed, start])
            alpha = masks.mask_alpha(images, draws, tf.constant(marks) if placement == "landmarks" else None).numpy()
            checks.append(masks.placement_checks(alpha, marks))
        checks = np.concatenate(checks)
        rates[placement] = dict(all=float(checks.all(axis=1).mean()),
                                **{name: float(checks[:, i].mean()) for i, name in enumerate(masks.PLACEMENT_CHECKS)})
    return rates


def main(argv):
    del argv
    from mtarcface_tf.data import synthetic
    from mtarcface_tf.results import report_result
    count = 200 if FLAGS.quick else FLAGS.faces
    faces, _, landmarks = synthetic.render_faces(count, 1, image_size=FLAGS.image_size, seed=FLAGS.seed,
                                                 pose=LARGE_POSE, with_landmarks=True)
    rates = placement_rates(faces, landmarks, FLAGS.seed)
    for placement, r in rates.items():
        print(f"{placement:9s}: {r['all']:6.1%} of masks right (nose {r['nose']:.1%}, both mouth corners "
              f"{r['mouth_corners']:.1%}, both eyes untouched {r['eyes_untouched']:.1%})")
    figures = {"faces": count, "image_size": FLAGS.image_size, "pose": LARGE_POSE,
               "template": rates["template"], "landmarks": rates["landmarks"]}
    report_result('mask_placement', figures, save=not FLAGS.quick)


if __name__ == "__main__":
    app.run(main)
