"""Imports a checkpoint published by the reference (dmonterom/face_recognition_TF2) as a training workdir.

  python tools/import_reference.py --checkpoint=/data/reference/ckpt --workdir=runs/reference
  python tools/evaluate.py --workdir=runs/reference --bins=/data/lfw.bin,/data/cfp_fp.bin --output_dir=reports/ref
  python tools/train.py --config=configs/finetune_mtarcface.py --workdir=runs/reference ...   # fine-tunes

The workdir holds config.json (configs/finetune_mtarcface.py unless --config is given, with the class count, the
network the checkpoint holds in config.model.norm -- "batch_norm" for the reference's resnet.py, "batch_renorm" for
its resnet_batchRenorm.py -- and reference_import saying what was converted: conv0's input channels reversed so
that the network reads RGB, not the reference's BGR) and checkpoints/ckpt-0 with the model, a fresh optimizer, step
0 and the RNG: what tools/train.py resumes from and what load_model reads. Every variable's shape is checked;
anything that cannot be placed is listed and refused unless --allow_partial.
"""
import sys

from mtarcface_tf.quiet import quiet_tensorflow

quiet_tensorflow()  # first: TensorFlow's log lines off (--verbosity=0 or MTARCFACE_TF_LOGS=1 bring them back)

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("checkpoint", None, "Reference checkpoint prefix (the path without .index).")
flags.DEFINE_string("workdir", None, "New workdir to write config.json and checkpoints/ into.")
flags.DEFINE_integer("num_classes", None, "ArcFace classes (default: the checkpoint's); centres load only when "
                                          "it equals the checkpoint's.")
flags.DEFINE_bool("allow_partial", False, "Leave variables that do not fit freshly initialised instead of failing.")
config_flags.DEFINE_config_file("config", None, "Config of the network and of later fine-tuning "
                                                "(default: configs/finetune_mtarcface.py).")
flags.mark_flags_as_required(["checkpoint", "workdir"])


def main(argv):
    del argv
    from mtarcface_tf.configs import finetune_mtarcface
    from mtarcface_tf.train.reference_import import ReferenceImportError, import_reference
    from mtarcface_tf.train.checkpoints import CheckpointError, save_initial_checkpoint

    config = FLAGS.config if FLAGS.config is not None else finetune_mtarcface.get_config()
    try:
        model, report = import_reference(FLAGS.checkpoint, config, FLAGS.num_classes, FLAGS.allow_partial)
        path = save_initial_checkpoint(model, config, FLAGS.workdir)
    except (ReferenceImportError, CheckpointError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    print(report.summary())
    print(f"wrote {path} (config {FLAGS.workdir}/config.json, {config.num_classes} classes)")


if __name__ == "__main__":
    app.run(main)
