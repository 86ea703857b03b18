"""How closely an imported reference checkpoint reproduces the reference network (figures for README).

  python bench/reference_fidelity.py                 # full-size LResNet-50 at 112x112 (minutes on 2 cores)
  python bench/reference_fidelity.py --small         # the tests' tiny network

The reference network is re-created in tf_keras (Keras 2) by tests/support/tfkeras_reference.py in a subprocess,
randomised, given renorm statistics by a few training-mode passes, and saved with save_weights of a
train_model-shaped object (both networks, plus an older-form renorm checkpoint). Each is imported, evaluated on a
.bin of SynthFaces and exported; the figures compare with what the reference computes on the same faces fed as
BGR (its evaluation.py).
Prints human lines, then one JSON line, saved as docs/results/reference_fidelity.json.
"""
import json
import os
import subprocess
import sys
import tempfile

from mtarcface_tf.quiet import quiet_tensorflow

quiet_tensorflow()  # first: TensorFlow's log lines off (--verbosity=0 or MTARCFACE_TF_LOGS=1 bring them back)

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_bool("small", False, "Tiny network (units 1-2-1-1, width 1/8, 32x32, 16-d) instead of LResNet-50.")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FULL = {"units": [3, 4, 14, 3], "width": 1.0, "size": 112, "embedding": 512}
SMALL = {"units": [1, 2, 1, 1], "width": 0.125, "size": 32, "embedding": 16}
CLASSES, IDENTITIES, PER_IDENTITY = 5, 8, 3


def _faces_and_bin(folder, size):
    from mtarcface_tf.data.bin_pairs import save_bin
    from mtarcface_tf.data.synthetic import render_faces
    faces, labels = render_faces(IDENTITIES, PER_IDENTITY, image_size=size, seed=7)
    count = len(faces)
    same = [(PER_IDENTITY * i + a, PER_IDENTITY * i + b) for i in range(IDENTITIES) for a in range(PER_IDENTITY)
            for b in range(a + 1, PER_IDENTITY)]
    rng = np.random.default_rng(0)
    different = [(int(a), int((a + PER_IDENTITY * rng.integers(1, IDENTITIES)) % count))
                 for a in rng.integers(0, count, len(same))]
    pairs = np.array(same + different)
    np.save(os.path.join(folder, "faces.npy"), faces)
    save_bin(os.path.join(folder, "pairs.bin"), faces[pairs.ravel()], labels[pairs[:, 0]] == labels[pairs[:, 1]])
    return faces


def _run_reference(folder, shape):
    common = {"task": "checkpoint", "classes": CLASSES, "renorm_batches": 3,
              "faces": os.path.join(folder, "faces.npy"), **shape}
    tasks = [{**common, "name": "plain", "renorm": False, "seed": 0, "prefix": os.path.join(folder, "plain", "ckpt")},
             {**common, "name": "renorm", "renorm": True, "seed": 1, "prefix": os.path.join(folder, "renorm", "ckpt"),
              "older_prefix": os.path.join(folder, "older", "ckpt"),
              "older_weights": {"renorm_mean": 0.9, "renorm_stddev": 0.8}}]
    tasks += [{**t, "task": "bin_accuracy", "name": t["name"] + "_bin", "bin": os.path.join(folder, "pairs.bin")}
              for t in tasks[:2]]
    job = {"output": os.path.join(folder, "reference.npz"), "tasks": tasks}
    with open(os.path.join(folder, "job.json"), "w", encoding="utf-8") as f:
        json.dump(job, f)
    subprocess.run([sys.executable, os.path.join(REPO, "tests", "support", "tfkeras_reference.py"),
                    os.path.join(folder, "job.json")], check=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    with np.load(job["output"]) as arrays:
        return {key: arrays[key] for key in arrays.files}


def _measure(name, prefix, reference, faces, shape, folder):
    import tensorflow as tf
    from mtarcface_tf.configs import finetune_mtarcface
    from mtarcface_tf.eval import evaluator
    from mtarcface_tf.export.embedder import make_embed_fn
    from mtarcface_tf.export.saved_model import export_saved_model
    from mtarcface_tf.train.checkpoints import save_initial_checkpoint
    from mtarcface_tf.train.reference_import import import_reference
    config = finetune_mtarcface.get_config()
    config.model.units, config.model.width = tuple(shape["units"]), shape["width"]
    config.model.input_size, config.model.embedding_size = shape["size"], shape["embedding"]
    model, report = import_reference(prefix, config)
    ref_name = "renorm" if name == "older" else name
    want = reference[f"{ref_name}/embedding"]
    normalized = ((faces.astype(np.float32) - 127.5) * 0.0078125).astype(np.float32)
    got = model(normalized, training=False)["embedding"].numpy()
    figures = {"norm": config.model.norm, "renorm_form": report.renorm_form, "problems": len(report.problems),
               "max_abs_embedding_diff": float(np.abs(got - want).max()),
               "embedding_abs_max": float(np.abs(want).max())}
    if name != "older":
        workdir = os.path.join(folder, f"{name}_run")
        save_initial_checkpoint(model, config, workdir)
        scorer = evaluator.VerificationEvaluator([os.path.join(folder, "pairs.bin")], masked=False, flip=True)
        values = dict(scorer.run(make_embed_fn(workdir)))
        accuracy = next(v for k, v in values.items() if k.endswith("clean/accuracy-flip"))
        figures["accuracy_flip"] = float(accuracy)
        figures["reference_accuracy_flip"] = float(reference[f"{name}_bin/accuracy"])
        export_dir = export_saved_model(model, os.path.join(folder, f"{name}_export"))
        serving = tf.saved_model.load(export_dir).signatures["serving_default"]
        served = serving(images=tf.constant(faces))["embedding"].numpy()
        figures["min_cosine_savedmodel_vs_reference"] = float(
            np.min(np.sum(served * want, 1) / np.linalg.norm(want, axis=1)))
    return figures


def main(argv):
    del argv
    from mtarcface_tf.results import report_result
    shape = SMALL if FLAGS.small else FULL
    with tempfile.TemporaryDirectory() as folder:
        faces = _faces_and_bin(folder, shape["size"])
        reference = _run_reference(folder, shape)
        figures = {"network": shape, "faces": len(faces)}
        for name in ("plain", "renorm", "older"):
            prefix = os.path.join(folder, name, "ckpt")
            figures[name] = _measure(name, prefix, reference, faces, shape, folder)
            print(f"{name}: {figures[name]}")
    report_result("reference_fidelity" + ("_small" if FLAGS.small else ""), figures)


if __name__ == "__main__":
    app.run(main)
