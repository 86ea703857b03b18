"""Writes a small IJB-B/C-format set from SynthFaces (loose crops, landmarks, detection scores, media, templates,
template pairs and, with two or more templates per identity, the 1:N gallery G1 / G2 and probe_mixed lists), the
layout tools/evaluate.py --ijb reads.

  python tools/make_ijb_synth.py --output_dir=data/ijbc_synth --name=IJBC --identities=20
  python tools/evaluate.py --workdir=runs/tiny --ijb=data/ijbc_synth --ijb_name=IJBC --output_dir=reports/tiny
"""
import sys

from mtarcface_tf.quiet import quiet_tensorflow

quiet_tensorflow()  # first: TensorFlow's log lines off (--verbosity=0 or MTARCFACE_TF_LOGS=1 bring them back)

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", None, "Folder to create (meta/, loose_crop/); must not exist.")
flags.DEFINE_enum("name", "IJBC", ["IJBB", "IJBC"], "Prefix of the meta files (ijbb_* or ijbc_*).")
flags.DEFINE_integer("identities", 20, "Identities (at least 2).")
flags.DEFINE_integer("templates_per_identity", 3, "Templates per identity.")
flags.DEFINE_integer("media_per_template", 2, "Media (photos / videos) per template.")
flags.DEFINE_integer("max_faces_per_media", 3, "Faces per media: 1 to this many.")
flags.DEFINE_integer("impostors_per_template", 10, "Different-identity pairs drawn per template.")
flags.DEFINE_integer("seed", 0, "Seed of the faces, poses, scores and pairs.")
flags.mark_flag_as_required("output_dir")


def main(argv):
    del argv
    from mtarcface_tf.data.ijb_synth import generate_ijb
    try:
        info = generate_ijb(FLAGS.output_dir, FLAGS.name, FLAGS.identities, FLAGS.templates_per_identity,
                            FLAGS.media_per_template, FLAGS.max_faces_per_media, FLAGS.impostors_per_template,
                            seed=FLAGS.seed)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    print(f"wrote {info['faces']} faces, {info['templates']} templates, {info['pairs']} pairs, {info['probes']} 1:N "
          f"probe templates in {info['root']}")


if __name__ == "__main__":
    app.run(main)
