"""Generates (or reuses) a SynthFaces data set: training TFRecords + a verification .bin of disjoint identities.

  python tools/make_synthfaces.py --output_dir=data/synthfaces --identities=400 --images_per_identity=30 \
      --eval_identities=150 --eval_pairs=2000 --image_size=64

A directory that already holds a data set made with the same flags is reused as it is; one made with other
flags is refused (use another --output_dir or delete it).
"""
import sys

from mtarcface_tf.quiet import quiet_tensorflow

quiet_tensorflow()  # first: TensorFlow's log lines off (--verbosity=0 or MTARCFACE_TF_LOGS=1 bring them back)

from absl import app, flags  # noqa: E402

from mtarcface_tf.data import synthetic  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", None, "Directory of train/ (TFRecords + manifest), synth.bin and synthfaces.json.")
flags.DEFINE_integer("identities", 400, "Training identities (labels 0..identities-1).")
flags.DEFINE_integer("images_per_identity", 30, "Training images per identity.")
flags.DEFINE_integer("eval_identities", 150, "Identities of the verification pairs, disjoint from training.")
flags.DEFINE_integer("eval_pairs", 2000, "Verification pairs (half same identity); 0: no .bin.")
flags.DEFINE_integer("image_size", 112, "Side of the faces (rendered at 112, area-downsampled when smaller).")
flags.DEFINE_integer("seed", 1234, "Seed of every identity and image.")
flags.DEFINE_integer("num_shards", 2, "TFRecord shards.")
flags.DEFINE_integer("workers", 2, "Rendering processes.")
flags.mark_flag_as_required("output_dir")


def main(argv):
    del argv
    try:
        result = synthetic.generate_dataset(
            FLAGS.output_dir, FLAGS.identities, FLAGS.images_per_identity, FLAGS.eval_identities, FLAGS.eval_pairs,
            image_size=FLAGS.image_size, seed=FLAGS.seed, num_shards=FLAGS.num_shards, workers=FLAGS.workers,
            command=" ".join(sys.argv))
    except synthetic.SyntheticDataError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    except OSError as err:
        print(f"error: {err.filename or FLAGS.output_dir}: {err.strerror or err}; choose a writable --output_dir.",
              file=sys.stderr)
        sys.exit(1)
    state = "reused" if result["cached"] else "wrote"
    print(f"{state} {result['images']} training faces of {result['identities']} identities in {result['train']}")
    for name, path in result["bins"].items():
        print(f"{state} {FLAGS.eval_pairs} verification pairs ({name}) in {path}")


if __name__ == "__main__":
    app.run(main)
