"""The tf.distribute strategy of ``config.strategy``, the per-replica batch, and who writes (the chief)."""
import json
import os
import tempfile

import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker")


def make_strategy(name):
    """Returns the ``tf.distribute.Strategy`` named by ``config.strategy``.

    "default": one device; "mirrored": all local GPUs (one replica on a CPU-only machine); "multi_worker":
    ``MultiWorkerMirroredStrategy`` with the cluster from the ``TF_CONFIG`` environment variable.
    Raises ValueError for an unknown name or a multi_worker run without a usable ``TF_CONFIG``.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        _check_tf_config()
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"config.strategy={name!r}: choose one of {STRATEGIES}")


def _check_tf_config():
    raw = os.environ.get("TF_CONFIG", "")
    try:
        tf_config = json.loads(raw) if raw else {}
    except json.JSONDecodeError as err:
        raise ValueError(f"TF_CONFIG is not valid JSON ({err}); see the tf.distribute multi-worker guide") from err
    if "cluster" not in tf_config or "task" not in tf_config:
        raise ValueError("config.strategy='multi_worker' needs TF_CONFIG with 'cluster' and 'task' "
                         "(e.g. {\"cluster\": {\"worker\": [\"host1:port\", ...]}, \"task\": {\"type\": \"worker\", "
                         "\"index\": 0}}) on every worker")


def per_replica_batch_size(global_batch_size, num_replicas):
    """Returns ``global_batch_size // num_replicas``; ValueError when it does not divide evenly."""
    if global_batch_size % num_replicas:
        raise ValueError(f"config.batch_size={global_batch_size} does not divide over {num_replicas} replicas; "
                         f"use a multiple of {num_replicas}")
    return global_batch_size // num_replicas


def is_chief(strategy):
    """True for the worker that writes checkpoints and summaries (always True outside multi-worker training)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type is None or task_type == "chief" or (task_type == "worker" and task_id == 0
                                                         and "chief" not in resolver.cluster_spec().as_dict())


def write_dir(strategy, workdir):
    """Returns where this worker writes: ``workdir`` on the chief, a fresh temporary directory on the others
    (non-chief workers must still save, for the collectives, but their files are thrown away)."""
    if is_chief(strategy):
        return workdir
    return tempfile.mkdtemp(prefix=f"worker{strategy.cluster_resolver.task_id}_")
