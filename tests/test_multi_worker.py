"""Two MultiWorkerMirroredStrategy workers on 127.0.0.1 train in lock-step; only the chief writes the workdir."""
import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.support import processes
from tests.support.tiny import tiny_config, write_tiny_records



_WORKER = textwrap.dedent("""
    import hashlib, sys
    import numpy as np
    from tests.support.tiny import tiny_config
    from mtarcface_tf.train.trainer import train_model

    data_dir, workdir, out_file, head = sys.argv[1:5]
    config = tiny_config(data_dir, steps=3, batch_size=8)
    config.strategy = "multi_worker"
    config.model.head = head
    if head == "sharded":
        config.optimizer.update(name="sgd", learning_rate=0.05, momentum=0.9)
    model, results = train_model(config, workdir)
    digest = hashlib.sha256()
    for variable in model.trainable_variables:
        digest.update(np.ascontiguousarray(variable.numpy()).tobytes())
    with open(out_file, "w") as f:
        f.write(f"{digest.hexdigest()} {results['step']} {results['loss']}")
""")


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
@pytest.mark.parametrize("head", ["mirrored", "sharded"])
def test_two_workers_hold_identical_weights(head, tmp_path):
    """With the sharded head each worker holds half the centres; the chief's checkpoint holds all of them, and the
    trainer resumes it on one replica."""
    data_dir = write_tiny_records(tmp_path / "records", shards=2)
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    workdir = tmp_path / "run"
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    procs = []
    for index in range(2):
        env = dict(os.environ, PYTHONPATH=processes.python_path(),
                   CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2",
                   TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        procs.append(subprocess.Popen(
            [sys.executable, str(script), data_dir, str(workdir), str(tmp_path / f"worker{index}.txt"), head],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = []
    for proc in procs:
        try:
            logs.append(proc.communicate(timeout=240)[0])
        finally:
            proc.kill()
    for proc, log in zip(procs, logs):
        assert proc.returncode == 0, log[-3000:]
    chief, other = [(tmp_path / f"worker{i}.txt").read_text().split() for i in range(2)]
    assert chief[1] == other[1] == "3"
    assert chief[0] == other[0], "the workers' trainable weights differ"
    assert sorted(os.listdir(workdir / "checkpoints"))[-1].startswith("ckpt-3")
    assert os.path.isfile(workdir / "config.json") and os.listdir(workdir / "tb")
    if head == "sharded":   # reading the whole [C, D] tensors needs every worker's slice in the chief's checkpoint
        import tensorflow as tf
        reader = tf.train.load_checkpoint(str(workdir / "checkpoints"))
        names = [name for name in reader.get_variable_to_shape_map() if name.split("/")[0] == "centres"]
        assert len(names) == 2, names
        for name in names:
            table = reader.get_tensor(name)
            assert table.shape == (4, 16) and np.abs(table).min() > 0, (name, table)
        # The trainer resumes that checkpoint on one replica (both shards restored into one) and goes on.
        from mtarcface_tf.train.trainer import train_model
        config = tiny_config(data_dir, steps=4, batch_size=8)
        config.model.head = "sharded"
        config.optimizer.update(name="sgd", learning_rate=0.05, momentum=0.9)
        _, results = train_model(config, str(workdir))
        assert results["step"] == 4 and np.isfinite(results["loss"])
