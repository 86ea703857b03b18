"""IJB template pooling, scoring and TAR@FAR: mtarcface_tf.eval.ijb (vectorised) vs a loop transcription of
insightface's eval_ijbc.py (tests/support/ijb_reference.py), on random features of an IJB-C-sized layout. Run from
the repository root with it on the path (the transcription is test support, imported as tests.support):

  PYTHONPATH=. python bench/ijb.py            # IJB-C's 469,375 faces and 23,124 templates, 150k media, 1M pairs
  PYTHONPATH=. python bench/ijb.py --quick    # a tenth of that

Goal: >= 10x faster in total (pooling + scores + TAR@FAR), with identical scores and TAR@FAR. The script's pair
scoring is already vectorised (100k-pair chunks); ours computes the same float64 products and sums (the same bits),
in template order and cache-sized chunks, with a lookup table instead of a binary search. Prints lines, then ONE JSON
line, saved to docs/results/ijb.json (ijb_quick.json with --quick).
"""
import time

from mtarcface_tf.quiet import quiet_tensorflow

quiet_tensorflow()  # first: TensorFlow's log lines off (--verbosity=0 or MTARCFACE_TF_LOGS=1 bring them back)

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_bool("quick", False, "A tenth of the size.")
flags.DEFINE_integer("dim", 128, "Embedding size (small: the loops' cost does not depend on it, memory does).")
flags.DEFINE_integer("faces", 469_375, "Faces (IJB-C: 469,375).")
flags.DEFINE_integer("templates", 23_124, "Templates (IJB-C: 23,124).")
flags.DEFINE_integer("media", 150_000, "Media.")
flags.DEFINE_integer("pairs", 1_000_000, "Template pairs (IJB-C: 15,658,489).")


def _layout(rng, faces, templates, media, pairs):
    import numpy as np
    # As in IJB: each media (a photo or a video) belongs to one template and holds one or several faces.
    template_of_media = rng.integers(1, templates + 1, media + 1)
    medias = rng.integers(1, media + 1, faces)
    return dict(templates=template_of_media[medias], medias=medias,
                features=rng.normal(size=(faces, 2 * FLAGS.dim)).astype(np.float32),
                scores=rng.uniform(0.3, 1, faces).astype(np.float32),
                pairs=rng.integers(1, templates + 1, (pairs, 2)), labels=rng.integers(0, 2, pairs))


def main(argv):
    del argv
    import numpy as np
    from tests.support import ijb_reference as ref
    from mtarcface_tf.eval import ijb
    from mtarcface_tf.results import report_result

    scale = 10 if FLAGS.quick else 1
    sizes = dict(faces=FLAGS.faces // scale, templates=FLAGS.templates // scale, media=FLAGS.media // scale,
                 pairs=FLAGS.pairs // scale)
    data = _layout(np.random.default_rng(0), **sizes)
    data["pairs"] = data["pairs"][np.all(np.isin(data["pairs"], data["templates"]), axis=1)]
    data["labels"] = data["labels"][:len(data["pairs"])]
    dim = FLAGS.dim

    timings = {}

    def timed(key, function, *args):
        start = time.perf_counter()
        result = function(*args)
        timings[key] = time.perf_counter() - start
        return result

    flip_sum = data["features"][:, :dim] + data["features"][:, dim:]
    weighted = ijb.weight_features(flip_sum, data["scores"])
    ours_feats, ours_unique = timed("vectorised_pooling_s", ijb.template_features, weighted, data["templates"],
                                    data["medias"])
    ours_scores = timed("vectorised_scores_s", ijb.pair_scores, ours_feats, ours_feats, ours_unique, data["pairs"])
    ours_table = timed("vectorised_table_s", ijb.tar_at_far, data["labels"], ours_scores)["tar"]

    feats = ref.combine(data["features"], data["scores"])
    ref_feats, ref_unique = timed("loop_pooling_s", ref.image2template_feature, feats, data["templates"],
                                  data["medias"])
    ref_scores = timed("loop_scores_s", ref.verification, ref_feats, ref_feats, ref_unique, data["pairs"][:, 0],
                       data["pairs"][:, 1])
    ref_table = timed("loop_table_s", ref.tpr_fpr_row, data["labels"], ref_scores)

    identical = bool(np.array_equal(ours_scores, ref_scores) and list(ours_table.values()) == ref_table)
    figures = dict(sizes, pairs=len(data["pairs"]), dim=dim, identical=identical,
                   **{key: round(value, 3) for key, value in timings.items()})
    for part in ("pooling", "scores", "table"):
        figures[f"speedup_{part}"] = round(timings[f"loop_{part}_s"] / timings[f"vectorised_{part}_s"], 1)
        print(f"{part}: vectorised {timings[f'vectorised_{part}_s']:.2f} s, loop transcription "
              f"{timings[f'loop_{part}_s']:.2f} s (x{figures[f'speedup_{part}']})")
    loop_total = sum(v for k, v in timings.items() if k.startswith("loop"))
    vector_total = sum(v for k, v in timings.items() if k.startswith("vectorised"))
    figures["speedup_total"] = round(loop_total / vector_total, 1)
    figures["speedup_loops"] = round((timings["loop_pooling_s"] + timings["loop_table_s"])
                                     / (timings["vectorised_pooling_s"] + timings["vectorised_table_s"]), 1)
    print(f"{sizes['faces']} faces, {sizes['templates']} templates, {len(data['pairs'])} pairs: total x"
          f"{figures['speedup_total']} (the script's scoring is already vectorised, in 100k-pair chunks: the same "
          f"here), its loops x{figures['speedup_loops']}; identical scores and TAR@FAR: {identical}")
    report_result("ijb_quick" if FLAGS.quick else "ijb", figures)


if __name__ == "__main__":
    app.run(main)
