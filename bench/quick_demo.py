"""Benchmark: the paper's claim on the demo (its home: not a test, since a training run is not deterministic), how
surely it shows, and how far the demo's figures move between runs.

  python bench/quick_demo.py [--runs=5] [--steps=0]       # the quick demo (the margin tests/test_demo.py relies on)
  python bench/quick_demo.py --full --runs=3              # the full demo (`make demo`): README's spread

Runs the quick demo (`tools/demo.py --quick`) ``--runs`` times, one after the other, each in a new temporary
directory (SynthFaces made afresh, both models trained from scratch: runs differ by tf.data order and thread
scheduling), and reports per run each model's clean / masked / mixed accuracy and its mask accuracy drop
(demo.mask_accuracy_drop: clean - masked plus clean - mixed, on the same pairs), and the margin: ArcFace's drop
minus MTArcFace's. The claim is that the margin is positive (``positive_runs`` of ``runs``); the smallest margin and
the mean and spread say how surely. ``--steps`` overrides the quick run's steps (0: the configs' QUICK steps).
Run K trains with seed K (``run_demo(seed=K)``). Each run also records TAR at the demo's FAR per variant and the
recognition step's figures; ``spread`` gives min / mean / max of every figure over the runs.
Prints a line per run, then ONE JSON line, saved as docs/results/quick_demo.json (quick_demo_STEPS.json with
--steps, demo_runs.json with --full).
"""
import statistics
import tempfile

from mtarcface_tf.quiet import quiet_tensorflow

quiet_tensorflow()  # first: TensorFlow's log lines off (--verbosity=0 or MTARCFACE_TF_LOGS=1 bring them back)

from absl import app, flags  # noqa: E402

from mtarcface_tf import demo  # noqa: E402
from mtarcface_tf.configs import demo as demo_configs  # noqa: E402
from mtarcface_tf.data.masked_pairs import PAPER_VARIANTS  # noqa: E402
from mtarcface_tf.results import report_result  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("runs", 5, "Quick demo runs.")
flags.DEFINE_integer("steps", 0, "Training steps per model (0: the quick demo's own).")
flags.DEFINE_bool("full", False, "Run the full demo (make demo) instead of the quick one.")

MODELS = ("ArcFace", "MTArcFace")


def demo_run(output_dir, quick, seed):
    """Runs one demo into ``output_dir``; returns (its headline figures, recognition dict, seconds)."""
    summary = demo.run_demo(output_dir, quick=quick, seed=seed)
    return demo.headline_figures(summary["reports"]), summary["recognition"], summary["seconds"]


def spread(runs, keys):
    """Returns {key path: [min, mean, max]} over ``runs`` of each nested figure named by ``keys`` (tuples)."""
    out = {}
    for path in keys:
        values = []
        for run in runs:
            value = run
            for key in path:
                value = value[key]
            values.append(value)
        out["/".join(path)] = [round(min(values), 4), round(statistics.mean(values), 4), round(max(values), 4)]
    return out


def main(argv):
    del argv
    if FLAGS.steps:   # the configs read QUICK when run_demo builds them, before the training children start
        demo_configs.QUICK["steps"] = FLAGS.steps
    steps = demo_configs.QUICK["steps"] if not FLAGS.full else None
    runs = []
    for i in range(FLAGS.runs):
        with tempfile.TemporaryDirectory() as tmp:
            figures, recognition, seconds = demo_run(tmp, not FLAGS.full, seed=i)
        accuracy = {m: {v: round(figures[m][v]["accuracy"], 4) for v in PAPER_VARIANTS} for m in MODELS}
        tar = {m: {v: round(figures[m][v]["tar"], 4) for v in PAPER_VARIANTS} for m in MODELS}
        drops = {m: round(demo.mask_accuracy_drop(figures[m]), 4) for m in MODELS}
        margin = round(drops["ArcFace"] - drops["MTArcFace"], 4)
        runs.append(dict(seed=i, accuracy=accuracy, tar=tar, drop=drops, margin=margin, seconds=round(seconds, 1),
                         identified=round(recognition["identified"], 4),
                         identified_of_found=round(recognition["identified_of_found"], 4)))
        print(f"run {i + 1}: drop ArcFace {drops['ArcFace']:.3f}, MTArcFace {drops['MTArcFace']:.3f}, "
              f"margin {margin:+.3f} ({seconds:.0f} s)", flush=True)
    margins = [r["margin"] for r in runs]
    keys = [(kind, m, v) for kind in ("accuracy", "tar") for m in MODELS for v in PAPER_VARIANTS]
    figures = dict(steps=steps, far=demo_configs.DEMO_FAR, runs=runs, positive_runs=sum(m > 0 for m in margins),
                   min_margin=min(margins), mean_margin=round(statistics.mean(margins), 4),
                   stdev_margin=round(statistics.stdev(margins), 4) if len(margins) > 1 else None,
                   spread=spread(runs, keys + [("identified",), ("identified_of_found",)]))
    name = "demo_runs" if FLAGS.full else "quick_demo" if not FLAGS.steps else f"quick_demo_{steps}"
    report_result(name, figures)


if __name__ == "__main__":
    app.run(main)
