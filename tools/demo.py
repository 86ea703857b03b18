"""The main job on the embedded SynthFaces: train ArcFace and MTArcFace, evaluate clean/masked/mixed, export,
recognize masked people. `make demo` runs it: 5 to 8 minutes on 2 idle CPU cores (README names the CPUs;
`--quick`: a 2-minute smoke run).

  python tools/demo.py [--output_dir=runs/demo] [--quick] [--sequential] [--all_baselines]
"""
import os
import sys

from mtarcface_tf.quiet import quiet_tensorflow

quiet_tensorflow()  # first: TensorFlow's log lines off (--verbosity=0 or MTARCFACE_TF_LOGS=1 bring them back)

from absl import app, flags  # noqa: E402

from mtarcface_tf.data.synthetic import SyntheticDataError  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", "runs/demo", "Where every artefact goes (SynthFaces, workdirs, reports, export).")
flags.DEFINE_bool("quick", False, "Tiny data and few steps: checks that everything runs (numbers mean little).")
flags.DEFINE_bool("sequential", False, "Train the models one after the other instead of side by side.")
flags.DEFINE_bool("all_baselines", False, "Also train ArcFace+focal and FaceNet's triplet loss on the same data "
                                          "(four models side by side: about four times the default run).")
flags.DEFINE_string("save_result", "", "Also keep the figures as docs/results/NAME.json (command, date, machine, "
                                       "load, git revision), e.g. --save_result=demo for README's table.")


def main(argv):
    del argv
    from mtarcface_tf.demo import recognition_line, run_demo
    try:
        summary = run_demo(FLAGS.output_dir, quick=FLAGS.quick, parallel=not FLAGS.sequential,
                           all_baselines=FLAGS.all_baselines, result_name=FLAGS.save_result)
    except (FileNotFoundError, ValueError, RuntimeError, SyntheticDataError) as error:
        sys.exit(f"error: {error}")
    print()
    print(summary["table"])
    print(recognition_line(summary["recognition"]))
    if "result_file" in summary:
        print(f"Figures kept in {summary['result_file']}")
    print(f"Done in {summary['seconds']:.0f} s. Everything is under {os.path.abspath(summary['output_dir'])} "
          f"(start with report.md).")


if __name__ == "__main__":
    app.run(main)
