"""focal_cross_entropy: gamma=0 is cross-entropy; gamma>0 down-weights easy examples exactly as -(1-p)^g log p."""
import numpy as np
import pytest
import tensorflow as tf

from mtarcface_tf.model.arcface import arcface_logits
from mtarcface_tf.model.losses import focal_cross_entropy, identity_cross_entropy, sparse_cross_entropy


def _data(seed=0, batch=6, classes=5):
    rng = np.random.default_rng(seed)
    return rng.normal(scale=3.0, size=(batch, classes)).astype(np.float32), rng.integers(0, classes, batch)


def test_gamma_zero_is_cross_entropy():
    logits, labels = _data()
    np.testing.assert_array_equal(focal_cross_entropy(labels, logits, 0.0).numpy(),
                                  sparse_cross_entropy(labels, logits).numpy())


@pytest.mark.parametrize("gamma", [0.5, 2.0, 5.0])
def test_matches_the_formula(gamma):
    logits, labels = _data(1)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    p_t = probs[np.arange(len(labels)), labels].astype(np.float64)
    expected = -((1 - p_t) ** gamma) * np.log(p_t)
    np.testing.assert_allclose(focal_cross_entropy(labels, logits, gamma).numpy(), expected, rtol=1e-4, atol=1e-6)


def test_easy_examples_weigh_less_than_hard_ones():
    logits = np.array([[8.0, 0.0], [0.0, 0.5]], np.float32)
    labels = np.array([0, 0])
    ce = sparse_cross_entropy(labels, logits).numpy()
    focal = focal_cross_entropy(labels, logits, 2.0).numpy()
    assert focal[0] / ce[0] < 1e-5 < 0.2 < focal[1] / ce[1] < 1.0


def test_on_arcface_logits_with_gradients():
    rng = np.random.default_rng(2)
    embeddings = tf.Variable(rng.normal(size=(4, 8)).astype(np.float32))
    centres = rng.normal(size=(8, 6)).astype(np.float32)
    labels = np.array([0, 1, 2, 5])
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(identity_cross_entropy(labels, arcface_logits(embeddings, centres, labels), 2.0))
    grad = tape.gradient(loss, embeddings)
    assert np.isfinite(float(loss)) and float(loss) > 0 and np.all(np.isfinite(grad.numpy()))
    logits = arcface_logits(embeddings, centres, labels)
    np.testing.assert_array_equal(identity_cross_entropy(labels, logits, 0.0).numpy(),
                                  sparse_cross_entropy(labels, logits).numpy())
