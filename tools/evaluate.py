"""Evaluates a model on verification .bin sets (clean, masked, mixed pairs) and writes a report with plots.

  python tools/evaluate.py --workdir=runs/tiny --bins=lfw.bin,cfp_fp.bin --output_dir=reports/tiny
  python tools/evaluate.py --saved_model=export/1 --bins=lfw.bin --output_dir=OUT \
      --compare=reports/arcface/report.json
  python tools/evaluate.py --workdir=runs/tiny --ijb=data/ijbc --ijb_name=IJBC --output_dir=reports/tiny

--ijb scores IJB-B/IJB-C 1:1 template verification (insightface's eval_ijbc.py protocol) and 1:N identification
(insightface's ijb_1n.py and NIST's per-gallery FNIR at FPIR; docs/ijb.md), clean and with masked probes;
tools/make_ijb_synth.py writes a small such set from SynthFaces.

Writes OUTPUT_DIR/report.md, report.json (with recommended_threshold for applications) and PNG plots.
"""
import sys

from mtarcface_tf.quiet import quiet_tensorflow

quiet_tensorflow()  # first: TensorFlow's log lines off (--verbosity=0 or MTARCFACE_TF_LOGS=1 bring them back)

from absl import app, flags  # noqa: E402

from mtarcface_tf.eval import ijb  # noqa: E402
from mtarcface_tf.eval.run import evals_config, evaluate_source  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Training workdir or checkpoint to evaluate.")
flags.DEFINE_string("saved_model", None, "SavedModel directory to evaluate (instead of --workdir).")
flags.DEFINE_list("bins", [], "Verification .bin files (insightface format).")
flags.DEFINE_string("ijb", None, "IJB-B/C folder (meta/, loose_crop/): 1:1 template verification, clean and masked.")
flags.DEFINE_enum("ijb_name", "IJBC", list(ijb.NAMES), "Which IJB set --ijb holds (the meta files' prefix).")
flags.DEFINE_boolean("ijb_1n", True, "With --ijb, also 1:N identification (the set's meta/*_1N_*.csv lists).")
flags.DEFINE_enum("ijb_index", "exact", ["exact", "ann", "auto"], "Search index of the 1:N protocols.")
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
    from mtarcface_tf.data.bin_pairs import UnsafeFileError
    return (ValueError, OSError, UnsafeFileError, ijb.IJBDataError)


def main(argv):
    del argv
    try:
        evals = evals_config(FLAGS.bins, FLAGS.ijb, FLAGS.ijb_name, FLAGS.far, masked=not FLAGS.no_masked,
                             flip=FLAGS.flip, batch_size=FLAGS.batch_size, seed=FLAGS.seed,
                             identification=FLAGS.ijb_1n, index=FLAGS.ijb_index)
        _, lines = evaluate_source(FLAGS.saved_model or FLAGS.workdir, FLAGS.output_dir, evals, far=FLAGS.far,
                                   compare=FLAGS.compare, model_name=FLAGS.model_name)
    except _user_errors() as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    print("\n".join(line for line in lines if line))


if __name__ == "__main__":
    app.run(main)
