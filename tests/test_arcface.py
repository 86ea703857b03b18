"""ArcFace logits against a direct numpy transcription of the reference formula, and the MTArcFace loss."""
import math

import numpy as np
import pytest
import tensorflow as tf

from mtarcface_tf.model import arcface_logits, mtarcface_loss
from mtarcface_tf.model.losses import sparse_cross_entropy


def reference_logits(emb, w, labels, s, m):
    """The reference's arcface.py, line by line, in numpy (float64)."""
    emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    w = w / np.linalg.norm(w, axis=0, keepdims=True)
    cos_t = np.clip(emb @ w, -1, 1)
    sin_t = np.sqrt(np.maximum(1 - cos_t ** 2, 0))
    cos_mt = s * (cos_t * math.cos(m) - sin_t * math.sin(m))
    keep_val = s * (cos_t - math.sin(m) * m)
    cos_mt_temp = np.where(cos_t - math.cos(math.pi - m) > 0, cos_mt, keep_val)
    mask = np.eye(w.shape[1])[labels]
    return s * cos_t * (1 - mask) + cos_mt_temp * mask


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_the_reference_formula(seed):
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(16, 8))
    w = rng.normal(size=(8, 10))
    labels = rng.integers(0, 10, size=16)
    got = arcface_logits(emb.astype("float32"), w.astype("float32"), labels, s=64.0, m=0.5)
    np.testing.assert_allclose(np.asarray(got), reference_logits(emb, w, labels, 64.0, 0.5), atol=2e-4)


def test_fallback_when_theta_plus_m_exceeds_pi():
    # Embeddings opposite to their class centre: theta = pi, so theta + m > pi and the fallback applies.
    w = np.eye(4, dtype="float32")
    emb = -np.eye(4, dtype="float32")
    labels = np.arange(4)
    got = np.asarray(arcface_logits(emb, w, labels, s=64.0, m=0.5))
    expected = 64.0 * (-1.0 - 0.5 * math.sin(0.5))
    np.testing.assert_allclose(np.diag(got), expected, rtol=1e-6)
    np.testing.assert_allclose(got, reference_logits(emb, w, labels, 64.0, 0.5), atol=1e-4)


def test_cos_plus_one_gives_exact_margin_logit():
    w = np.eye(3, dtype="float32")
    got = np.asarray(arcface_logits(np.eye(3, dtype="float32"), w, np.arange(3), s=64.0, m=0.5))
    np.testing.assert_allclose(np.diag(got), 64.0 * math.cos(0.5), rtol=1e-6)
    np.testing.assert_allclose(got[0, 1], 0.0, atol=1e-6)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_gradient_is_finite_at_cos_plus_minus_one(sign):
    w = tf.Variable(np.eye(3, dtype="float32"))
    emb = tf.Variable(sign * np.eye(3, dtype="float32"))
    with tf.GradientTape() as tape:
        logits = arcface_logits(emb, w, np.arange(3), s=64.0, m=0.5)
        loss = tf.reduce_mean(sparse_cross_entropy(np.arange(3), logits))
    grads = tape.gradient(loss, [emb, w])
    for g in grads:
        assert np.all(np.isfinite(g.numpy()))


def test_margin_can_be_a_tensor():
    rng = np.random.default_rng(3)
    emb, w, labels = rng.normal(size=(5, 4)), rng.normal(size=(4, 6)), rng.integers(0, 6, 5)
    got = arcface_logits(emb.astype("float32"), w.astype("float32"), labels, s=30.0, m=tf.constant(0.2))
    np.testing.assert_allclose(np.asarray(got), reference_logits(emb, w, labels, 30.0, 0.2), atol=2e-4)


def test_zero_margin_is_scaled_cosine():
    rng = np.random.default_rng(4)
    emb, w = rng.normal(size=(5, 4)), rng.normal(size=(4, 6))
    got = np.asarray(arcface_logits(emb.astype("float32"), w.astype("float32"), np.zeros(5, int), s=10.0, m=0.0))
    cos = (emb / np.linalg.norm(emb, axis=1, keepdims=True)) @ (w / np.linalg.norm(w, axis=0, keepdims=True))
    np.testing.assert_allclose(got, 10.0 * cos, atol=1e-4)


def test_sparse_cross_entropy_matches_tf():
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(6, 9)).astype("float32") * 5
    labels = rng.integers(0, 9, 6)
    expected = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    np.testing.assert_allclose(np.asarray(sparse_cross_entropy(labels, logits)), expected.numpy(), rtol=1e-5)


def test_mtarcface_loss_composition():
    got = float(mtarcface_loss(np.float32(2.0), np.float32(0.5), np.float32(0.25)))
    assert got == pytest.approx(2.0 + math.log(1.5) + 0.25, rel=1e-6)
    assert float(mtarcface_loss(np.float32(1.0), np.float32(0.0), np.float32(0.0))) == pytest.approx(1.0)
