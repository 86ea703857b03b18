"""Reading a training workdir: ``config.json``, the checkpoint to load, and ``load_model`` (the network with its
weights). ``ModelLoadError`` is the one error for "this model path is unusable" (also raised by
``mtarcface_tf.export.embedder``).

A workdir holds ``config.json`` (the resolved config), ``checkpoints/`` (the newest ``keep_checkpoints`` ones),
``best/`` (the best by masked verification accuracy) and ``tb/`` (TensorBoard); the trainer
(``mtarcface_tf.train.checkpoints``) writes them.
"""
import json
import os

import ml_collections
import tensorflow as tf

from mtarcface_tf.model.build import build_mtarcface

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
BEST_DIR = "best"


class ModelLoadError(ValueError):
    """A model path (training workdir, checkpoint, SavedModel) that cannot give a model; the message names the path
    and the fix."""


def config_to_json(config):
    """Returns the config as indented JSON text."""
    return json.dumps(json.loads(config.to_json()), indent=2, sort_keys=True)


def config_from_json(text):
    """Returns the ``ml_collections.ConfigDict`` of a ``config_to_json`` text."""
    return ml_collections.ConfigDict(json.loads(text))


def first_line(err):
    """Returns the first line of an exception's message (its type name when empty)."""
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def _resolve(path):
    """Returns ``(checkpoint prefix, config.json path)`` for a workdir, a checkpoint directory or a prefix."""
    candidates = [os.path.join(path, CHECKPOINT_DIR), path, os.path.join(path, BEST_DIR)]
    prefix = next((p for p in map(_latest_in, candidates) if p), None)
    if prefix is None and tf.io.gfile.exists(path + ".index"):
        prefix = path
    if prefix is None:
        raise ModelLoadError(f"{path}: no checkpoint found (give a training workdir, its checkpoints/ or best/ "
                              f"directory, or a checkpoint prefix such as WORKDIR/checkpoints/ckpt-10)")
    folder = os.path.dirname(os.path.abspath(prefix))
    for directory in (os.path.abspath(path), folder, os.path.dirname(folder)):
        config_path = os.path.join(directory, CONFIG_FILE)
        if os.path.isfile(config_path):
            return prefix, config_path
    raise ModelLoadError(f"{path}: no {CONFIG_FILE} beside the checkpoint {prefix}; load it from its training "
                          f"workdir")


def _latest_in(directory):
    return tf.train.latest_checkpoint(directory) if os.path.isdir(directory) else None


def load_model(path):
    """Rebuilds the training network of a run and restores its weights.

    Args:
      path: a training workdir (``config.json`` + ``checkpoints/``), its ``checkpoints/`` or ``best/`` directory,
        or a checkpoint prefix (``WORKDIR/checkpoints/ckpt-N``).
    Returns:
      ``(model, config)``: the ``MTArcFace`` network (float32) and the run's ``ConfigDict``.
    Raises:
      ``ModelLoadError`` (a ValueError) naming the path when nothing is there or the weights do not fit.
    """
    prefix, config_path = _resolve(path)
    with open(config_path, encoding="utf-8") as f:
        config = config_from_json(f.read())
    model = build_mtarcface(config.num_classes, config)
    try:
        tf.train.Checkpoint(model=model).restore(prefix).expect_partial().assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as err:
        raise ModelLoadError(f"{prefix}: does not fit the network of {config_path} ({first_line(err)})") from err
    return model, config
