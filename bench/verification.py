"""Benchmark: vectorised evaluate() against a loop transcription of insightface's verification protocol.

Run from the repository root with it on the path (the loop transcription is test support,
tests/support/verification_reference.py):
  PYTHONPATH=. python bench/verification.py [--pairs=6000] [--dim=512] [--seed=0]

Prints both timings and whether every number agrees, then ONE JSON line with
``vectorised_s``, ``loop_s``, ``speedup`` and ``identical``. Target: identical numbers, speedup >= 20.
"""
import time

from mtarcface_tf.quiet import quiet_tensorflow

quiet_tensorflow()  # first: TensorFlow's log lines off (--verbosity=0 or MTARCFACE_TF_LOGS=1 bring them back)

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from mtarcface_tf.eval import verification  # noqa: E402
from mtarcface_tf.results import report_result  # noqa: E402
from tests.support.verification_reference import loop_evaluate  # noqa: E402

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
    report_result('verification', figures)


if __name__ == "__main__":
    app.run(main)
