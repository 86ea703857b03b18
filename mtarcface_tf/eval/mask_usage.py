"""Mask-usage classification metrics (class 1 = wears a mask), from the model's mask probabilities."""
import numpy as np
from sklearn import metrics

CLASS_NAMES = ("no_mask", "mask")


def mask_usage_metrics(mask_prob, labels):
    """Scores mask-usage predictions.

    Args:
      mask_prob: float [N, 2] probabilities (column 1 = mask); the prediction is the argmax.
      labels: int/bool [N], 1 where the face wears a mask.

    Returns:
      dict: ``accuracy``, ``precision``, ``recall``, ``f1`` (floats in [0, 1], class 1 positive; 0 when undefined),
      ``confusion_matrix`` (2x2 nested list, rows = true no_mask/mask, columns = predicted), ``report`` (sklearn
      ``classification_report`` text) and ``count`` (N).

    Raises:
      ValueError when shapes disagree or mask_prob has NaNs.
    """
    mask_prob = np.asarray(mask_prob, np.float64)
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    if mask_prob.ndim != 2 or mask_prob.shape[1] != 2 or len(mask_prob) != len(labels) or not len(labels):
        raise ValueError(f"mask_prob must be [N, 2] and labels [N] with N > 0; got {mask_prob.shape} and "
                         f"{labels.shape}")
    if not np.all(np.isfinite(mask_prob)):
        raise ValueError("mask_prob contains NaN or Inf values (the model diverged)")
    predicted = np.argmax(mask_prob, axis=1)
    precision, recall, f1, _ = metrics.precision_recall_fscore_support(
        labels, predicted, labels=[1], average="binary", zero_division=0)
    return dict(
        accuracy=float(metrics.accuracy_score(labels, predicted)),
        precision=float(precision),
        recall=float(recall),
        f1=float(f1),
        confusion_matrix=metrics.confusion_matrix(labels, predicted, labels=[0, 1]).tolist(),
        report=metrics.classification_report(labels, predicted, labels=[0, 1], target_names=list(CLASS_NAMES),
                                             digits=4, zero_division=0),
        count=int(len(labels)),
    )
