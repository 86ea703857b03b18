"""The reference's own kind of checkpoint, end to end: written by the reference's network in tf_keras (Keras 2,
``tests/support/tfkeras_reference.py``, a re-creation independent of mtarcface_tf) with ``save_weights`` of a
``train_model``-shaped object, for both of its networks (resnet.py: plain BN; resnet_batchRenorm.py: batch renorm),
plus a renorm checkpoint in TF <= 1.14's form written with tf.train.Checkpoint. Each must import without
``allow_partial`` and give, on RGB faces, the embeddings the reference gives on the same faces as BGR (its
evaluation.py); the renorm state must continue training as the reference's; ``tools/evaluate.py`` must give the
reference's verification accuracy on a .bin, and ``tools/export.py``'s SavedModel the reference's embeddings.
Small networks (units 1-2-1-1, width 1/8, 32x32, 16-d) keep it fast; one test builds the full-size LResNet-50.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from mtarcface_tf.configs import finetune_mtarcface
from mtarcface_tf.data.bin_pairs import save_bin
from mtarcface_tf.data.synthetic import render_faces
from mtarcface_tf.model import build_lresnet, build_lresnet50
from mtarcface_tf.train.reference_import import (OLDER_FORM, ReferenceImportError, expected_layout,
                                                 import_reference, load_reference_weights)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNITS, WIDTH, SIZE, EMBEDDING, CLASSES = (1, 2, 1, 1), 0.125, 32, 16, 5
OLDER_WEIGHTS = {"renorm_mean": 0.9, "renorm_stddev": 0.8}   # different, so that swapping them shows
NETWORKS = {"plain": False, "renorm": True}
TOOL_ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
MAX_EMBEDDING_DIFF = 1e-4


def _faces():
    """Uint8 RGB SynthFaces [24, 32, 32, 3] (8 identities x 3), and 48 verification pairs of them (24 same)."""
    faces, labels = render_faces(8, 3, image_size=SIZE, seed=7)
    same = [(3 * i + a, 3 * i + b) for i in range(8) for a, b in ((0, 1), (0, 2), (1, 2))]
    rng = np.random.default_rng(0)
    different = [(int(a), int((a + 3 * rng.integers(1, 8)) % 24)) for a in rng.integers(0, 24, 24)]
    pairs = np.array(same + different)
    issame = labels[pairs[:, 0]] == labels[pairs[:, 1]]
    return faces, faces[pairs.ravel()], issame


def _config():
    config = finetune_mtarcface.get_config()
    config.model.units, config.model.width = UNITS, WIDTH
    config.model.input_size, config.model.embedding_size = SIZE, EMBEDDING
    return config


def _overrides():
    return [f"--config.model.units={UNITS}", f"--config.model.width={WIDTH}", f"--config.model.input_size={SIZE}",
            f"--config.model.embedding_size={EMBEDDING}"]


def _network_task(name, renorm, folder, faces_path, seed):
    task = {"task": "checkpoint", "name": name, "renorm": renorm, "units": list(UNITS), "width": WIDTH,
            "size": SIZE, "embedding": EMBEDDING, "classes": CLASSES, "seed": seed, "renorm_batches": 3,
            "faces": faces_path, "prefix": os.path.join(folder, name, "ckpt")}
    if renorm:
        task.update(older_prefix=os.path.join(folder, "older", "ckpt"), older_weights=OLDER_WEIGHTS)
    return task


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Runs the tf_keras reference once: checkpoints of both networks, their embeddings and .bin accuracies, and
    the full-size layout."""
    pytest.importorskip("tf_keras", reason="tf-keras (the [dev] extra) writes the reference's checkpoints")
    folder = str(tmp_path_factory.mktemp("reference"))
    faces, pairs, issame = _faces()
    faces_path, bin_path = os.path.join(folder, "faces.npy"), os.path.join(folder, "pairs.bin")
    np.save(faces_path, faces)
    save_bin(bin_path, pairs, issame)
    tasks = [_network_task(name, renorm, folder, faces_path, seed) for seed, (name, renorm)
             in enumerate(NETWORKS.items())]
    tasks.append({**tasks[1], "task": "bin_accuracy", "name": "renorm_bin", "bin": bin_path})
    tasks.append({"task": "layout", "name": "layout", "renorm": True})
    job = {"output": os.path.join(folder, "reference.npz"), "tasks": tasks}
    with open(os.path.join(folder, "job.json"), "w", encoding="utf-8") as f:
        json.dump(job, f)
    done = subprocess.run([sys.executable, os.path.join(REPO, "tests", "support", "tfkeras_reference.py"),
                           os.path.join(folder, "job.json")], capture_output=True, text=True, timeout=600,
                          env=TOOL_ENV)
    assert done.returncode == 0, done.stderr[-3000:]
    with np.load(job["output"]) as arrays:
        out = {key: arrays[key] for key in arrays.files}
    return {"folder": folder, "faces": faces, "bin": bin_path, "arrays": out,
            "prefix": {task["name"]: task["prefix"] for task in tasks[:2]},
            "older": os.path.join(folder, "older", "ckpt")}


def _normalized(faces):
    return ((faces.astype(np.float32) - 127.5) * 0.0078125).astype(np.float32)


def _import(prefix):
    config = _config()
    model, report = import_reference(prefix, config)
    return model, report, config


@pytest.mark.parametrize("name, norm", [("plain", "batch_norm"), ("renorm", "batch_renorm")])
def test_import_gives_the_reference_embeddings_on_rgb(reference, name, norm):
    model, report, config = _import(reference["prefix"][name])
    assert config.model.norm == norm and not report.problems
    assert "BGR" in config.reference_import.input_channels
    got = model(_normalized(reference["faces"]), training=False)["embedding"].numpy()
    want = reference["arrays"][f"{name}/embedding"]
    assert np.abs(got - want).max() <= MAX_EMBEDDING_DIFF
    np.testing.assert_array_equal(model.arcface.kernel.numpy(), reference["arrays"][f"{name}/arcface"])
    # Fed the BGR image instead, our network no longer matches the reference: the conversion is what makes it.
    swapped = model(_normalized(reference["faces"][..., ::-1]), training=False)["embedding"].numpy()
    assert np.abs(swapped - want).max() > 100 * MAX_EMBEDDING_DIFF


def _bn_states(model, prefix, arrays):
    """Pairs (ours, reference's) of every BN variable the reference recorded under ``prefix/LAYER/ATTR``."""
    pairs = []
    for layer in model.backbone.layers:
        for variable in layer.weights:
            key = f"{prefix}/{layer.name}/{variable.name}"
            if key in arrays:
                pairs.append((key, variable.numpy(), arrays[key]))
    return pairs


def test_renorm_state_continues_training_like_the_reference(reference):
    model, _, _ = _import(reference["prefix"]["renorm"])
    arrays = reference["arrays"]
    imported = _bn_states(model, "renorm/state", arrays)
    assert {key.rsplit("/", 1)[1] for key, _, _ in imported} >= {"moving_stddev", "renorm_mean", "renorm_stddev"}
    for key, ours, theirs in imported:
        np.testing.assert_array_equal(ours, theirs, err_msg=key)
    model(_normalized(reference["faces"]), training=True)      # one training-mode pass, as the reference's
    after = [p for p in _bn_states(model, "renorm/after_step", arrays) if "/fc1/" not in p[0]]  # fc1: after dropout
    assert len(after) == len([key for key, _, _ in imported if "/fc1/" not in key])
    for key, ours, theirs in after:
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5, err_msg=key)


def test_older_tf_renorm_form_imports_debiased(reference):
    model, report, config = _import(reference["older"])
    assert report.renorm_form == OLDER_FORM and config.model.norm == "batch_renorm" and not report.problems
    assert "renorm_*_weight" in config.reference_import.network
    got = model(_normalized(reference["faces"]), training=False)["embedding"].numpy()
    assert np.abs(got - reference["arrays"]["renorm/embedding"]).max() <= MAX_EMBEDDING_DIFF
    for key, ours, theirs in _bn_states(model, "renorm/state", reference["arrays"]):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6, err_msg=key)


def test_a_renorm_checkpoint_into_a_plain_network_is_refused_with_the_fix(reference):
    model = build_lresnet(units=UNITS, width=WIDTH, input_shape=(SIZE, SIZE, 3), embedding_size=EMBEDDING)
    with pytest.raises(ReferenceImportError) as err:
        load_reference_weights(model, reference["prefix"]["renorm"])
    assert "norm='batch_renorm'" in str(err.value)
    assert any("renorm_mean" in p and "no variable of our network" in p for p in err.value.problems)


@pytest.mark.slow
def test_full_size_renorm_network_is_the_references_layer_for_layer(reference):
    model = build_lresnet50(norm="batch_renorm")
    ours = [f"{path}:{list(shape)}" for _, path, _, shape, _ in expected_layout(model)]
    assert ours == list(reference["arrays"]["layout/rows"])
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    assert trainable == int(reference["arrays"]["layout/trainable"]) == 47_297_472
    assert len(model.losses) == int(reference["arrays"]["layout/losses"]) == 237   # L2 on betas too


def _tool(name, *args):
    done = subprocess.run([sys.executable, os.path.join(REPO, "tools", name), *args], capture_output=True,
                          text=True, env=TOOL_ENV, cwd=REPO, timeout=600)
    assert done.returncode == 0, f"{name}: {done.stderr[-3000:]}"
    return done.stdout


@pytest.mark.slow
@pytest.mark.parametrize("name", list(NETWORKS))
def test_import_evaluate_export_end_to_end(reference, name, tmp_path):
    import tensorflow as tf
    workdir = str(tmp_path / "run")
    _tool("import_reference.py", f"--config={os.path.join(REPO, 'configs', 'finetune_mtarcface.py')}",
          *_overrides(), f"--checkpoint={reference['prefix'][name]}", f"--workdir={workdir}")
    if name == "renorm":   # the published models' network (evaluating is the same code for both)
        _tool("evaluate.py", f"--workdir={workdir}", f"--bins={reference['bin']}", "--no_masked",
              f"--output_dir={tmp_path / 'report'}")
        with open(tmp_path / "report" / "report.json", encoding="utf-8") as f:
            (entry,) = json.load(f)["sets"].values()
        accuracy = entry["variants"]["clean"]["flip"]["accuracy"]
        assert abs(accuracy - float(reference["arrays"]["renorm_bin/accuracy"])) <= 1e-6
    _tool("export.py", f"--workdir={workdir}", f"--export_dir={tmp_path / 'export'}")
    serving = tf.saved_model.load(str(tmp_path / "export" / "1")).signatures["serving_default"]
    got = serving(images=tf.constant(reference["faces"]))["embedding"].numpy()
    want = reference["arrays"][f"{name}/embedding"]
    cosine = np.sum(got * want, 1) / np.linalg.norm(want, axis=1)
    assert cosine.min() >= 0.999
