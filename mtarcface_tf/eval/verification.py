"""insightface's face-verification protocol (``calculate_roc`` / ``calculate_val``), vectorised.

The numbers are those of insightface's ``verification.py``: embeddings are L2-normalized with
``sklearn.preprocessing.normalize``; the distance of a pair is the squared L2 distance; a pair is predicted
"same" when ``distance < threshold`` (strict); 10 folds of ``KFold(shuffle=False)``; the accuracy threshold is the
first maximum of the training folds' accuracy over ``np.arange(0, 4, 0.01)``; TAR@FAR (insightface's ``val``)
uses ``np.arange(0, 4, 0.001)``. Instead of insightface's Python loops over thresholds, each fold's distances are
sorted once per class and ``np.searchsorted(..., side="left")`` counts the distances strictly below every
threshold at once; the counts are integers, so every rate equals insightface's bit for bit.
"""
import numpy as np
from sklearn.model_selection import KFold
from sklearn.preprocessing import normalize

ACCURACY_THRESHOLDS_STEP = 0.01
VAL_THRESHOLDS_STEP = 0.001
MAX_SQUARED_DISTANCE = 4.0     # squared L2 distance of unit vectors lies in [0, 4]
DEFAULT_FAR = 1e-3


def accuracy_thresholds():
    """Returns insightface's accuracy thresholds ``np.arange(0, 4, 0.01)`` (400 float64 values)."""
    return np.arange(0, MAX_SQUARED_DISTANCE, ACCURACY_THRESHOLDS_STEP)


def val_thresholds():
    """Returns insightface's TAR@FAR thresholds ``np.arange(0, 4, 0.001)`` (4000 float64 values)."""
    return np.arange(0, MAX_SQUARED_DISTANCE, VAL_THRESHOLDS_STEP)


def _as_embeddings(embeddings, name):
    array = np.asarray(embeddings)
    if array.ndim != 2:
        raise ValueError(f"{name}: expected embeddings of shape [N, D], got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float64)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name}: embeddings contain NaN or Inf values (the model diverged or the checkpoint "
                         f"is broken; evaluate a finite model)")
    return array


def validate_pairs(embeddings1, embeddings2, issame):
    """Checks a verification set and returns it as arrays.

    Args:
      embeddings1, embeddings2: [N, D] floats (any scale; float32 stays float32, as in insightface).
      issame: [N] bools, True where the two images show the same person.

    Returns:
      ``(embeddings1, embeddings2, issame)`` as numpy arrays.

    Raises:
      ValueError naming the argument on NaN/Inf, wrong rank, or mismatched lengths or widths.
    """
    embeddings1 = _as_embeddings(embeddings1, "embeddings1")
    embeddings2 = _as_embeddings(embeddings2, "embeddings2")
    issame = np.asarray(issame).astype(bool).reshape(-1)
    if embeddings1.shape != embeddings2.shape:
        raise ValueError(f"embeddings1 {embeddings1.shape} and embeddings2 {embeddings2.shape} must have the same "
                         f"shape (one row per pair)")
    if len(issame) != len(embeddings1):
        raise ValueError(f"issame has {len(issame)} entries but there are {len(embeddings1)} pairs of embeddings")
    return embeddings1, embeddings2, issame


def squared_distances(embeddings1, embeddings2):
    """Returns the [N] squared L2 distances of the L2-normalized rows (in [0, 4]), computed as insightface does."""
    embeddings1 = normalize(embeddings1)
    embeddings2 = normalize(embeddings2)
    return np.sum(np.square(np.subtract(embeddings1, embeddings2)), 1)


class _Counts:
    """Counts of same/different pairs with distance strictly below each threshold, for one subset of pairs."""

    def __init__(self, dist, issame):
        self.same = np.sort(dist[issame])
        self.diff = np.sort(dist[~issame])
        self.n = len(dist)

    def below(self, thresholds):
        """Returns (true accepts, false accepts) [T] int arrays: pairs with ``dist < threshold`` per class."""
        thresholds = np.atleast_1d(thresholds)
        return (np.searchsorted(self.same, thresholds, side="left"),
                np.searchsorted(self.diff, thresholds, side="left"))

    def accuracy(self, thresholds):
        """Returns (tpr, fpr, accuracy) [T] float64 arrays, insightface's ``calculate_accuracy`` per threshold."""
        tp, fp = self.below(thresholds)
        fn = len(self.same) - tp
        tn = len(self.diff) - fp
        tpr = _safe_ratio(tp, tp + fn)
        fpr = _safe_ratio(fp, fp + tn)
        return tpr, fpr, (tp + tn) / self.n

    def val_far(self, thresholds):
        """Returns (val, far) [T] float64 arrays, insightface's ``calculate_val_far`` per threshold.

        insightface divides by the number of same (different) pairs without a guard, which raises
        ZeroDivisionError on a fold without same (different) pairs; here the rate is 0 then, the convention
        insightface's ``calculate_accuracy`` uses for tpr/fpr.
        """
        true_accept, false_accept = self.below(thresholds)
        return _safe_ratio(true_accept, len(self.same)), _safe_ratio(false_accept, len(self.diff))


def _safe_ratio(numerator, denominator):
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.broadcast_to(np.asarray(denominator, dtype=np.float64), numerator.shape)
    out = np.zeros_like(numerator)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def threshold_at_far(far_curve, thresholds, far_target):
    """Returns insightface's threshold reaching ``far_target`` on a FAR curve, or 0.0 when it is never reached.

    insightface calls ``scipy.interpolate.interp1d(far_train, thresholds, kind='slinear')(far_target)``.
    ``far_train`` always repeats values (0 at small thresholds, 1 at large ones), which scipy >= 1.9 rejects
    ("Expect x to not have duplicates"); the published numbers come from scipy <= 1.8, whose linear spline
    there equals ``np.interp(far_target, far_train, thresholds)``, so that is what is computed here.

    Args:
      far_curve: [T] non-decreasing FAR per threshold.
      thresholds: [T] increasing squared-distance thresholds.
      far_target: the false-accept rate wanted, e.g. 1e-3.

    Returns:
      float64 squared-distance threshold.
    """
    if np.max(far_curve) >= far_target:
        return np.float64(np.interp(far_target, far_curve, thresholds))
    return np.float64(0.0)


def _folds(nrof_pairs, nrof_folds):
    if nrof_pairs < nrof_folds:
        raise ValueError(f"{nrof_pairs} pairs cannot be split into {nrof_folds} folds; give at least "
                         f"nrof_folds pairs")
    return KFold(n_splits=nrof_folds, shuffle=False).split(np.arange(nrof_pairs))


def calculate_roc(dist, issame, nrof_folds=10):
    """insightface's ``calculate_roc`` on precomputed distances.

    Args:
      dist: [N] squared distances; issame: [N] bools; nrof_folds: KFold splits (no shuffle).

    Returns:
      dict with ``tpr`` and ``fpr`` ([400] float64, test-fold rates averaged over folds), ``accuracy`` ([folds]
      test-fold accuracy at the training folds' best threshold), ``best_thresholds`` ([folds]) and ``thresholds``.
    """
    thresholds = accuracy_thresholds()
    tprs = np.zeros((nrof_folds, len(thresholds)))
    fprs = np.zeros((nrof_folds, len(thresholds)))
    accuracy = np.zeros(nrof_folds)
    best_thresholds = np.zeros(nrof_folds)
    for fold, (train, test) in enumerate(_folds(len(dist), nrof_folds)):
        _, _, acc_train = _Counts(dist[train], issame[train]).accuracy(thresholds)
        best_thresholds[fold] = thresholds[np.argmax(acc_train)]
        test_counts = _Counts(dist[test], issame[test])
        tprs[fold], fprs[fold], _ = test_counts.accuracy(thresholds)
        accuracy[fold] = test_counts.accuracy(best_thresholds[fold])[2][0]
    return dict(tpr=np.mean(tprs, 0), fpr=np.mean(fprs, 0), accuracy=accuracy,
                best_thresholds=best_thresholds, thresholds=thresholds)


def calculate_val(dist, issame, far_target=DEFAULT_FAR, nrof_folds=10):
    """insightface's ``calculate_val`` on precomputed distances.

    Args:
      dist: [N] squared distances; issame: [N] bools; far_target: wanted FAR; nrof_folds: KFold splits.

    Returns:
      dict with ``val`` and ``far`` ([folds] test-fold TAR and FAR at the training folds' threshold for
      ``far_target``) and ``val_thresholds`` ([folds]).
    """
    thresholds = val_thresholds()
    val = np.zeros(nrof_folds)
    far = np.zeros(nrof_folds)
    fold_thresholds = np.zeros(nrof_folds)
    for fold, (train, test) in enumerate(_folds(len(dist), nrof_folds)):
        _, far_train = _Counts(dist[train], issame[train]).val_far(thresholds)
        fold_thresholds[fold] = threshold_at_far(far_train, thresholds, far_target)
        fold_val, fold_far = _Counts(dist[test], issame[test]).val_far(fold_thresholds[fold])
        val[fold], far[fold] = fold_val[0], fold_far[0]
    return dict(val=val, far=far, val_thresholds=fold_thresholds)


def evaluate(embeddings1, embeddings2, issame, nrof_folds=10, far_target=DEFAULT_FAR):
    """Scores a verification set exactly as insightface's ``verification.evaluate``.

    Args:
      embeddings1, embeddings2: [N, D] float embeddings of the first and second image of each pair (insightface's
        ``embeddings[0::2]`` and ``embeddings[1::2]``); normalized here, any scale is fine.
      issame: [N] bools.
      nrof_folds: KFold splits without shuffle (insightface: 10).
      far_target: the FAR of the TAR@FAR metric (insightface: 1e-3).

    Returns:
      dict: ``accuracy``/``accuracy_std`` (mean/std over folds, in [0, 1]); ``tar``/``tar_std``/``far``
      (insightface's ``val``, ``val_std``, ``far``); ``best_thresholds`` [folds]; ``roc`` dict(``tpr``, ``fpr``)
      of [400] arrays over ``thresholds`` (0..4 step 0.01); ``fold_accuracy`` [folds]; ``distances`` [N].

    Raises:
      ValueError on NaN/Inf embeddings, mismatched lengths, or fewer pairs than folds.
    """
    embeddings1, embeddings2, issame = validate_pairs(embeddings1, embeddings2, issame)
    dist = squared_distances(embeddings1, embeddings2)
    roc = calculate_roc(dist, issame, nrof_folds)
    val = calculate_val(dist, issame, far_target, nrof_folds)
    return dict(
        accuracy=float(np.mean(roc["accuracy"])),
        accuracy_std=float(np.std(roc["accuracy"])),
        tar=float(np.mean(val["val"])),
        tar_std=float(np.std(val["val"])),
        far=float(np.mean(val["far"])),
        far_target=far_target,
        best_thresholds=roc["best_thresholds"],
        fold_accuracy=roc["accuracy"],
        roc=dict(tpr=roc["tpr"], fpr=roc["fpr"]),
        thresholds=roc["thresholds"],
        distances=dist,
    )


def recommend_threshold_from_distances(dist, issame, far=DEFAULT_FAR):
    """Returns the verification threshold at FAR ``far`` over all pairs (no folds), insightface's interpolation.

    Args:
      dist: [N] squared distances of unit embeddings; issame: [N] bools; far: wanted false-accept rate.

    Returns:
      dict(``squared_distance``, ``cosine_similarity`` = 1 - d / 2, ``far_target``, ``far`` and ``tar`` measured
      at that threshold with ``dist < threshold``, ``pairs``). Accept a pair when its squared distance is below
      ``squared_distance`` (equivalently its cosine similarity is above ``cosine_similarity``).
    """
    dist = np.asarray(dist, dtype=np.float64)
    issame = np.asarray(issame).astype(bool)
    counts = _Counts(dist, issame)
    thresholds = val_thresholds()
    _, far_curve = counts.val_far(thresholds)
    threshold = threshold_at_far(far_curve, thresholds, far)
    tar, achieved_far = counts.val_far(threshold)
    return dict(squared_distance=float(threshold), cosine_similarity=float(1.0 - threshold / 2.0),
                far_target=far, far=float(achieved_far[0]), tar=float(tar[0]), pairs=int(len(dist)))


def recommend_threshold(embeddings1, embeddings2, issame, far=DEFAULT_FAR):
    """Returns the threshold at FAR ``far`` for pairs of embeddings; see ``recommend_threshold_from_distances``.

    Args:
      embeddings1, embeddings2: [N, D] floats; issame: [N] bools; far: wanted false-accept rate.

    Returns:
      dict(``squared_distance``, ``cosine_similarity``, ``far_target``, ``far``, ``tar``, ``pairs``).
    """
    embeddings1, embeddings2, issame = validate_pairs(embeddings1, embeddings2, issame)
    return recommend_threshold_from_distances(squared_distances(embeddings1, embeddings2), issame, far)


def far_label(far):
    """Returns a short label of a FAR for metric names and tables, e.g. 1e-3 -> ``"1e-3"``, 0.0015 -> ``"1.5e-3"``."""
    mantissa, exponent = f"{far:.6e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
