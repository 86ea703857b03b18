"""A loop transcription of insightface's verification protocol (recognition/arcface_torch/eval/verification.py:
calculate_roc / calculate_val with their Python loops), the reference that tests/test_verification.py and
bench/verification.py hold the vectorised ``mtarcface_tf.eval.verification.evaluate`` against. Not a test module.
"""
import numpy as np
from sklearn.model_selection import KFold
from sklearn.preprocessing import normalize


def loop_accuracy(threshold, dist, actual_issame):
    """insightface's calculate_accuracy: (tpr, fpr, accuracy) of squared distances ``dist`` at ``threshold``."""
    predict_issame = np.less(dist, threshold)
    tp = np.sum(np.logical_and(predict_issame, actual_issame))
    fp = np.sum(np.logical_and(predict_issame, np.logical_not(actual_issame)))
    tn = np.sum(np.logical_and(np.logical_not(predict_issame), np.logical_not(actual_issame)))
    fn = np.sum(np.logical_and(np.logical_not(predict_issame), actual_issame))
    tpr = 0 if (tp + fn == 0) else float(tp) / float(tp + fn)
    fpr = 0 if (fp + tn == 0) else float(fp) / float(fp + tn)
    return tpr, fpr, float(tp + tn) / dist.size


def loop_val_far(threshold, dist, actual_issame):
    """insightface's calculate_val_far: (true accept rate, false accept rate) at ``threshold``."""
    predict_issame = np.less(dist, threshold)
    true_accept = np.sum(np.logical_and(predict_issame, actual_issame))
    false_accept = np.sum(np.logical_and(predict_issame, np.logical_not(actual_issame)))
    return float(true_accept) / float(np.sum(actual_issame)), \
        float(false_accept) / float(np.sum(np.logical_not(actual_issame)))


def loop_evaluate(embeddings1, embeddings2, issame, nrof_folds=10, far_target=1e-3):
    """insightface's verification.evaluate, loops and all (interp1d replaced by np.interp, its scipy<=1.8 equal).

    Returns dict: accuracy, accuracy_std, tar, tar_std, far (floats), best_thresholds [folds], tpr / fpr [400].
    """
    embeddings1, embeddings2 = normalize(embeddings1), normalize(embeddings2)
    dist = np.sum(np.square(np.subtract(embeddings1, embeddings2)), 1)
    indices = np.arange(len(issame))
    thresholds = np.arange(0, 4, 0.01)
    tprs = np.zeros((nrof_folds, len(thresholds)))
    fprs = np.zeros((nrof_folds, len(thresholds)))
    accuracy = np.zeros(nrof_folds)
    best = np.zeros(nrof_folds)
    for fold, (train, test) in enumerate(KFold(n_splits=nrof_folds, shuffle=False).split(indices)):
        acc_train = np.zeros(len(thresholds))
        for i, threshold in enumerate(thresholds):
            _, _, acc_train[i] = loop_accuracy(threshold, dist[train], issame[train])
        best[fold] = thresholds[np.argmax(acc_train)]
        for i, threshold in enumerate(thresholds):
            tprs[fold, i], fprs[fold, i], _ = loop_accuracy(threshold, dist[test], issame[test])
        _, _, accuracy[fold] = loop_accuracy(best[fold], dist[test], issame[test])
    thresholds = np.arange(0, 4, 0.001)
    val = np.zeros(nrof_folds)
    far = np.zeros(nrof_folds)
    for fold, (train, test) in enumerate(KFold(n_splits=nrof_folds, shuffle=False).split(indices)):
        far_train = np.zeros(len(thresholds))
        for i, threshold in enumerate(thresholds):
            _, far_train[i] = loop_val_far(threshold, dist[train], issame[train])
        threshold = np.interp(far_target, far_train, thresholds) if np.max(far_train) >= far_target else 0.0
        val[fold], far[fold] = loop_val_far(threshold, dist[test], issame[test])
    return dict(accuracy=np.mean(accuracy), accuracy_std=np.std(accuracy), tar=np.mean(val),
                tar_std=np.std(val), far=np.mean(far), best_thresholds=best,
                tpr=np.mean(tprs, 0), fpr=np.mean(fprs, 0))
