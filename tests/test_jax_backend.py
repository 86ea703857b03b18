"""The Keras JAX backend path of the model package: same objective as the TensorFlow backend, and a jitted step trains.

The JAX half runs in a subprocess (this file run as a script with KERAS_BACKEND=jax): a process has one Keras
backend. Both halves build the same tiny network; the TensorFlow half saves its weights, the JAX half loads them.
"""
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_BATCH, _CLASSES, _SIZE = 4, 7, 32


def _tiny_config():
    from mtarcface_tf.configs import common
    config = common.base_config()
    config.model.units = (1, 1, 1, 1)
    config.model.width = 0.125
    config.model.input_size = _SIZE
    config.model.embedding_size = 32
    return config


def _batch():
    rng = np.random.default_rng(0)
    images = rng.uniform(-1.0, 1.0, (_BATCH, _SIZE, _SIZE, 3)).astype(np.float32)
    labels = rng.integers(0, _CLASSES, _BATCH).astype(np.int32)
    masks = np.array([0, 1, 1, 0], np.int32)
    return images, labels, masks


def _objective(model, loss_config, images, labels, masks):
    """The MTArcFace loss in inference mode (BN moving statistics, no dropout): a float."""
    from keras import ops
    from mtarcface_tf.model import mtarcface_loss
    from mtarcface_tf.model.losses import sparse_cross_entropy
    outputs = model(images, training=False)
    logits = model.arcface(outputs["embedding"], labels, s=loss_config.arcface_scale, m=loss_config.arcface_margin)
    arcface_ce = ops.mean(sparse_cross_entropy(labels, logits))
    mask_ce = ops.mean(sparse_cross_entropy(masks, outputs["mask_logits"]))
    reg = ops.sum(ops.stack(model.losses))
    return float(mtarcface_loss(arcface_ce, mask_ce, reg))


def _jax_main(weights_path):
    """Loads ``weights_path`` into the tiny network on the JAX backend; prints the loss and a jitted step's effect."""
    import keras
    from mtarcface_tf.model import build_mtarcface
    spec = importlib.util.spec_from_file_location("train_step_jax", os.path.join(_REPO, "bench", "train_step_jax.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    config = _tiny_config()
    model = build_mtarcface(_CLASSES, config)
    model.load_weights(weights_path)
    images, labels, masks = _batch()
    loss = _objective(model, config.loss, images, labels, masks)

    optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
    optimizer.build(model.trainable_variables)
    step = bench.make_jax_train_step(model, optimizer, config.loss, _BATCH)
    state = ([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables],
             [v.value for v in optimizer.variables])
    before = [np.asarray(v) for v in state[0]]
    state, step_loss = step(state, images, labels, masks)
    changed = sum(not np.array_equal(a, np.asarray(b)) for a, b in zip(before, state[0]))
    print(json.dumps({"backend": keras.backend.backend(), "loss": loss, "step_loss": float(step_loss),
                      "changed": changed, "total": len(before), "tensorflow_imported": "tensorflow" in sys.modules}))


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_jax_backend_matches_tensorflow_and_trains(tmp_path):
    import keras
    from mtarcface_tf.model import build_mtarcface
    assert keras.backend.backend() == "tensorflow"
    keras.utils.set_random_seed(1)
    config = _tiny_config()
    model = build_mtarcface(_CLASSES, config)
    weights = str(tmp_path / "tiny.weights.h5")
    model.save_weights(weights)
    tf_loss = _objective(model, config.loss, *_batch())

    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), weights], env=env, cwd=_REPO,
                          capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])

    assert result["backend"] == "jax"
    assert not result["tensorflow_imported"], "the JAX path imported TensorFlow"
    # README: "matches the TensorFlow backend's to 1e-6 (relative)"; measured 1.5e-7 on the development machine
    # (float32 rounding of two backends' kernels; a wrong term or weight would move it by far more).
    print(f"relative difference of the JAX and TensorFlow losses: {abs(result['loss'] - tf_loss) / abs(tf_loss):.2e}")
    np.testing.assert_allclose(result["loss"], tf_loss, rtol=1e-6)
    # The step's loss is in training mode (batch statistics, dropout): finite and near, not equal.
    assert np.isfinite(result["step_loss"])
    assert result["changed"] == result["total"], f"{result['changed']}/{result['total']} weights changed"


if __name__ == "__main__":
    _jax_main(sys.argv[1])
