"""Benchmark: vectorised evaluate() against a loop transcription of insightface's verification protocol.

Run:
  python bench/verification.py [--pairs=6000] [--dim=512] [--seed=0]

Prints both timings and whether every number agrees, then ONE JSON line with
``vectorised_s``, ``loop_s``, ``speedup`` and ``identical``. Target: identical numbers, speedup >= 20.
"""
import json
import time

import numpy as np
from absl import app, flags
from sklearn.model_selection import KFold
from sklearn.preprocessing import normalize

from mtarcface_tf.eval import verification
from mtarcface_tf.results import save_result

FLAGS = flags.FLAGS
flags.DEFINE_integer("pairs", 6000, "Number of pairs (LFW has 6000).")
flags.DEFINE_integer("dim", 512, "Embedding width.")
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_float("noise", 2.5, "Noise of same-identity pairs relative to identity spread.")

KEYS = ("accuracy", "accuracy_std", "tar", "tar_std", "far")


def structured_embeddings(pairs, dim, noise, seed):
    """Returns float32 embeddings [pairs, dim] x 2 and issame [pairs]: same pairs are noisy copies of one identity."""
    rng = np.random.default_rng(seed)
    issame = np.arange(pairs) % 2 == 0
    rng.shuffle(issame)
    identity = rng.normal(size=(pairs, dim))
    first = identity + noise * rng.normal(size=(pairs, dim))
    second = np.where(issame[:, None], identity, rng.normal(size=(pairs, dim))) + noise * rng.normal(size=(pairs, dim))
    return first.astype(np.float32), second.astype(np.float32), issame


def _accuracy(threshold, dist, actual_issame):
    predict_issame = np.less(dist, threshold)
    tp = np.sum(np.logical_and(predict_issame, actual_issame))
    fp = np.sum(np.logical_and(predict_issame, np.logical_not(actual_issame)))
    tn = np.sum(np.logical_and(np.logical_not(predict_issame), np.logical_not(actual_issame)))
    fn = np.sum(np.logical_and(np.logical_not(predict_issame), actual_issame))
    tpr = 0 if (tp + fn == 0) else float(tp) / float(tp + fn)
    fpr = 0 if (fp + tn == 0) else float(fp) / float(fp + tn)
    return tpr, fpr, float(tp + tn) / dist.size


def _val_far(threshold, dist, actual_issame):
    predict_issame = np.less(dist, threshold)
    true_accept = np.sum(np.logical_and(predict_issame, actual_issame))
    false_accept = np.sum(np.logical_and(predict_issame, np.logical_not(actual_issame)))
    return (float(true_accept) / float(np.sum(actual_issame)),
            float(false_accept) / float(np.sum(np.logical_not(actual_issame))))


def loop_evaluate(embeddings1, embeddings2, issame, nrof_folds=10, far_target=1e-3):
    """insightface's evaluate with its Python loops; interp1d(slinear) replaced by its scipy<=1.8 equal, np.interp."""
    embeddings1, embeddings2 = normalize(embeddings1), normalize(embeddings2)
    dist = np.sum(np.square(np.subtract(embeddings1, embeddings2)), 1)
    folds = list(KFold(n_splits=nrof_folds, shuffle=False).split(np.arange(len(issame))))
    thresholds = np.arange(0, 4, 0.01)
    tprs = np.zeros((nrof_folds, len(thresholds)))
    fprs = np.zeros((nrof_folds, len(thresholds)))
    accuracy = np.zeros(nrof_folds)
    for fold, (train, test) in enumerate(folds):
        acc_train = np.array([_accuracy(t, dist[train], issame[train])[2] for t in thresholds])
        for i, threshold in enumerate(thresholds):
            tprs[fold, i], fprs[fold, i], _ = _accuracy(threshold, dist[test], issame[test])
        accuracy[fold] = _accuracy(thresholds[np.argmax(acc_train)], dist[test], issame[test])[2]
    thresholds = np.arange(0, 4, 0.001)
    val = np.zeros(nrof_folds)
    far = np.zeros(nrof_folds)
    for fold, (train, test) in enumerate(folds):
        far_train = np.array([_val_far(t, dist[train], issame[train])[1] for t in thresholds])
        threshold = np.interp(far_target, far_train, thresholds) if np.max(far_train) >= far_target else 0.0
        val[fold], far[fold] = _val_far(threshold, dist[test], issame[test])
    return dict(accuracy=np.mean(accuracy), accuracy_std=np.std(accuracy), tar=np.mean(val), tar_std=np.std(val),
                far=np.mean(far), tpr=np.mean(tprs, 0), fpr=np.mean(fprs, 0))


def _timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def main(argv):
    del argv
    data = structured_embeddings(FLAGS.pairs, FLAGS.dim, FLAGS.noise, FLAGS.seed)
    fast, fast_s = _timed(verification.evaluate, *data)
    slow, slow_s = _timed(loop_evaluate, *data)
    identical = (all(fast[k] == slow[k] for k in KEYS)
                 and np.array_equal(fast["roc"]["tpr"], slow["tpr"])
                 and np.array_equal(fast["roc"]["fpr"], slow["fpr"]))
    for key in KEYS:
        print(f"{key:>13}: vectorised {fast[key]:.10f}   loop {slow[key]:.10f}")
    print(f"{FLAGS.pairs} pairs x {FLAGS.dim}: vectorised {fast_s:.3f} s, loop {slow_s:.3f} s, "
          f"speedup {slow_s / fast_s:.1f}x, identical (bit for bit): {identical}")
    figures = dict(pairs=FLAGS.pairs, dim=FLAGS.dim, vectorised_s=round(fast_s, 4), loop_s=round(slow_s, 3),
                   speedup=round(slow_s / fast_s, 1), identical=bool(identical))
    print(f"saved {save_result('verification', figures)}")
    print(json.dumps(figures))


if __name__ == "__main__":
    app.run(main)
