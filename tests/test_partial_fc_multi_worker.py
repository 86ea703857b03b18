"""The sharded head on MultiWorkerMirroredStrategy: 2 worker processes on 127.0.0.1 (one CPU replica each) train
exactly as one process with 2 replicas (MirroredStrategy over 2 virtual CPU devices), and the chief's checkpoint
holds both workers' shards, so it resumes in one process on 2 or 4 replicas with identical centres and momentum.
"""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.support import processes
from tests.test_multi_worker import _free_ports

# One script for both sides: "worker" (TF_CONFIG names the cluster) or "single" (2 replicas in one process; it also
# restores the workers' checkpoint on 2 and 4 replicas).
_SCRIPT = textwrap.dedent("""
    import json, sys, tempfile
    import numpy as np, tensorflow as tf
    mode, out_file, checkpoint_dir = sys.argv[1:4]
    if mode == "single":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 4)
    import keras
    from tests.test_train_step import _config
    from mtarcface_tf.model import build_mtarcface
    from mtarcface_tf.train import checkpoints as ckpt_lib
    from mtarcface_tf.train import partial_fc
    from mtarcface_tf.train.partial_fc import ShardedCentres
    from mtarcface_tf.train.schedules import make_optimizer
    from mtarcface_tf.train.step import make_distributed_step, make_train_step
    from mtarcface_tf.train.strategy import is_chief

    CLASSES, BATCH, SIZE, STEPS = 11, 16, 32, 3
    config = _config(optimizer="sgd", lr=0.002)
    config.num_classes, config.batch_size = CLASSES, BATCH
    config.model.head = "sharded"
    config.optimizer.momentum = 0.9
    strategy = (tf.distribute.MultiWorkerMirroredStrategy() if mode == "worker"
                else tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
    rng = np.random.default_rng(5)
    patterns = rng.uniform(-1, 1, (CLASSES, 4, 4, 3)).repeat(8, 1).repeat(8, 2)
    batches = []
    for _ in range(STEPS):
        labels = rng.integers(0, CLASSES, BATCH)
        images = (patterns[labels] + rng.normal(0, 0.2, (BATCH, SIZE, SIZE, 3))).astype(np.float32)
        batches.append((images, labels.astype(np.int32), rng.integers(0, 2, BATCH).astype(np.int32)))

    def per_replica(value):
        def part(ctx):
            b = len(value) // 2
            return value[ctx.replica_id_in_sync_group * b:(ctx.replica_id_in_sync_group + 1) * b]
        return strategy.experimental_distribute_values_from_function(part)

    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = build_mtarcface(CLASSES, config)
        optimizer = make_optimizer(config)
        optimizer.build(model.trainable_variables)
    centres = ShardedCentres.from_strategy(strategy, config)
    step = make_distributed_step(strategy, make_train_step(model, optimizer, config, BATCH, 2, centres))
    losses = []
    for i, (images, labels, masks) in enumerate(batches):
        metrics = step(per_replica(images), {"identity": per_replica(labels), "mask": per_replica(masks)},
                       tf.constant(i, tf.int64))
        losses.append([float(metrics[k]) for k in ("loss", "arcface_loss", "reg_loss", "mask_loss")])
    out = {"losses": losses, "replicas": centres.local_replicas,
           "weights": np.concatenate([v.numpy().ravel() for v in model.backbone.trainable_variables]).tolist(),
           "centres": centres.gathered().tolist(),
           "momentum": np.concatenate([centres.shard(r)[1].numpy() for r in centres.local_replicas]).tolist()}
    if mode == "worker":   # as the trainer saves: every worker saves, the chief into the shared directory
        chief = is_chief(strategy)
        manager, _ = ckpt_lib.make_managers(ckpt_lib.make_checkpoint(model, centres=centres),
                                            checkpoint_dir if chief else tempfile.mkdtemp(), 1)
        # 2 rows of each shard per gather (2 replicas x 2 tables x 2 rows x 16 floats): shards of 5 and 6 rows take
        # 3 chunks, the last one partial.
        partial_fc.COLLECT_CHUNK_BYTES = 2 * 2 * 2 * 16 * 4
        with centres.collected(strategy, keep=chief):
            manager.save(checkpoint_number=STEPS)
    else:
        path = tf.train.latest_checkpoint(checkpoint_dir + "/checkpoints")
        out["restored"] = {}
        for n in (2, 4):
            read = ShardedCentres(CLASSES, config.model.embedding_size, n, [(r, f"/cpu:{r}") for r in range(n)],
                                  seed=99)
            tf.train.Checkpoint(centres=read).restore(path).expect_partial()
            momentum = np.concatenate([read.shard(r)[1].numpy() for r in read.local_replicas])
            out["restored"][n] = {"ranges": read.ranges, "centres": read.gathered().tolist(),
                                  "momentum": momentum.tolist()}
    with open(out_file, "w") as f:
        json.dump(out, f)
""")


def _start(script, mode, out_file, checkpoint_dir, tf_config=None):
    env = dict(os.environ, PYTHONPATH=processes.python_path(), CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    if tf_config:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return subprocess.Popen([sys.executable, str(script), mode, str(out_file), str(checkpoint_dir)], env=env,
                            cwd=processes.REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(procs, timeout=300):
    logs = []
    for proc in procs:
        try:
            logs.append(proc.communicate(timeout=timeout)[0])
        finally:
            proc.kill()
    for proc, log in zip(procs, logs):
        assert proc.returncode == 0, log[-3000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Returns ``(worker 0's output, worker 1's output, the single process's output)``: the workers run first (the
    single process restores their checkpoint)."""
    tmp = tmp_path_factory.mktemp("partial_fc_multi_worker")
    script = tmp / "script.py"
    script.write_text(_SCRIPT)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    _finish([_start(script, "worker", tmp / f"worker{i}.json", tmp / "shared",
                    {"cluster": cluster, "task": {"type": "worker", "index": i}}) for i in range(2)])
    _finish([_start(script, "single", tmp / "single.json", tmp / "shared")])
    return [json.loads((tmp / f"{name}.json").read_text()) for name in ("worker0", "worker1", "single")]


def _relative(got, expected):
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    return np.linalg.norm(got - expected) / np.linalg.norm(expected)


@pytest.mark.slow
def test_two_workers_equal_one_worker_with_two_replicas(runs):
    """Every step's loss and its terms, the backbone after 3 SGD-momentum steps and the centres of both shards:
    the same up to the all-reduce's summation order (measured ~2e-8 relative)."""
    worker0, worker1, single = runs
    assert (worker0["replicas"], worker1["replicas"]) == ([0], [1])
    for losses in (worker0["losses"], worker1["losses"]):
        np.testing.assert_allclose(losses, single["losses"], rtol=1e-6)
    assert single["losses"][-1][1] < 0.9 * single["losses"][0][1]   # it trained
    for worker in (worker0, worker1):
        assert _relative(worker["weights"], single["weights"]) < 1e-6
    both = np.concatenate([worker0["centres"], worker1["centres"]])
    assert both.shape == (11, 16)
    assert _relative(both, single["centres"]) < 1e-6


@pytest.mark.slow
def test_a_two_worker_checkpoint_resumes_on_two_and_four_replicas(runs):
    """The chief's checkpoint holds worker 1's shard too: restored in one process on 2 replicas ([0, 5), [5, 11))
    and on 4 ([0, 2), [2, 5), [5, 8), [8, 11)), centres and momentum equal the workers' own, bit for bit."""
    worker0, worker1, single = runs
    centres = np.concatenate([worker0["centres"], worker1["centres"]])
    momentum = np.concatenate([worker0["momentum"], worker1["momentum"]])
    assert np.abs(momentum).max() > 0
    for n, ranges in (("2", [[0, 5], [5, 11]]), ("4", [[0, 2], [2, 5], [5, 8], [8, 11]])):
        restored = single["restored"][n]
        assert restored["ranges"] == ranges
        np.testing.assert_array_equal(restored["centres"], centres)
        np.testing.assert_array_equal(restored["momentum"], momentum)
