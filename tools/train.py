"""Trains MTArcFace (or the ArcFace baseline) from a config; rerunning the same command resumes.

  python tools/train.py --config=configs/tiny.py --workdir=runs/tiny
  python tools/train.py --config=configs/paper.py --workdir=runs/paper --config.data.train=/data/ms1mv2

Overrides: --config.KEY=VALUE (e.g. --config.batch_size=256 --config.optimizer.learning_rate=0.001).
SIGTERM/SIGINT save a checkpoint after the current step and exit cleanly.
"""
import json
import logging
import sys

from mtarcface_tf.quiet import quiet_tensorflow

quiet_tensorflow()  # first: TensorFlow's log lines off (--verbosity=0 or MTARCFACE_TF_LOGS=1 bring them back)

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory of checkpoints, TensorBoard logs and config.json.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    logging.getLogger("mtarcface_tf").setLevel(logging.INFO)
    from mtarcface_tf.train.checkpoints import CheckpointError
    from mtarcface_tf.train.trainer import TrainingError, train_and_evaluate
    try:
        results = train_and_evaluate(FLAGS.config, FLAGS.workdir)
    except (TrainingError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps({k: v for k, v in results.items() if isinstance(v, (int, float, bool))}, sort_keys=True))


if __name__ == "__main__":
    app.run(main)
