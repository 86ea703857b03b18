"""IJB 1:N identification (mtarcface_tf.eval.ijb_1n): the protocol at IJB-C's size against the loop transcription of
insightface's ijb_1n.py, exact against ANN search, and trained models on a synthetic IJB set.

  PYTHONPATH=. python bench/ijb_1n.py --workdirs=ArcFace=DEMO/quick/arcface,MTArcFace=DEMO/quick/mtarcface
  PYTHONPATH=. python bench/ijb_1n.py --quick          # a tenth of the probes, no models

Part 1, IJB-C's 1:N layout on random features: 1,772 + 1,759 gallery templates (G1 + G2), 19,593 probe_mixed
templates, 512-d unit rows; identity centres uniform on the sphere and each probe its subject's centre plus noise,
its cosine with its mate normal(``--mated_cosine``, ``--mated_spread``). The closed set through the exact index
(float32) must give the transcription's top-k and TPIR (float64 matmul, full argsort, heapq); each is timed. Then
the whole evaluation (closed set and both galleries' open set) of the first ``--ann_probes`` probes through each ANN
backend (one thread: a multi-threaded HNSW build differs from run to run), against exact, in points (the ANN's
candidate re-ranking is slow in Python: all probes would take minutes).

Part 2, with ``--workdirs``: a synthetic IJB-C set from tools/make_ijb_synth.py's generator (``--identities``,
three templates each, ``--set_seed``), each model's faces embedded once (flip test), then the clean and masked
probe protocols through the exact and the ANN index.

Prints lines, then ONE JSON line, saved to docs/results/ijb_1n.json (ijb_1n_quick.json with --quick).
"""
import json
import os
import tempfile
import time

from mtarcface_tf.quiet import quiet_tensorflow

quiet_tensorflow()  # first: TensorFlow's log lines off (--verbosity=0 or MTARCFACE_TF_LOGS=1 bring them back)

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_bool("quick", False, "A tenth of the probes; no models.")
flags.DEFINE_integer("dim", 512, "Embedding size.")
flags.DEFINE_float("mated_cosine", 0.3, "Mean cosine of a probe with its mate (IJB-like difficulty).")
flags.DEFINE_float("mated_spread", 0.1, "Standard deviation of a probe's cosine with its mate.")
flags.DEFINE_integer("ann_probes", 2000, "Probes (the first ones) of the exact-against-ANN comparison.")
flags.DEFINE_list("workdirs", [], "NAME=WORKDIR of trained models for part 2 (e.g. the quick demo's).")
flags.DEFINE_integer("identities", 40, "Identities of the synthetic IJB set of part 2.")
flags.DEFINE_integer("set_seed", 1, "Seed of the synthetic IJB set of part 2.")
flags.DEFINE_list("backends", ["faiss-ivf", "usearch"], "ANN backends compared with exact search.")

GALLERY = {"G1": 1772, "G2": 1759}   # IJB-C 1:N gallery templates
PROBES = 19593                       # IJB-C probe_mixed templates


def _random_layout(rng, probes):
    import numpy as np
    size = sum(GALLERY.values())
    centres = rng.normal(size=(size, FLAGS.dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    mates = rng.integers(0, size, probes)
    noise = rng.normal(size=(probes, FLAGS.dim))
    noise -= np.sum(noise * centres[mates], 1, keepdims=True) * centres[mates]   # orthogonal to the centre
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    cosine = np.clip(rng.normal(FLAGS.mated_cosine, FLAGS.mated_spread, (probes, 1)), -0.9, 0.99)
    queries = cosine * centres[mates] + np.sqrt(1 - cosine ** 2) * noise
    return centres, queries, mates


def _points(exact, ann):
    """Largest difference in points (x100) between two ``identify`` results, over every reported rate."""
    pairs = [(exact["closed"]["top"], ann["closed"]["top"]), (exact["closed"]["tpir"], ann["closed"]["tpir"])]
    pairs += [(exact["open"][part]["fnir"], ann["open"][part]["fnir"]) for part in exact["open"]]
    return round(100 * max(abs(a[key] - b[key]) for a, b in pairs for key in a), 4)


def _rates(result):
    closed = result["closed"]
    return dict(top={str(k): round(v, 4) for k, v in closed["top"].items()},
                tpir={f"{k:.0e}": round(v, 4) for k, v in closed["tpir"].items()},
                fnir={part: {f"{k:.0e}": round(v, 4) for k, v in scores["fnir"].items()}
                      for part, scores in result["open"].items()})


def protocol_scale(ref1n):
    import numpy as np
    from mtarcface_tf.eval import ijb_1n
    probes = PROBES // (10 if FLAGS.quick else 1)
    centres, queries, mates = _random_layout(np.random.default_rng(0), probes)
    start = time.perf_counter()
    expected = ref1n.evaluation(queries, centres, list(mates))
    loop_s = time.perf_counter() - start
    start = time.perf_counter()
    ours = ijb_1n.closed_set(ijb_1n.GallerySearch(centres), len(centres), queries, mates)
    exact_s = time.perf_counter() - start
    identical = ([ours["top"][r] for r in (1, 5, 10)] == [expected[f"top{r}"] for r in (1, 5, 10)]
                 and [ours["tpir"][f] for f in ref1n.FARS] == [expected[f][0] for f in ref1n.FARS])
    print(f"closed set, {probes} probes x {len(centres)} templates: identical to the transcription: {identical}; "
          f"transcription {loop_s:.1f} s, exact index {exact_s:.2f} s ({ours['searches']} searches)")
    queries, mates = queries[:FLAGS.ann_probes], mates[:FLAGS.ann_probes]
    split = np.arange(len(centres)) < GALLERY["G1"]
    galleries = {"G1": (centres[split], np.flatnonzero(split)), "G2": (centres[~split], np.flatnonzero(~split))}
    start = time.perf_counter()
    exact = ijb_1n.identify(galleries, queries, mates, "exact")
    exact_rates = dict(_rates(exact), seconds=round(time.perf_counter() - start, 2))
    figures = dict(probes=probes, gallery=GALLERY, dim=FLAGS.dim, mated_cosine=FLAGS.mated_cosine,
                   mated_spread=FLAGS.mated_spread, ann_probes=len(queries), identical=identical,
                   transcription_s=round(loop_s, 2), exact_closed_set_s=round(exact_s, 3),
                   speedup=round(loop_s / exact_s, 1), exact=exact_rates, ann={})
    for backend in FLAGS.backends:
        start = time.perf_counter()
        ann = ijb_1n.identify(galleries, queries, mates, "ann", dict(backend=backend, threads=1))
        seconds = time.perf_counter() - start
        figures["ann"][backend] = dict(_rates(ann), seconds=round(seconds, 2), max_points=_points(exact, ann))
        print(f"ANN {backend}: largest difference from exact {_points(exact, ann):.3f} points, top-1 "
              f"{100 * ann['closed']['top'][1]:.2f}% (exact {100 * exact['closed']['top'][1]:.2f}%), {seconds:.1f} s")
    return figures


def models(root):
    from mtarcface_tf.eval import ijb, ijb_1n
    from mtarcface_tf.export.embedder import make_embed_fn
    meta, lists = ijb.read_faces(root, "IJBC"), ijb_1n.read_lists(root, "IJBC")
    gallery_faces, probe_faces = ijb_1n.used_faces(meta, lists)
    out = {}
    for entry in FLAGS.workdirs:
        name, workdir = entry.split("=", 1)
        embed_fn = make_embed_fn(workdir)
        size = embed_fn.input_size
        features = [ijb.face_features(embed_fn, root, meta, faces, 128, True, seed, size)
                    for faces, seed in ((gallery_faces, None), (probe_faces, None), (probe_faces, 0))]
        kinds = {"exact": {}, **{f"ann-{b}": dict(backend=b, threads=1) for b in FLAGS.backends}}
        results = {kind: ijb_1n.evaluate_features(meta, lists, *features, index_kind=kind.split("-")[0],
                                                  index_options=options) for kind, options in kinds.items()}
        out[name] = {protocol: _rates(result) for protocol, result in results["exact"].items()}
        out[name]["ann_max_points"] = {kind: max(_points(results["exact"][p], results[kind][p]) for p in results[kind])
                                       for kind in kinds if kind != "exact"}
        for protocol, rates in out[name].items():
            print(f"{name} {protocol}: {rates}")
    return out


def main(argv):
    del argv
    from tests.support import ijb_1n_reference as ref1n
    from mtarcface_tf.data.ijb_synth import generate_ijb
    from mtarcface_tf.results import save_result
    figures = dict(protocol_scale=protocol_scale(ref1n))
    if FLAGS.workdirs and not FLAGS.quick:
        with tempfile.TemporaryDirectory() as tmp:
            info = generate_ijb(os.path.join(tmp, "IJBC"), "IJBC", identities=FLAGS.identities,
                                templates_per_identity=3, impostors_per_template=10, seed=FLAGS.set_seed)
            figures["synthetic_set"] = dict(identities=FLAGS.identities, faces=info["faces"], probes=info["probes"],
                                            seed=FLAGS.set_seed, models=models(info["root"]))
    save_result("ijb_1n_quick" if FLAGS.quick else "ijb_1n", figures)
    print(json.dumps(figures))


if __name__ == "__main__":
    app.run(main)
