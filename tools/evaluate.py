"""Evaluates a model on verification .bin sets (clean, masked, mixed pairs) and writes a report with plots.

  python tools/evaluate.py --workdir=runs/tiny --bins=lfw.bin,cfp_fp.bin --output_dir=reports/tiny
  python tools/evaluate.py --saved_model=export/1 --bins=lfw.bin --output_dir=OUT \
      --compare=reports/arcface/report.json
  python tools/evaluate.py --workdir=runs/tiny --ijb=data/ijbc --ijb_name=IJBC --output_dir=reports/tiny

--ijb scores IJB-B/IJB-C 1:1 template verification (insightface's eval_ijbc.py protocol), clean and with masked
probes; tools/make_ijb_synth.py writes a small such set from SynthFaces.

Writes OUTPUT_DIR/report.md, report.json (with recommended_threshold for applications) and PNG plots.
"""
import itertools
import os
import sys

from absl import app, flags, logging

from mtarcface_tf.eval import evaluator, ijb, report
from mtarcface_tf.export.embedder import make_embed_fn

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Training workdir or checkpoint to evaluate.")
flags.DEFINE_string("saved_model", None, "SavedModel directory to evaluate (instead of --workdir).")
flags.DEFINE_list("bins", [], "Verification .bin files (insightface format).")
flags.DEFINE_string("ijb", None, "IJB-B/C folder (meta/, loose_crop/): 1:1 template verification, clean and masked.")
flags.DEFINE_enum("ijb_name", "IJBC", list(ijb.NAMES), "Which IJB set --ijb holds (the meta files' prefix).")
flags.DEFINE_string("output_dir", None, "Where report.md, report.json and the plots go.")
flags.DEFINE_float("far", 1e-3, "False-accept rate of TAR@FAR and of the recommended threshold.")
flags.DEFINE_list("compare", [], "Other report.json files to put side by side with this one.")
flags.DEFINE_boolean("no_masked", False, "Evaluate clean pairs only (no masked / mixed variants).")
flags.DEFINE_boolean("flip", True, "Also report the flip test (embedding of image + mirror).")
flags.DEFINE_integer("batch_size", 128, "Images per model call.")
flags.DEFINE_integer("seed", 0, "Seed of the masks painted onto the pairs.")
flags.DEFINE_string("model_name", "", "Name of the model in the tables (default: the source's directory name).")
flags.mark_flags_as_required(["output_dir"])
flags.mark_flags_as_mutual_exclusive(["workdir", "saved_model"], required=True)


def _user_errors():
    from mtarcface_tf.data import UnsafeFileError
    return (ValueError, OSError, UnsafeFileError, ijb.IJBDataError)


def _run():
    if not FLAGS.bins and not FLAGS.ijb:
        raise ValueError("nothing to evaluate: give --bins=A.bin,B.bin and/or --ijb=IJB_FOLDER")
    source = FLAGS.saved_model or FLAGS.workdir
    model_name = FLAGS.model_name or os.path.basename(os.path.normpath(source))
    compare = {}
    for path in FLAGS.compare:
        other = report.load_report(path)
        compare[other["model"] or os.path.basename(os.path.dirname(os.path.abspath(path)))] = other
    embed_fn = make_embed_fn(source)
    scorer = evaluator.VerificationEvaluator(FLAGS.bins, masked=not FLAGS.no_masked, flip=FLAGS.flip,
                                             batch_size=FLAGS.batch_size, seed=FLAGS.seed, far=FLAGS.far)
    ijb_scorer = ijb.IJBEvaluator(FLAGS.ijb or "", FLAGS.ijb_name, masked=not FLAGS.no_masked, flip=FLAGS.flip,
                                  batch_size=FLAGS.batch_size, seed=FLAGS.seed)
    for name, value in itertools.chain(scorer.run(embed_fn), ijb_scorer.run(embed_fn) if FLAGS.ijb else ()):
        logging.info("%s = %.5f", name, value)
    written = report.write_report(scorer.results, FLAGS.output_dir, FLAGS.far, compare, model_name,
                                  ijb=ijb_scorer.results)
    if FLAGS.bins:
        print(report.compare_table({model_name: written}))
    print(report.ijb_table(written))
    print(f"report written to {os.path.join(FLAGS.output_dir, 'report.md')}")


def main(argv):
    del argv
    try:
        _run()
    except _user_errors() as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
