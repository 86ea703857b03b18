"""Mask-usage metrics against hand-counted values."""
import numpy as np
import pytest

from mtarcface_tf.eval.mask_usage import mask_usage_metrics


def _probs(predicted):
    predicted = np.asarray(predicted)
    return np.stack([1.0 - predicted * 0.9 - 0.05, predicted * 0.9 + 0.05], axis=1)


def test_hand_counted():
    labels = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    predicted = [1, 1, 1, 0, 1, 0, 0, 0, 0, 0]     # tp 3, fn 1, fp 1, tn 5
    out = mask_usage_metrics(_probs(predicted), labels)
    assert out["accuracy"] == pytest.approx(0.8)
    assert out["precision"] == pytest.approx(0.75)
    assert out["recall"] == pytest.approx(0.75)
    assert out["f1"] == pytest.approx(0.75)
    assert out["confusion_matrix"] == [[5, 1], [1, 3]]
    assert "mask" in out["report"] and "no_mask" in out["report"]
    assert out["count"] == 10


def test_single_class_and_no_positive_predictions():
    out = mask_usage_metrics(_probs([0, 0, 0]), [0, 0, 0])
    assert out["accuracy"] == 1.0 and out["precision"] == 0.0 and out["recall"] == 0.0
    assert out["confusion_matrix"] == [[3, 0], [0, 0]]


def test_bad_input():
    with pytest.raises(ValueError, match="N, 2"):
        mask_usage_metrics(np.zeros((3, 2)), [0, 1])
    with pytest.raises(ValueError, match="NaN"):
        mask_usage_metrics(np.full((2, 2), np.nan), [0, 1])
