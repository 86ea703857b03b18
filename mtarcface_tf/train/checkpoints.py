"""Checkpoints the trainer writes and resumes from: config.json checked against a new run, the latest/best managers,
resume, and ``save_initial_checkpoint``. Reading a workdir back (``load_model``) is ``mtarcface_tf.model.workdir``.
"""
import json
import os

import tensorflow as tf

from mtarcface_tf.atomic import write_text
from mtarcface_tf.model import normalization
from mtarcface_tf.model.workdir import BEST_DIR, CHECKPOINT_DIR, CONFIG_FILE, config_to_json, first_line
from mtarcface_tf.train import partial_fc
from mtarcface_tf.train.schedules import make_optimizer

# The parts of the config that fix the shapes of the weights: a workdir cannot resume with others.
ARCHITECTURE_KEYS = ("num_classes", "model")
# Model keys added after runs were written: a config.json without them describes these values (plain BN).
MODEL_KEYS_ADDED_LATER = {"norm": normalization.BATCH_NORM, "renorm_clipping": normalization.RENORM_CLIPPING,
                          "renorm_momentum": normalization.RENORM_MOMENTUM, "head": "mirrored"}


class CheckpointError(ValueError):
    """A workdir the requested run cannot write into or resume from (other architecture, already holds a run)."""


def _architecture(config_dict):
    architecture = {key: config_dict.get(key) for key in ARCHITECTURE_KEYS}
    if isinstance(architecture["model"], dict):
        architecture["model"] = {**MODEL_KEYS_ADDED_LATER, **architecture["model"]}
    return architecture


def check_and_save_config(config, workdir):
    """Writes ``config`` as ``WORKDIR/config.json`` (atomically), after checking that a config already there
    describes the same architecture and classes. Raises ``CheckpointError`` naming the workdir and the fix."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, CONFIG_FILE)
    new = json.loads(config_to_json(config))
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            try:
                old = json.load(f)
            except json.JSONDecodeError as err:
                raise CheckpointError(f"{path}: unreadable ({err}); use another --workdir") from err
        changed = sorted(k for k in ARCHITECTURE_KEYS if _architecture(old)[k] != _architecture(new)[k])
        if changed:
            details = "; ".join(_describe_change(_architecture(old)[k], _architecture(new)[k], k) for k in changed)
            raise CheckpointError(f"{workdir} holds a run of another architecture ({details}); use another "
                                  f"--workdir or the same config")
    write_text(path, config_to_json(config))


def _describe_change(old, new, key):
    if isinstance(old, dict) and isinstance(new, dict):
        diffs = [f"{key}.{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
                 if old.get(k) != new.get(k)]
        return ", ".join(diffs)
    return f"{key}: {old!r} -> {new!r}"


def make_checkpoint(model, optimizer=None, step=None, rng=None, centres=None):
    """Returns a ``tf.train.Checkpoint`` of the model and, when given, the optimizer, step variable,
    ``tf.random.Generator`` and a sharded head's ``partial_fc.ShardedCentres`` (saved as ``centres``: each shard
    writes its class range of one [C, D] tensor, so any replica count restores it)."""
    parts = {"model": model, "optimizer": optimizer, "step": step, "rng": rng, "centres": centres}
    return tf.train.Checkpoint(**{k: v for k, v in parts.items() if v is not None})


def make_managers(checkpoint, directory, keep):
    """Returns ``(latest, best)`` ``tf.train.CheckpointManager``s: ``DIR/checkpoints`` keeping ``keep``,
    and ``DIR/best`` keeping one."""
    latest = tf.train.CheckpointManager(checkpoint, os.path.join(directory, CHECKPOINT_DIR), max_to_keep=keep)
    best = tf.train.CheckpointManager(checkpoint, os.path.join(directory, BEST_DIR), max_to_keep=1)
    return latest, best


def restore_latest(checkpoint, workdir):
    """Restores the newest checkpoint of ``WORKDIR/checkpoints`` into ``checkpoint``; returns its path or None.

    Raises ``CheckpointError`` when it does not fit the objects (another architecture).
    """
    path = tf.train.latest_checkpoint(os.path.join(workdir, CHECKPOINT_DIR))
    if path is None:
        return None
    try:
        checkpoint.restore(path).assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as err:
        raise CheckpointError(f"{path}: does not fit this network ({first_line(err)}); use another --workdir") from err
    return path


def save_initial_checkpoint(model, config, workdir):
    """Saves ``model`` as step 0 of a new run of ``config`` in ``workdir`` (config.json + checkpoints/ckpt-0).

    The checkpoint holds what the trainer checkpoints (model, a fresh optimizer, step, RNG), so ``tools/train.py``
    resumes from it and ``load_model`` reads it. Returns the checkpoint path; raises CheckpointError when the
    workdir already holds a run.
    """
    existing = tf.train.latest_checkpoint(os.path.join(workdir, CHECKPOINT_DIR))
    if existing:
        raise CheckpointError(f"{workdir} already holds a run ({existing}); write into a new --workdir")
    check_and_save_config(config, workdir)
    optimizer = make_optimizer(config)
    optimizer.build(model.trainable_variables)
    step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    centres = None   # a sharded head's fresh centres, as one shard: they restore into any number of replicas
    if config.model.get("head", "mirrored") == "sharded":
        centres = partial_fc.ShardedCentres.from_strategy(tf.distribute.get_strategy(), config)
    checkpoint = make_checkpoint(model, optimizer, step, tf.random.Generator.from_seed(config.seed), centres)
    latest, _ = make_managers(checkpoint, workdir, config.keep_checkpoints)
    return latest.save(checkpoint_number=0)
