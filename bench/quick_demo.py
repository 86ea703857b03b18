"""Benchmark: how surely the quick demo shows the paper's claim (the margin tests/test_demo.py relies on).

  python bench/quick_demo.py [--runs=5] [--steps=0]

Runs the quick demo (`tools/demo.py --quick`) ``--runs`` times, one after the other, each in a new temporary
directory (SynthFaces made afresh, both models trained from scratch: runs differ by tf.data order and thread
scheduling), and reports per run each model's clean / masked / mixed accuracy and its mask accuracy drop
(demo.mask_accuracy_drop: clean - masked plus clean - mixed, on the same pairs), and the margin: ArcFace's drop
minus MTArcFace's. tests/test_demo.py asserts the margin is positive, so the smallest margin and the mean and spread
say how often it could fail by chance. ``--steps`` overrides the quick run's steps (0: the configs' QUICK steps).
Prints a line per run, then ONE JSON line, saved as docs/results/quick_demo.json (quick_demo_STEPS.json with
--steps).
"""
import json
import statistics
import tempfile

from absl import app, flags

from mtarcface_tf import demo
from mtarcface_tf.configs import demo as demo_configs
from mtarcface_tf.results import save_result

FLAGS = flags.FLAGS
flags.DEFINE_integer("runs", 5, "Quick demo runs.")
flags.DEFINE_integer("steps", 0, "Training steps per model (0: the quick demo's own).")

MODELS = ("ArcFace", "MTArcFace")


def quick_run(output_dir):
    """Runs one quick demo into ``output_dir``; returns (its headline figures, seconds)."""
    summary = demo.run_demo(output_dir, quick=True)
    return demo.headline_figures(summary["reports"]), summary["seconds"]


def main(argv):
    del argv
    if FLAGS.steps:   # the configs read QUICK when run_demo builds them, before the training children start
        demo_configs.QUICK["steps"] = FLAGS.steps
    steps = demo_configs.QUICK["steps"]
    runs = []
    for i in range(FLAGS.runs):
        with tempfile.TemporaryDirectory() as tmp:
            figures, seconds = quick_run(tmp)
        accuracy = {m: {v: round(figures[m][v]["accuracy"], 4) for v in ("clean", "masked", "mixed")} for m in MODELS}
        drops = {m: round(demo.mask_accuracy_drop(figures[m]), 4) for m in MODELS}
        margin = round(drops["ArcFace"] - drops["MTArcFace"], 4)
        runs.append(dict(accuracy=accuracy, drop=drops, margin=margin, seconds=round(seconds, 1)))
        print(f"run {i + 1}: drop ArcFace {drops['ArcFace']:.3f}, MTArcFace {drops['MTArcFace']:.3f}, "
              f"margin {margin:+.3f} ({seconds:.0f} s)", flush=True)
    margins = [r["margin"] for r in runs]
    figures = dict(steps=steps, runs=runs, min_margin=min(margins), mean_margin=round(statistics.mean(margins), 4),
                   stdev_margin=round(statistics.stdev(margins), 4) if len(margins) > 1 else None)
    print(f"saved {save_result('quick_demo' if not FLAGS.steps else f'quick_demo_{steps}', figures)}")
    print(json.dumps(figures))


if __name__ == "__main__":
    app.run(main)
