"""The tests' tiny world: one tiny config, a tiny MTArcFace, a tiny learnable record set, a saved training workdir,
and the tests' own reference of an export's outputs.

Not a test module. The tiny network keeps the paper's layer types (LResNet units, BN, PReLU, mask head) at a
size that builds and exports in seconds on 2 CPU cores.
"""
import json
import os

import cv2
import keras
import numpy as np

from mtarcface_tf.configs import common
from mtarcface_tf.data.shards import ShardedRecordWriter
from mtarcface_tf.images import encode_jpeg

NUM_CLASSES = 7   # not a size used anywhere else in the network, so a [D, 7] variable can only be the centres
TRAIN_CLASSES = 4   # classes of write_tiny_records, learnable in a few steps
DEFAULT_JPEG_QUALITY = 95   # cv2.imencode's default, what the records were written with before


def tiny_config(data_dir="", classes=TRAIN_CLASSES, steps=4, batch_size=8, mask_head=True, input_size=32,
                embedding_size=16):
    """Returns the tests' one tiny config: a one-unit-per-stage LResNet at width 0.125 on ``input_size`` images,
    training on ``data_dir`` (e.g. ``write_tiny_records``) for ``steps`` steps on one device, no XLA, no
    evaluation, a checkpoint every 2 steps."""
    config = common.base_config()
    config.num_classes = classes
    config.batch_size = batch_size
    config.num_steps = steps
    config.strategy = "default"
    config.jit_compile = False
    config.model.units = (1, 1, 1, 1)
    config.model.width = 0.125
    config.model.input_size = input_size
    config.model.embedding_size = embedding_size
    config.model.mask_head = mask_head
    config.model.dropout = 0.0
    config.loss.arcface_scale = 16.0
    config.loss.arcface_margin = 0.2
    config.data.train = str(data_dir)
    config.data.shuffle_buffer = 64
    config.data.mask_probability = 0.5
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 2e-3
    config.optimizer.schedule = "constant"
    config.log_every_secs = 0.0
    config.checkpoint_every = 2
    return config


def write_tiny_records(output_dir, classes=TRAIN_CLASSES, per_class=16, size=32, seed=0, shards=2):
    """Writes ``classes * per_class`` JPEGs (each class a distinct colour pattern plus noise); returns the dir."""
    rng = np.random.default_rng(seed)
    patterns = rng.integers(0, 256, size=(classes, 4, 4, 3)).astype(np.float32)
    with ShardedRecordWriter(str(output_dir), "train", num_shards=shards) as writer:
        for label in range(classes):
            base = cv2.resize(patterns[label], (size, size), interpolation=cv2.INTER_NEAREST)
            for _ in range(per_class):
                image = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
                writer.write(encode_jpeg(image, DEFAULT_JPEG_QUALITY), label)
        writer.close(source="test")
    return str(output_dir)


def build_tiny_model(mask_head=True, input_size=32, embedding_size=16, seed=0):
    """Returns ``(model, config)``: a freshly initialized tiny ``build_mtarcface`` network (deterministic)."""
    from mtarcface_tf.model import build_mtarcface

    keras.utils.set_random_seed(seed)
    config = tiny_config(classes=NUM_CLASSES, mask_head=mask_head, input_size=input_size,
                         embedding_size=embedding_size)
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


def projection_embed(size=112, dim=8, seed=0, seen=None):
    """Returns a model-free embed function: uint8 [B, size, size, 3] -> float32 [B, dim], a fixed random linear
    projection of the pixels (deterministic, so two calls agree; faces alike give alike embeddings). ``seen``, a
    list, receives a copy of every batch it is called on."""
    weights = np.random.default_rng(seed).normal(size=(size * size * 3, dim)).astype(np.float32) / size

    def embed(faces):
        faces = np.asarray(faces)
        if seen is not None:
            seen.append(faces.copy())
        return (faces.reshape(len(faces), -1).astype(np.float32) / 255.0) @ weights

    return embed


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


def write_png(path, image):
    """Writes an RGB uint8 image [H, W, 3] as PNG at ``path``, creating its folder."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
