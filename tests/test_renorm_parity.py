"""Our batch-renorm layer (``normalization.norm_layer(norm="batch_renorm")``, Keras 3) against tf_keras (Keras 2)
``BatchNormalization(renorm=True)`` with the reference's settings: the same SGD steps on the same data give the same
outputs, trained gamma / beta, moving and renorm statistics, and the same inference output, on the TensorFlow and
the JAX backends. The tf_keras half runs in ``tests/support/tfkeras_reference.py`` (a subprocess with Keras 2); the JAX
half is this file run as a script with KERAS_BACKEND=jax. The batches change scale and shift from step to step so
that the r and d clipping (rmax 3, rmin 0.3333, dmax 5) is exercised.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS, BATCH, SIZE, CHANNELS, LR = 5, 4, 3, 6, 0.05
SCALES = (1.0, 10.0, 0.05, 1.0, 4.0, 1.0)     # per step; the last batch is the inference one
SHIFTS = (0.0, 20.0, -30.0, 2.0, 0.0, 0.5)
STATE = ("gamma", "beta", "moving_mean", "moving_variance", "moving_stddev", "renorm_mean", "renorm_stddev")


def _write_data(folder):
    rng = np.random.default_rng(3)
    data = np.stack([rng.normal(size=(BATCH, SIZE, SIZE, CHANNELS)) * s + m for s, m in zip(SCALES, SHIFTS)])
    weights = rng.normal(size=(BATCH, SIZE, SIZE, CHANNELS))
    paths = {"data": os.path.join(folder, "data.npy"), "loss_weights": os.path.join(folder, "weights.npy")}
    np.save(paths["data"], data.astype(np.float32))
    np.save(paths["loss_weights"], weights.astype(np.float32))
    return paths


def _layer(data, clipping=None):
    from mtarcface_tf.model.normalization import norm_layer
    layer = norm_layer("bn", norm="batch_renorm", renorm_clipping=clipping)
    layer.build(data.shape[1:])
    rng = np.random.default_rng(0)     # the same start as tests/support/tfkeras_reference.py's
    layer.gamma.assign(rng.uniform(0.5, 1.5, layer.gamma.shape).astype(np.float32))
    layer.beta.assign(rng.normal(0, 0.5, layer.beta.shape).astype(np.float32))
    return layer


def _result(layer, data, outputs):
    result = {f"output_{i}": np.asarray(y) for i, y in enumerate(outputs)}
    result.update({v.name: np.asarray(v.numpy()) for v in layer.weights})
    result["inference"] = np.asarray(layer(data[-1], training=False))
    return result


def run_tensorflow(paths, clipping=None):
    """SGD steps of our layer on the TensorFlow backend; returns the arrays tfkeras_reference.py writes."""
    import tensorflow as tf
    data, weights = np.load(paths["data"]), np.load(paths["loss_weights"])
    layer = _layer(data, clipping)
    outputs = []
    for x in data[:-1]:
        with tf.GradientTape() as tape:
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * weights)
        for variable, grad in zip([layer.gamma, layer.beta], tape.gradient(loss, [layer.gamma, layer.beta])):
            variable.assign(variable - LR * grad)
        outputs.append(y.numpy())
    return _result(layer, data, outputs)


def run_jax(paths):
    """The same steps on the JAX backend, through the layer's stateless_call and jax.grad."""
    import jax
    data, weights = np.load(paths["data"]), np.load(paths["loss_weights"])
    layer = _layer(data)
    trainable = [v.value for v in layer.trainable_variables]
    state = [v.value for v in layer.non_trainable_variables]

    def loss_fn(trainable, state, x):
        y, new_state = layer.stateless_call(trainable, state, x, training=True)
        return (y * weights).sum(), (y, new_state)

    outputs = []
    for x in data[:-1]:
        (_, (y, state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable, state, x)
        trainable = [t - LR * g for t, g in zip(trainable, grads)]
        outputs.append(y)
    for variable, value in zip(layer.trainable_variables + layer.non_trainable_variables, trainable + state):
        variable.assign(value)
    return _result(layer, data, outputs)


def _reference(folder, paths):
    job = {"output": os.path.join(folder, "ref.npz"),
           "tasks": [{"task": "renorm_parity", "name": "bn", "lr": LR, **paths}]}
    with open(os.path.join(folder, "job.json"), "w", encoding="utf-8") as f:
        json.dump(job, f)
    done = subprocess.run([sys.executable, os.path.join(REPO, "tests", "support", "tfkeras_reference.py"),
                           os.path.join(folder, "job.json")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    with np.load(job["output"]) as ref:
        return {key.split("/", 1)[1]: ref[key] for key in ref.files}


@pytest.fixture(scope="module")
def parity(tmp_path_factory):
    pytest.importorskip("tf_keras", reason="tf-keras (the [dev] extra) is the independent implementation")
    folder = str(tmp_path_factory.mktemp("renorm"))
    paths = _write_data(folder)
    return folder, paths, _reference(folder, paths)


def _compare(ours, reference):
    assert sorted(ours) == sorted(reference)
    for key in reference:
        np.testing.assert_allclose(ours[key], reference[key], rtol=2e-5, atol=2e-5, err_msg=key)


def test_the_data_exercises_the_clipping(parity):
    _, paths, reference = parity
    assert set(STATE) <= set(reference)
    unclipped = run_tensorflow(paths, clipping={"rmax": 1e9, "rmin": 1e-9, "dmax": 1e9})
    differs = [i for i in range(STEPS) if not np.allclose(unclipped[f"output_{i}"], reference[f"output_{i}"],
                                                             rtol=1e-3, atol=1e-3)]
    assert differs, "no step's output depends on the clipping: the parity test would not check it"


def test_tensorflow_backend_matches_tf_keras(parity):
    _, paths, reference = parity
    _compare(run_tensorflow(paths), reference)


@pytest.mark.slow
def test_jax_backend_matches_tf_keras(parity):
    pytest.importorskip("jax")
    folder, paths, reference = parity
    out = os.path.join(folder, "jax.npz")
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, os.path.abspath(__file__), json.dumps(paths), out],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    with np.load(out) as ours:
        _compare({key: ours[key] for key in ours.files}, reference)


if __name__ == "__main__":
    import keras
    assert keras.backend.backend() == "jax", keras.backend.backend()
    np.savez(sys.argv[2], **run_jax(json.loads(sys.argv[1])))
