"""Checks README's statement that np.interp gives what insightface's interp1d(kind='slinear') gave with scipy <= 1.8.

insightface's calculate_val interpolates the threshold reaching a target FAR with
``scipy.interpolate.interp1d(far_train, thresholds, kind='slinear')(far_target)``; far_train repeats values (0 at
small thresholds, 1 at large ones), which scipy >= 1.9 rejects. mtarcface_tf.eval.verification.threshold_at_far
computes ``np.interp(far_target, far_train, thresholds)`` instead. This script runs both on FAR curves made the
way insightface makes them (thresholds np.arange(0, 4, 0.001), FAR = FP / (FP + TN) of random pair distances) and
saves the largest difference with results.save_result as docs/results/scipy18_interp.json.

scipy 1.8 has no wheels for Python >= 3.11, so it runs in a side environment (not a project dependency):
  python3.10 -m venv /tmp/scipy18 && /tmp/scipy18/bin/pip install scipy==1.8.1 "numpy<1.23"
  /tmp/scipy18/bin/python docs/checks/scipy18_interp.py [--sets=200]
"""
import argparse
import os
import sys

import numpy as np
import scipy
from scipy import interpolate

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from mtarcface_tf.results import save_result  # noqa: E402  (stdlib only)


def far_curve(dist, issame, thresholds):
    """insightface's FAR per threshold: the share of different pairs with distance below it."""
    different = ~issame
    return np.array([np.sum((dist < t) & different) / max(np.sum(different), 1) for t in thresholds])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sets", type=int, default=200)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    thresholds = np.arange(0, 4, 0.001)
    worst, compared, repeated = 0.0, 0, 0
    for _ in range(args.sets):
        pairs = int(rng.integers(100, 1200))
        issame = rng.random(pairs) < 0.5
        spread = rng.uniform(0.05, 0.6)
        dist = np.clip(np.where(issame, rng.normal(0.8, spread, pairs), rng.normal(1.8, spread, pairs)), 0, 4)
        far_train = far_curve(dist, issame, thresholds)
        repeated += int(len(np.unique(far_train)) < len(far_train))
        for far_target in (1e-3, 1e-2, 1e-1, float(rng.uniform(0, 1))):
            if np.max(far_train) < far_target:
                continue
            old = float(interpolate.interp1d(far_train, thresholds, kind="slinear")(far_target))
            new = float(np.interp(far_target, far_train, thresholds))
            worst = max(worst, abs(old - new))
            compared += 1
    figures = {"scipy": scipy.__version__, "numpy": np.__version__, "curves": args.sets,
               "curves_with_repeated_far": repeated, "thresholds_compared": compared,
               "max_abs_difference": worst}
    print(figures)
    print("saved", save_result("scipy18_interp", figures))


if __name__ == "__main__":
    main()
