"""evaluate() against a straightforward transcription of insightface's loops (calculate_roc / calculate_val)."""
import numpy as np
import pytest
from sklearn.preprocessing import normalize

from mtarcface_tf.eval import verification
from tests.support.verification_reference import loop_evaluate


def _structured(seed, pairs=300, dim=16, noise=0.9, quantize=None):
    rng = np.random.default_rng(seed)
    issame = rng.random(pairs) < 0.5
    first = rng.normal(size=(pairs, dim))
    other = rng.normal(size=(pairs, dim))
    second = np.where(issame[:, None], first + noise * rng.normal(size=(pairs, dim)), other)
    if quantize:
        first, second = np.round(first * quantize), np.round(second * quantize)
    return first.astype(np.float32), second.astype(np.float32), issame


def _assert_same(got, want):
    for key in ("accuracy", "accuracy_std", "tar", "tar_std", "far"):
        assert got[key] == pytest.approx(want[key], abs=1e-9), key
    np.testing.assert_allclose(got["best_thresholds"], want["best_thresholds"], atol=1e-9)
    np.testing.assert_allclose(got["roc"]["tpr"], want["tpr"], atol=1e-9)
    np.testing.assert_allclose(got["roc"]["fpr"], want["fpr"], atol=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_insightface_loops(seed):
    embeddings1, embeddings2, issame = _structured(seed)
    got = verification.evaluate(embeddings1, embeddings2, issame)
    _assert_same(got, loop_evaluate(embeddings1, embeddings2, issame))
    assert 0.5 < got["accuracy"] <= 1.0
    assert got["roc"]["tpr"].shape == (400,) and got["thresholds"].shape == (400,)


@pytest.mark.parametrize("seed", [3, 4])
def test_matches_with_ties_from_quantised_embeddings(seed):
    embeddings1, embeddings2, issame = _structured(seed, dim=3, quantize=1.0)
    dist = verification.squared_distances(embeddings1, embeddings2)
    assert len(np.unique(dist)) < len(dist) / 3          # many ties
    _assert_same(verification.evaluate(embeddings1, embeddings2, issame),
                 loop_evaluate(embeddings1, embeddings2, issame))


def test_distances_exactly_on_thresholds():
    # One-hot rows: distances are exactly 0.0 or 2.0, both grid thresholds; `dist < threshold` is strict.
    rng = np.random.default_rng(5)
    pairs = 200
    idx1 = rng.integers(0, 4, pairs)
    issame = rng.random(pairs) < 0.5
    idx2 = np.where(issame | (rng.random(pairs) < 0.3), idx1, (idx1 + 1) % 4)
    embeddings1, embeddings2 = np.eye(4)[idx1], np.eye(4)[idx2]
    _assert_same(verification.evaluate(embeddings1, embeddings2, issame),
                 loop_evaluate(embeddings1, embeddings2, issame))


def test_far_never_reached_gives_threshold_zero():
    rng = np.random.default_rng(6)
    pairs = 100
    issame = np.arange(pairs) % 2 == 0
    embeddings1 = rng.normal(size=(pairs, 8))
    # Different pairs are antipodal (distance 4, never below any threshold < 4): FAR stays 0 < 1e-3.
    embeddings2 = np.where(issame[:, None], embeddings1 + 0.1 * rng.normal(size=(pairs, 8)), -embeddings1)
    got = verification.evaluate(embeddings1, embeddings2, issame)
    _assert_same(got, loop_evaluate(embeddings1, embeddings2, issame))
    assert got["tar"] == 0.0 and got["far"] == 0.0     # threshold 0.0 accepts nothing


def test_other_far_target_and_folds():
    embeddings1, embeddings2, issame = _structured(7, pairs=200)
    _assert_same(verification.evaluate(embeddings1, embeddings2, issame, nrof_folds=5, far_target=1e-2),
                 loop_evaluate(embeddings1, embeddings2, issame, nrof_folds=5, far_target=1e-2))


def test_rejects_bad_input():
    embeddings1, embeddings2, issame = _structured(8, pairs=40)
    bad = embeddings1.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        verification.evaluate(bad, embeddings2, issame)
    with pytest.raises(ValueError, match="issame"):
        verification.evaluate(embeddings1, embeddings2, issame[:-1])
    with pytest.raises(ValueError, match="same shape"):
        verification.evaluate(embeddings1, embeddings2[:-1], issame)
    with pytest.raises(ValueError, match="folds"):
        verification.evaluate(embeddings1[:5], embeddings2[:5], issame[:5])


def test_recommend_threshold():
    embeddings1, embeddings2, issame = _structured(9, pairs=2000, noise=0.5)
    rec = verification.recommend_threshold(embeddings1, embeddings2, issame, far=1e-2)
    dist = verification.squared_distances(embeddings1, embeddings2)
    accepted = dist < rec["squared_distance"]
    assert rec["far"] == pytest.approx(np.mean(accepted[~issame]))
    assert rec["tar"] == pytest.approx(np.mean(accepted[issame]))
    assert rec["far"] <= 1e-2 + 1.0 / np.sum(~issame)
    assert rec["cosine_similarity"] == pytest.approx(1.0 - rec["squared_distance"] / 2.0)
    cosine = np.sum(normalize(embeddings1) * normalize(embeddings2), 1)
    np.testing.assert_array_equal(cosine > rec["cosine_similarity"] + 1e-6, dist < rec["squared_distance"] - 2e-6)
