"""triplet_loss against a brute-force numpy FaceNet triplet loss, for every mining strategy."""
import itertools

import numpy as np
import pytest
import tensorflow as tf

from mtarcface_tf.model.losses import pairwise_squared_distances, triplet_loss


def _numpy_distances(embeddings):
    x = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    return ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)


def _brute_force(embeddings, labels, margin, mining):
    """Loops over anchors / pairs / triplets: returns (loss, active_fraction, mean d_ap, mean d_an)."""
    d = _numpy_distances(embeddings.astype(np.float64))
    n = len(labels)
    positives = [(a, p) for a, p in itertools.product(range(n), repeat=2) if a != p and labels[a] == labels[p]]
    negatives = [(a, q) for a, q in itertools.product(range(n), repeat=2) if labels[a] != labels[q]]
    losses = []
    if mining == "batch_all":
        losses = [d[a, p] - d[a, q] + margin for a, p in positives for b, q in negatives if b == a]
        active = [x for x in losses if x > 0]
        loss = np.mean(active) if active else 0.0
        fraction = len(active) / max(len(losses), 1)
    else:
        if mining == "batch_hard":
            for a in range(n):
                pos = [d[a, p] for b, p in positives if b == a]
                neg = [d[a, q] for b, q in negatives if b == a]
                if pos and neg:
                    losses.append(max(pos) - min(neg) + margin)
        else:  # semi_hard
            for a, p in positives:
                neg = [d[a, q] for b, q in negatives if b == a]
                if not neg:
                    continue
                farther = [x for x in neg if x > d[a, p]]
                losses.append(d[a, p] - (min(farther) if farther else max(neg)) + margin)
        hinge = np.maximum(losses, 0.0)
        loss = hinge.mean() if losses else 0.0
        fraction = (hinge > 0).mean() if losses else 0.0
    mean_pos = np.mean([d[a, p] for a, p in positives]) if positives else 0.0
    mean_neg = np.mean([d[a, q] for a, q in negatives]) if negatives else 0.0
    return loss, fraction, mean_pos, mean_neg


def _batch(seed, identities=4, per_identity=3, dim=8):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(identities, dim))
    labels = np.repeat(np.arange(identities), per_identity)
    embeddings = centres[labels] + rng.normal(scale=0.8, size=(len(labels), dim))
    order = rng.permutation(len(labels))
    return embeddings[order].astype(np.float32), labels[order].astype(np.int32)


@pytest.mark.parametrize("mining", ["batch_all", "batch_hard", "semi_hard"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force(mining, seed):
    embeddings, labels = _batch(seed)
    margin = 0.5
    loss, stats = triplet_loss(embeddings, labels, margin=margin, mining=mining)
    expected = _brute_force(embeddings, labels, margin, mining)
    got = (float(loss), float(stats["active_fraction"]), float(stats["positive_distance"]),
           float(stats["negative_distance"]))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert expected[0] > 0.0
    if mining != "batch_hard":   # hardest pairs of a noisy batch are all active; the others should mix
        assert 0.0 < expected[1] < 1.0, "the batch should mix active and inactive triplets"


def test_uneven_identities_and_singletons():
    # An identity with one image has no positive: it is only ever a negative.
    embeddings, _ = _batch(3, identities=3, per_identity=3)
    labels = np.array([0, 0, 0, 1, 1, 2, 3, 4, 4], np.int32)
    for mining in ("batch_all", "batch_hard", "semi_hard"):
        loss, stats = triplet_loss(embeddings, labels, margin=0.3, mining=mining)
        expected = _brute_force(embeddings, labels, 0.3, mining)
        np.testing.assert_allclose([float(loss), float(stats["active_fraction"])], expected[:2], rtol=1e-5, atol=1e-6)


def test_no_valid_triplet_gives_zero_loss():
    embeddings, _ = _batch(4)
    loss, stats = triplet_loss(embeddings[:4], np.arange(4, dtype=np.int32), mining="batch_hard")
    assert float(loss) == 0.0 and float(stats["active_fraction"]) == 0.0


def test_separated_clusters_have_no_active_triplets():
    labels = np.repeat(np.arange(3), 2).astype(np.int32)
    embeddings = np.eye(3, dtype=np.float32)[labels] + 1e-3 * np.arange(6, dtype=np.float32)[:, None]
    for mining in ("batch_all", "batch_hard", "semi_hard"):
        loss, stats = triplet_loss(embeddings, labels, margin=0.2, mining=mining)
        assert float(loss) == 0.0 and float(stats["active_fraction"]) == 0.0


def test_gradients_are_finite_and_pull_positives_together():
    embeddings, labels = _batch(5)
    x = tf.Variable(embeddings)
    for mining in ("batch_all", "batch_hard", "semi_hard"):
        with tf.GradientTape() as tape:
            loss, _ = triplet_loss(x, labels, margin=0.5, mining=mining)
        grad = tape.gradient(loss, x)
        assert np.all(np.isfinite(grad.numpy()))
        stepped, _ = triplet_loss(x - 0.05 * grad, labels, margin=0.5, mining=mining)
        assert float(stepped) < float(loss)


def test_distances_are_squared_euclidean_of_normalized_rows():
    embeddings, _ = _batch(6)
    np.testing.assert_allclose(pairwise_squared_distances(embeddings).numpy(), _numpy_distances(embeddings),
                               atol=1e-5)


def test_unknown_mining_is_refused():
    with pytest.raises(ValueError, match="semi_hard"):
        triplet_loss(np.zeros((2, 3), np.float32), np.zeros(2, np.int32), mining="hardest")
