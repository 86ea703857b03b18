"""A rehearsal of the paper's whole run at reduced scale, in one command (`make rehearse`; docs/paper_run.md).

  python tools/rehearse.py [--output_dir=runs/rehearsal] [--identities=200] [--steps=30] [--save_result=rehearsal]

Writes an MS1MV2-format set (insightface's faces_emore: train.rec / train.idx / property, lfw.bin, cfp_fp.bin,
agedb_30.bin) from SynthFaces, then runs each stage of the real run as docs/paper_run.md documents it: convert,
landmarks, train configs/paper.py (only steps, batch and data paths overridden), evaluate clean / masked / mixed,
export SavedModel and ONNX, enroll and identify masked people. Prints each stage's time and throughput here and the
same stage extrapolated to the full run on this machine and, on paper, on 1 and 8 H100/H200-class GPUs, with the GPU
memory per replica the paper's batch needs; docs/paper_run.md gives the measured duration.
"""
import os
import sys

from mtarcface_tf.quiet import quiet_tensorflow

quiet_tensorflow()  # first: TensorFlow's log lines off, here and in the spawned workers that import this module again

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", "runs/rehearsal", "Where everything goes; must not exist or be empty.")
flags.DEFINE_integer("identities", 200, "Training identities of the reduced MS1MV2.")
flags.DEFINE_integer("images_per_identity", 20, "Crops per training identity.")
flags.DEFINE_integer("pairs", 50, "Pairs in each of lfw.bin, cfp_fp.bin and agedb_30.bin.")
flags.DEFINE_integer("steps", 30, "Training steps (configs/paper.py's config.num_steps).")
flags.DEFINE_integer("batch_size", 16, "Global training batch (configs/paper.py's config.batch_size).")
flags.DEFINE_integer("workers", 2, "Processes of the conversion and landmark stages (tools/convert.py --workers).")
flags.DEFINE_string("save_result", "", "Also keep the figures as docs/results/NAME.json, e.g. --save_result=rehearsal.")


def main(argv):
    del argv
    from mtarcface_tf.data.shards import ConversionError
    from mtarcface_tf.rehearsal import Scale, run_rehearsal
    from mtarcface_tf.train.trainer import TrainingError
    scale = Scale(identities=FLAGS.identities, images_per_identity=FLAGS.images_per_identity, pairs=FLAGS.pairs,
                  steps=FLAGS.steps, batch_size=FLAGS.batch_size, workers=FLAGS.workers)
    try:
        summary = run_rehearsal(FLAGS.output_dir, scale, result_name=FLAGS.save_result)
    except (ValueError, OSError, ConversionError, TrainingError) as error:
        sys.exit(f"error: {error}")
    if "result_file" in summary:
        print(f"Figures kept in {summary['result_file']}")
    print(f"Done in {summary['seconds'] / 60:.1f} min. Everything is under {os.path.abspath(FLAGS.output_dir)}.")


if __name__ == "__main__":
    app.run(main)
