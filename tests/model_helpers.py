"""Shared by the export and recognizer tests: a tiny MTArcFace, a saved training workdir, fresh-process runs.

Not a test module. The tiny network keeps the paper's layer types (LResNet units, BN, PReLU, mask head) at a
size that builds and exports in seconds on 2 CPU cores.
"""
import json
import os
import subprocess
import sys

import cv2
import keras
import numpy as np

from mtarcface_tf.configs import common

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_CLASSES = 7   # not a size used anywhere else in the network, so a [D, 7] variable can only be the centres


def tiny_config(mask_head=True, input_size=32, embedding_size=16):
    """Returns a full config whose model is a one-unit-per-stage LResNet at width 0.125."""
    config = common.base_config()
    config.num_classes = NUM_CLASSES
    config.model.units = (1, 1, 1, 1)
    config.model.width = 0.125
    config.model.input_size = input_size
    config.model.embedding_size = embedding_size
    config.model.mask_head = mask_head
    return config


def build_tiny_model(mask_head=True, input_size=32, embedding_size=16, seed=0):
    """Returns ``(model, config)``: a freshly initialized tiny ``build_mtarcface`` network (deterministic)."""
    from mtarcface_tf.model import build_mtarcface

    keras.utils.set_random_seed(seed)
    config = tiny_config(mask_head, input_size, embedding_size)
    model = build_mtarcface(config.num_classes, config)
    # Non-trivial BN statistics so that inference-mode BN is exercised, not an identity.
    rng = np.random.default_rng(seed)
    for weight in model.backbone.weights:
        if weight.path.endswith("moving_mean"):
            weight.assign(rng.normal(0, 0.1, weight.shape).astype("float32"))
        elif weight.path.endswith("moving_variance"):
            weight.assign(rng.uniform(0.5, 2.0, weight.shape).astype("float32"))
    return model, config


def save_workdir(model, config, workdir, threshold=None):
    """Saves ``model`` as a training workdir ``load_model`` reads (config.json + checkpoints/ckpt-1), plus a
    report.json with ``recommended_threshold`` when given. Returns the workdir (str)."""
    from mtarcface_tf.model.workdir import CHECKPOINT_DIR
    from mtarcface_tf.train.checkpoints import check_and_save_config, make_checkpoint

    check_and_save_config(config, str(workdir))
    make_checkpoint(model).save(os.path.join(str(workdir), CHECKPOINT_DIR, "ckpt"))
    if threshold is not None:
        with open(os.path.join(str(workdir), "report.json"), "w", encoding="utf-8") as handle:
            json.dump({"recommended_threshold": threshold}, handle)
    return str(workdir)


def random_faces(count, size=32, seed=0):
    """Returns uint8 [count, size, size, 3] random images."""
    return np.random.default_rng(seed).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


def start_python(args):
    """Starts ``python ARGS...`` from the repository root in a fresh process (CPU only, quiet TF); returns the
    ``subprocess.Popen`` (text stdout/stderr pipes). Use ``.communicate(timeout=...)`` to wait."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow"}
    return subprocess.Popen([sys.executable, *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(process, timeout=180):
    """Waits for a ``start_python`` process; returns ``subprocess.CompletedProcess``."""
    stdout, stderr = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def run_python(args, timeout=180):
    """Runs ``python ARGS...`` like ``start_python`` and waits; returns ``subprocess.CompletedProcess``."""
    return finish(start_python(args), timeout)


def keras_reference(model, images):
    """The test's own reference of the export's outputs, computed in numpy from the Keras model: dict ``embedding``
    (L2-normalized) and, with a mask head, ``mask_prob`` (softmax of the mask logits).

    Args:
      model: a model from ``build_mtarcface`` or its backbone. images: uint8 [B, S, S, 3] RGB.
    """
    backbone = getattr(model, "backbone", model)
    outputs = backbone((np.asarray(images, np.float32) - 127.5) * 0.0078125, training=False)
    embedding = np.asarray(outputs["embedding"], np.float32)
    result = {"embedding": embedding / np.linalg.norm(embedding, axis=-1, keepdims=True)}
    if "mask_logits" in outputs:
        logits = np.asarray(outputs["mask_logits"], np.float64)
        exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
        result["mask_prob"] = (exp / exp.sum(axis=-1, keepdims=True)).astype(np.float32)
    return result


def one_error_line(result, *names):
    """Asserts a finished tool run failed with exactly one ``error:`` line on stderr, no traceback, naming each of
    ``names``; returns that line."""
    assert result.returncode != 0, result.stdout[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    for name in names:
        assert str(name) in errors[0], errors[0]
    return errors[0]


def write_png(path, image):
    """Writes an RGB uint8 image [H, W, 3] as PNG at ``path``, creating its folder."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
