"""Gallery bench: enrolment throughput, index build, RAM, query latency and recall of exact and ANN search.

  PYTHONPATH=. python bench/gallery.py --sizes=10000,100000,1000000 --save_result=gallery

Synthetic embeddings shaped like a face model's: identity centres on the unit sphere (D=512), drawn from a
Gaussian whose per-axis variance falls as ``i^-(--spectrum_decay)`` (real embeddings are not isotropic; 0.5 gives
impostor cosines of std ~0.06, close to trained face models' 0.05-0.08); every enrolment or probe embedding is
``a * centre + sqrt(1 - a^2) * u`` with ``u`` a random unit direction of the same spectrum made orthogonal to the
centre and ``a``, its cosine to the centre, drawn per sample from N(--centre_cosine, --centre_cosine_std). Two
images of one person then have a cosine of about ``a1 * a2`` (mean ~0.52 by default). The store is enrolled
through ``GalleryStore.enroll_many`` (SQLite + index, embedding time excluded: the vectors are given). Probes: mated
(a fresh sample of an enrolled person) and non-mated (a person never enrolled). For each size: enrolment people/s,
ANN build seconds, RSS and index bytes, latency p50/p99 of one query and per query in batches of 64 (exact and ANN),
recall@1 / @10 of the ANN against exact search (all probes, mated, non-mated), and TPIR (rank 1) at FPIR 0.01 of
both. ``--compare_size`` runs the ANN libraries side by side on one gallery (no store); ``--templates_size``
compares a mean template per person with max-over-images on several images per person. The last line printed is JSON.
"""
import importlib.util
import json
import os
import resource
import shutil
import sys
import tempfile
import time
import types

from mtarcface_tf.quiet import quiet_tensorflow

quiet_tensorflow()  # first: TensorFlow's log lines off (--verbosity=0 or MTARCFACE_TF_LOGS=1 bring them back)

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from mtarcface_tf.configs import demo as demo_configs  # noqa: E402
from mtarcface_tf.configs import demo_mtarcface  # noqa: E402
from mtarcface_tf.data.synthetic import render_faces  # noqa: E402
from mtarcface_tf.export.embedder import make_embed_fn  # noqa: E402
from mtarcface_tf.progress import progress_bar  # noqa: E402
from mtarcface_tf.results import anon_rss_bytes, report_result, save_result  # noqa: E402
from mtarcface_tf.search.index import (  # noqa: E402
    BACKENDS, DEFAULT_BACKEND, DEFAULT_NPROBE, DEFAULT_RERANK, LISTS_PER_SQRT, MIN_CANDIDATES, make_index)
from mtarcface_tf.search.store import GalleryStore  # noqa: E402

flags.DEFINE_list("sizes", ["10000", "100000"], "Gallery sizes (people).")
flags.DEFINE_integer("dim", 512, "Embedding size.")
flags.DEFINE_string("dtype", "float16", "Stored embedding dtype (float32 | float16).")
flags.DEFINE_string("index_dtype", "float32", "The index's vector matrix dtype (float32 | float16).")
flags.DEFINE_float("spectrum_decay", 0.5, "Per-axis variance of centres and noise falls as i^-decay (0: isotropic).")
flags.DEFINE_float("centre_cosine", 0.72, "Mean cosine of a sample to its identity centre (genuine pairs ~ square).")
flags.DEFINE_float("centre_cosine_std", 0.08, "Std of that cosine across samples.")
flags.DEFINE_integer("ann_threshold", 50_000, "Gallery size above which the store searches through the ANN.")
flags.DEFINE_enum("backend", DEFAULT_BACKEND, BACKENDS, "ANN backend of the store.")
flags.DEFINE_integer("nprobe", DEFAULT_NPROBE, "IVF lists visited per query (IVF backends).")
flags.DEFINE_integer("rerank", DEFAULT_RERANK, "ANN candidates per wanted result, re-scored exactly.")
flags.DEFINE_integer("min_candidates", MIN_CANDIDATES, "ANN candidates re-scored per query at least.")
flags.DEFINE_integer("pq_bytes", 0, "Bytes per PQ code (faiss-pqfs, faiss-ivfpq; 0: the backend's default).")
flags.DEFINE_list("operating_points", [], "--index_only_sizes: the ANN also retuned to each PQ_BYTES:MIN_CANDIDATES "
                  "(e.g. 64:2000,32:2000) and measured on the same gallery and probes.")
flags.DEFINE_integer("batch_people", 10_000, "People per enrolment transaction.")
flags.DEFINE_integer("probes", 200, "Mated probes (and as many non-mated) per size.")
flags.DEFINE_integer("exact_probes", 50, "Single-query exact latency samples (exact search is slow at 1M).")
flags.DEFINE_list("index_only_sizes", [], "Sizes measured on the index alone (no SQLite store), vectors streamed in "
                  "chunks: for galleries whose store enrolment does not fit the time at hand.")
flags.DEFINE_string("vectors_dir", None, "--index_only_sizes keep the index's vectors in a memory-mapped file in this "
                    "folder (removed afterwards) instead of RAM: for galleries whose vectors exceed RAM.")
flags.DEFINE_integer("compare_size", 0, "Gallery size for the ANN library comparison (0: skip).")
flags.DEFINE_list("compare_backends", list(BACKENDS) + ["scann-ah", "scann-tree"], "Libraries compared: the index's "
                  "backends, and ScaNN (bench only) scoring every entry with asymmetric hashing (scann-ah) or the "
                  "entries of a tree's nearest leaves (scann-tree), re-ordered exactly.")
flags.DEFINE_integer("templates_size", 0, "People for mean-vs-max templates (0: skip).")
flags.DEFINE_integer("images_per_person", 4, "Enrolment images per person for the templates comparison.")
flags.DEFINE_string("real_model", None, "A trained model (export or workdir, e.g. the demo's runs/demo/export): its "
                    "embeddings of SynthFaces people it never saw are searched like the synthetic ones, and the "
                    "generator fitted to them alongside (a check of the synthetic embeddings).")
flags.DEFINE_integer("real_people", 10_000, "People for --real_model (two images each: enrolment and mated probe).")
flags.DEFINE_integer("real_chunk", 1000, "People rendered and embedded at a time for --real_model.")
flags.DEFINE_integer("threads", 2, "Threads of the ANN library.")
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_string("work_dir", None, "Where galleries are written (default: a temporary folder, removed).")
flags.DEFINE_string("save_result", None, "Save figures to docs/results/NAME.json.")
FLAGS = flags.FLAGS
K = 10
BATCH = 64
FPIR = 0.01
REMOVED_FEW = 100                  # people removed in one call, timed (the compaction's removal is timed apart)
SCANN_DIMS_PER_BLOCK = 2            # ScaNN's asymmetric hashing: 4-bit codes, 2 dims each (faiss-pqfs's size)
SCANN_ANISOTROPIC_THRESHOLD = 0.2   # ScaNN's recommended anisotropic quantization threshold for inner product


def unit(rows):
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def spectrum(dim):
    return (np.arange(1, dim + 1) ** (-FLAGS.spectrum_decay / 2)).astype(np.float32)


def draw_centres(count, rng, dim=None):
    """float32 [count, dim] identity centres on the unit sphere with the --spectrum_decay spectrum (dim: --dim)."""
    dim = dim or FLAGS.dim
    return unit(rng.normal(size=(count, dim)).astype(np.float32) * spectrum(dim))


def samples(centres, rng, cosine=None, cosine_std=None):
    """One embedding per centre row: a * centre + sqrt(1 - a^2) * (random unit direction orthogonal to it), a drawn
    from N(cosine, cosine_std) (default: --centre_cosine, --centre_cosine_std)."""
    mean = FLAGS.centre_cosine if cosine is None else cosine
    std = FLAGS.centre_cosine_std if cosine_std is None else cosine_std
    a = np.clip(rng.normal(mean, std, (len(centres), 1)), 0.05, 0.999)
    noise = unit(rng.normal(size=centres.shape).astype(np.float32) * spectrum(centres.shape[1]))
    noise -= np.sum(noise * centres, axis=1, keepdims=True) * centres
    return unit(a * centres + np.sqrt(1 - a ** 2) * unit(noise))


def ann_options(backend=None):
    """make_index's ANN keyword arguments from the flags (``backend``: --backend unless given)."""
    return {"backend": backend or FLAGS.backend, "nprobe": FLAGS.nprobe, "rerank": FLAGS.rerank,
            "min_candidates": FLAGS.min_candidates, "pq_bytes": FLAGS.pq_bytes or None, "threads": FLAGS.threads}


def rss_gib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def enrol(store, size, rng):
    """Enrols ``size`` people (one image each) in transactions of --batch_people; returns (seconds, probe
    centres of --probes enrolled people, their person ids)."""
    picks = np.sort(rng.choice(size, FLAGS.probes, replace=False))
    kept, seconds, done = [], 0.0, 0
    for start in progress_bar(range(0, size, FLAGS.batch_people), desc=f"enrol {size}", unit="batch"):
        count = min(FLAGS.batch_people, size - start)
        centres = draw_centres(count, rng)
        embeddings = samples(centres, rng)
        inside = picks[(picks >= start) & (picks < start + count)] - start
        kept.append(centres[inside])
        people = [{"name": f"p{start + i}", "embeddings": embeddings[i:i + 1]} for i in range(count)]
        began = time.perf_counter()
        store.enroll_many(people)
        seconds += time.perf_counter() - began
        done += count
    return seconds, np.concatenate(kept), picks + 1   # person ids are 1-based insertion order


def latencies(searches, queries, limits):
    """Query latencies of several searches, each in its own pass over the queries (one at a time, then in batches).
    Not interleaved: exact search's threaded BLAS leaves its threads spinning for a while after each call, and they
    took the cores from an ANN query right after it (docs/gallery.md).

    Args:
      searches: {name: search(queries [q, D], k)}.
      queries: float32 [q, D].
      limits: {name: how many of ``queries`` that search gets one at a time} (exact search is slow at 10M); each
        gets the first batches of BATCH up to that many queries, and one batch at least.

    Returns:
      {name: {"p50_ms", "p99_ms" of one query at a time, "batched_ms_per_query" (median over batches of BATCH)}}.
    """
    figures = {}
    for name, search in searches.items():
        search(queries[:1], K)      # warm-up: first-call costs (thread pools, page faults) are not a query's
        single = []
        for start in range(min(limits[name], len(queries))):
            began = time.perf_counter()
            search(queries[start:start + 1], K)
            single.append(1000 * (time.perf_counter() - began))
        batched = []
        for start in range(0, min(max(limits[name], BATCH), len(queries)) - BATCH + 1, BATCH):
            began = time.perf_counter()
            search(queries[start:start + BATCH], K)
            batched.append(1000 * (time.perf_counter() - began) / BATCH)
        figures[name] = {"p50_ms": float(np.percentile(single, 50)), "p99_ms": float(np.percentile(single, 99)),
                         "batched_ms_per_query": float(np.median(batched)) if batched else None}
    return figures


def tpir(scores, ids, mated_ids, mated_count):
    """Rank-1 TPIR at FPIR 0.01: threshold = the (1 - FPIR) quantile of the non-mated probes' top scores."""
    threshold = np.quantile(scores[mated_count:, 0], 1 - FPIR)
    hit = (ids[:mated_count, 0] == mated_ids) & (scores[:mated_count, 0] > threshold)
    return float(np.mean(hit))


def recalls(ids, exact_ids, mated_count):
    """recall@1 / @10 of ``ids`` [q, K] against ``exact_ids`` over all probes (``recall_at_1``, ``recall_at_10``), the
    mated ones (the first ``mated_count``; they decide TPIR) and the non-mated ones (their exact top-1 is only the
    largest of many near-zero impostor scores, so their recall says little about identification)."""
    at_1 = ids[:, 0] == exact_ids[:, 0]
    at_10 = np.array([len(np.intersect1d(a, b)) / K for a, b in zip(ids, exact_ids)])
    result = {}
    for name, rows in (("", slice(None)), ("mated_", slice(0, mated_count)), ("non_mated_", slice(mated_count, None))):
        result[f"{name}recall_at_1"] = float(np.mean(at_1[rows]))
        result[f"{name}recall_at_10"] = float(np.mean(at_10[rows]))
    return result


def measure(index, probes, mated_ids, exact=None, time_exact=True):
    """Latency, recall and TPIR of an index, ANN against exact (``exact``: exact search's (scores, ids) [q, K] of
    ``probes`` when already known; ``time_exact``: also time exact search)."""
    searches = {"exact": lambda q, k: index.search(q, k, exact=True)} if time_exact else {}
    if index.uses_ann():
        searches["ann"] = index.search
    result = latencies(searches, probes, {"exact": FLAGS.exact_probes, "ann": len(probes)})
    exact_scores, exact_ids = exact if exact is not None else index.search(probes, K, exact=True)
    result["tpir_exact"] = tpir(exact_scores, exact_ids, mated_ids, len(mated_ids))
    if index.uses_ann():
        scores, ids = index.search(probes, K)
        result.update(recalls(ids, exact_ids, len(mated_ids)))
        result["tpir_ann"] = tpir(scores, ids, mated_ids, len(mated_ids))
        if "exact" in result:
            result["speedup_single"] = result["exact"]["p50_ms"] / result["ann"]["p50_ms"]
    return result


def operating_points(index, probes, mated_ids, exact):
    """The index's ANN retuned to each --operating_points entry ("PQ_BYTES:MIN_CANDIDATES"), rebuilt and measured
    against ``exact`` (exact search's (scores, ids) of ``probes``): {entry: figures}."""
    points = {}
    for point in FLAGS.operating_points:
        pq_bytes, min_candidates = (int(value) for value in point.split(":"))
        index.retune(pq_bytes=pq_bytes, min_candidates=min_candidates)
        began = time.perf_counter()
        index.build_ann()
        points[point] = {"pq_bytes": pq_bytes, "min_candidates": min_candidates,
                         "ann_build_seconds": time.perf_counter() - began, "index_bytes": index.memory_bytes(),
                         **measure(index, probes, mated_ids, exact, time_exact=False)}
        print(point, json.dumps(points[point]), flush=True)
    return points


def run_size(size, rng, work_dir):
    path = os.path.join(work_dir, f"gallery_{size}")
    options = {"ann_threshold": FLAGS.ann_threshold, "dtype": FLAGS.index_dtype, **ann_options()}
    with GalleryStore.open(path, writable=True, dim=FLAGS.dim, dtype=FLAGS.dtype, fingerprint="bench",
                           index_options=options) as store:
        seconds, centres, mated_ids = enrol(store, size, rng)
        began = time.perf_counter()
        if store.index.uses_ann():
            store.index.build_ann()     # the final build at this size (the store also retrains as it grows)
        build = time.perf_counter() - began
        began = time.perf_counter()
        store.flush()
        flush = time.perf_counter() - began
        probes = np.concatenate([samples(centres, rng), samples(draw_centres(len(centres), rng), rng)])
        result = {"people": size, "enrol_people_per_s": size / seconds, "enrol_seconds": seconds,
                  "ann_build_seconds": build, "index_save_seconds": flush,
                  "index_bytes": store.index.memory_bytes(), "max_rss_gib": rss_gib(),
                  **measure(store.index, probes, mated_ids)}
        result["database_bytes"] = os.path.getsize(os.path.join(path, "gallery.db"))
    began = time.perf_counter()
    with GalleryStore.open(path, index_options=options) as store:
        store.search(probes[:1], K)
    result["reopen_seconds"] = time.perf_counter() - began
    result.update(remove_quarter(path, size, options))
    shutil.rmtree(path)
    return result


def remove_quarter(path, size, options):
    """Seconds to remove every fourth of ``size`` people enrolled by :func:`enrol`, and one more, through the store
    in one call (one transaction; past a quarter, so the index's compaction is included, its vectors file-backed as
    the store keeps them), and to save the index afterwards."""
    with GalleryStore.open(path, writable=True, index_options=options) as store:
        began = time.perf_counter()
        store.remove(*(f"p{person}" for person in range(0, size, 4)), "p1")
        removed = time.perf_counter() - began
        began = time.perf_counter()
        store.flush()
        return {"remove_quarter_seconds": removed, "remove_quarter_save_seconds": time.perf_counter() - began}


def run_index_only(size, rng):
    """The index without the store: vectors streamed in --batch_people chunks, then the same measurements."""
    vectors_file = None
    if FLAGS.vectors_dir:
        os.makedirs(FLAGS.vectors_dir, exist_ok=True)
        vectors_file = os.path.join(FLAGS.vectors_dir, f"vectors_{size}.bin")
    baseline = anon_rss_bytes() / 2 ** 30
    index = make_index("auto", dim=FLAGS.dim, dtype=FLAGS.index_dtype, ann_threshold=FLAGS.ann_threshold,
                       vectors_file=vectors_file, **ann_options())
    picks = np.sort(rng.choice(size, FLAGS.probes, replace=False))
    kept, seconds = [], 0.0
    for start in progress_bar(range(0, size, FLAGS.batch_people), desc=f"index {size}", unit="batch"):
        count = min(FLAGS.batch_people, size - start)
        centres = draw_centres(count, rng)
        embeddings = samples(centres, rng)
        kept.append(centres[picks[(picks >= start) & (picks < start + count)] - start])
        began = time.perf_counter()
        index.add(np.arange(start, start + count, dtype=np.int64), embeddings)
        seconds += time.perf_counter() - began
        del centres, embeddings
    began = time.perf_counter()
    index.build_ann()
    build = time.perf_counter() - began
    centres = np.concatenate(kept)
    probes = np.concatenate([samples(centres, rng), samples(draw_centres(len(centres), rng), rng)])
    exact = index.search(probes, K, exact=True)
    figures = {"people": size, "index_add_people_per_s": size / seconds, "ann_build_seconds": build,
               "index_bytes": index.memory_bytes(), "vectors_memory_mapped": bool(vectors_file),
               **measure(index, probes, picks, exact)}
    figures.update(max_rss_gib=rss_gib(), index_anon_rss_gib=anon_rss_bytes() / 2 ** 30 - baseline)
    if FLAGS.operating_points:
        figures["operating_points"] = operating_points(index, probes, picks, exact)
    if vectors_file:
        del index
        if os.path.exists(vectors_file):     # written once TAIL_ROWS rows were added
            os.remove(vectors_file)
    return figures


def scann_pybind():
    """ScaNN's numpy searcher module (``scann_ops_pybind``), imported without the ``scann`` package's
    ``__init__``, which also loads ScaNN's TensorFlow ops, and those fail beside TensorFlow 2.21 (an undefined
    absl symbol)."""
    if "scann" not in sys.modules:
        spec = importlib.util.find_spec("scann")
        if spec is None:
            raise app.UsageError("--compare_backends names ScaNN, which is not installed: pip install scann "
                                 "(the [dev] extra has it).")
        package = types.ModuleType("scann")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["scann"] = package
    from scann.scann_ops.py import scann_ops_pybind  # pylint: disable=import-outside-toplevel

    return scann_ops_pybind


class ScannSearch:
    """A ScaNN searcher over ``vectors`` (float32 [n, D], ids = rows) behind the index's ``search`` signature:
    asymmetric hashing of every entry (``tree=False``, the same idea as faiss-pqfs) or of a tree's --nprobe
    nearest leaves of ``LISTS_PER_SQRT * sqrt(n)``, then ScaNN's own exact re-ordering of ``candidates``."""

    def __init__(self, vectors, candidates, tree):
        builder = scann_pybind().builder(vectors, K, "dot_product")
        if tree:
            leaves = int(LISTS_PER_SQRT * np.sqrt(len(vectors)))
            builder = builder.tree(num_leaves=leaves, num_leaves_to_search=min(FLAGS.nprobe, leaves))
        builder = builder.score_ah(SCANN_DIMS_PER_BLOCK, anisotropic_quantization_threshold=SCANN_ANISOTROPIC_THRESHOLD)
        self.searcher = builder.reorder(candidates).set_n_training_threads(FLAGS.threads).build(
            docids=[str(row) for row in range(len(vectors))])    # docids: ScaNN deletes only by them
        self.searcher.set_num_threads(FLAGS.threads)
        self.candidates = candidates

    def search(self, queries, k):
        """(scores float32 [q, k], rows int64 [q, k]); row = id until the first removal. A batch is split over
        --threads by ScaNN, one query runs on one thread."""
        parallel = len(queries) > 1
        rows, scores = self.searcher.searcher.search_batched(queries, k, self.candidates, -1, parallel, BATCH)
        return scores, np.asarray(rows, np.int64)

    def remove(self, ids):
        self.searcher.delete([str(i) for i in ids])

    def memory_bytes(self):
        """Bytes of the serialized searcher without its float32 copy of the entries (the re-ordering matrix, which
        the comparison leaves out for every library)."""
        with tempfile.TemporaryDirectory() as folder:
            self.searcher.serialize(folder)
            return sum(os.path.getsize(os.path.join(folder, name)) for name in os.listdir(folder)
                       if name != "dataset.npy")


def make_compared(backend, vectors):
    """(search object, build seconds) of one --compare_backends entry over ``vectors`` (ids = rows)."""
    began = time.perf_counter()
    if backend.startswith("scann"):
        options = ann_options("faiss-pqfs")
        searcher = ScannSearch(vectors, max(K * options["rerank"], options["min_candidates"]), backend == "scann-tree")
    else:
        searcher = make_index("ann", dim=FLAGS.dim, dtype=FLAGS.dtype, **ann_options(backend))
        searcher.add(np.arange(len(vectors), dtype=np.int64), vectors)
    return searcher, time.perf_counter() - began


def timed(function, *args):
    """Seconds (float) one call of ``function(*args)`` takes."""
    began = time.perf_counter()
    function(*args)
    return time.perf_counter() - began


def compare_libraries(rng):
    """Each ANN library on one gallery of --compare_size people: build s, bytes, latency, recall against exact."""
    size = FLAGS.compare_size
    centres = draw_centres(size, rng)
    vectors = samples(centres, rng)
    picks = rng.choice(size, FLAGS.probes, replace=False)
    probes = np.concatenate([samples(centres[picks], rng), samples(draw_centres(FLAGS.probes, rng), rng)])
    rows = {}
    reference = make_index("exact", dim=FLAGS.dim, dtype=FLAGS.dtype)
    reference.add(np.arange(size, dtype=np.int64), vectors)
    reference = reference.search(probes, K)[1]
    for backend in FLAGS.compare_backends:
        index, build = make_compared(backend, vectors)
        ids = index.search(probes, K)[1]
        removal = timed(index.remove, np.arange(REMOVED_FEW, dtype=np.int64))
        timing = latencies({"ann": index.search}, probes, {"ann": len(probes)})["ann"]
        matrix = 0 if isinstance(index, ScannSearch) else len(index) * FLAGS.dim * np.dtype(FLAGS.dtype).itemsize
        ann_bytes = index.memory_bytes() - matrix
        # past COMPACT_DEAD_SHARE dead: the index compacts its rows and rebuilds its ANN within this call
        quarter = timed(index.remove, np.arange(REMOVED_FEW, REMOVED_FEW + size // 4 + 1, dtype=np.int64))
        rows[backend] = {"build_seconds": build, "ann_bytes": ann_bytes, **timing,
            **recalls(ids, reference, FLAGS.probes), "remove_100_seconds": removal,
            "remove_quarter_seconds": quarter}
        print(backend, json.dumps(rows[backend]), flush=True)
        del index
    return {"people": size, "libraries": rows}


def real_embeddings():
    """--real_model's embeddings of SynthFaces people after the demo's training, evaluation and recognition
    identities (its data settings): enrolment and mated probe float32 [--real_people, D], one image each, and
    non-mated probes float32 [--probes, D] of people never enrolled."""
    settings = demo_mtarcface.get_config().data.synthetic
    embed = make_embed_fn(FLAGS.real_model)
    first = settings.identities + settings.eval_identities + demo_configs.RECOGNITION["people"]

    def embed_people(start, count, images):
        out = []
        for chunk in progress_bar(range(start, start + count, FLAGS.real_chunk), desc=f"embed {count} people"):
            faces, _ = render_faces(min(FLAGS.real_chunk, start + count - chunk), images,
                                    image_size=settings.image_size, seed=settings.seed, first_identity=chunk,
                                    pose=dict(settings.pose), spread=settings.spread)
            out.append(unit(embed(faces)[0]))
        return np.concatenate(out)

    pairs = embed_people(first, FLAGS.real_people, 2)
    return pairs[0::2], pairs[1::2], embed_people(first + FLAGS.real_people, FLAGS.probes, 1)


def identification(enrolled, probes, mated_ids):
    """Exact rank-1 and TPIR, and the default ANN's recall and TPIR, of ``probes`` (the first len(mated_ids) mated
    with enrolled rows ``mated_ids``, the rest non-mated) against ``enrolled`` float32 [P, D]."""
    index = make_index("ann", dim=enrolled.shape[1], dtype="float32", **ann_options())
    index.add(np.arange(len(enrolled), dtype=np.int64), enrolled)
    exact_scores, exact_ids = index.search(probes, K, exact=True)
    scores, ids = index.search(probes, K)
    count = len(mated_ids)
    return {"rank1_exact": float(np.mean(exact_ids[:count, 0] == mated_ids)),
            "tpir_exact": tpir(exact_scores, exact_ids, mated_ids, count),
            "tpir_ann": tpir(scores, ids, mated_ids, count), **recalls(ids, exact_ids, count)}


def cosines(enrolled, mated):
    """Genuine (a person's two images) and impostor (person i's enrolment, person i + 1's probe) cosine mean and
    std."""
    genuine, impostor = np.sum(enrolled * mated, axis=1), np.sum(enrolled[:-1] * mated[1:], axis=1)
    return {"genuine_cosine_mean_std": [float(genuine.mean()), float(genuine.std())],
            "impostor_cosine_mean_std": [float(impostor.mean()), float(impostor.std())]}


def compare_real(rng):
    """--real_model's embeddings against the generator fitted to them (same D, centre cosine from their genuine
    cosines), both searched at --real_people: cosine statistics, exact rank-1 / TPIR, ANN recall / TPIR."""
    enrolled, mated, non_mated = real_embeddings()
    picks = np.sort(rng.choice(len(enrolled), FLAGS.probes, replace=False))
    real = {**cosines(enrolled, mated),
            **identification(enrolled, np.concatenate([mated[picks], non_mated]), picks)}
    # two samples of one centre have a cosine of about a1 * a2: mean a^2, std about sqrt(2) * a * std(a)
    mean, std = real["genuine_cosine_mean_std"]
    cosine = float(np.sqrt(max(mean, 0.0025)))
    cosine_std = float(std / (np.sqrt(2) * cosine))
    centres = draw_centres(len(enrolled), rng, dim=enrolled.shape[1])
    fitted_enrolled = samples(centres, rng, cosine, cosine_std)
    fitted_mated = samples(centres, rng, cosine, cosine_std)
    fitted_probes = np.concatenate([fitted_mated[picks], samples(draw_centres(FLAGS.probes, rng, enrolled.shape[1]),
                                                                 rng, cosine, cosine_std)])
    fitted = {"centre_cosine": cosine, "centre_cosine_std": cosine_std, **cosines(fitted_enrolled, fitted_mated),
              **identification(fitted_enrolled, fitted_probes, picks)}
    return {"model": FLAGS.real_model, "people": len(enrolled), "dim": int(enrolled.shape[1]), "real": real,
            "fitted_generator": fitted}


def compare_templates(rng):
    """Rank-1 TPIR at FPIR 0.01: one mean template per person against every image with max-over-images."""
    people, per = FLAGS.templates_size, FLAGS.images_per_person
    centres = draw_centres(people, rng)
    images = samples(np.repeat(centres, per, axis=0), rng)
    means = unit(images.reshape(people, per, -1).mean(axis=1))
    picks = rng.choice(people, FLAGS.probes * 5, replace=False) if people >= FLAGS.probes * 5 else np.arange(people)
    probes = np.concatenate([samples(centres[picks], rng), samples(draw_centres(len(picks), rng), rng)])
    mean_scores = probes @ means.T
    max_scores = (probes @ images.T).reshape(len(probes), people, per).max(axis=2)
    result = {}
    for name, scores in (("mean", mean_scores), ("max_over_images", max_scores)):
        top = np.argmax(scores, axis=1)
        best = scores[np.arange(len(probes)), top][:, None]
        result[name] = {"rank1": float(np.mean(top[:len(picks)] == picks)),
                        "tpir_at_fpir_0.01": tpir(best, top[:, None], picks, len(picks))}
    return {"people": people, "images_per_person": per, **result}


def main(argv):
    del argv
    rng = np.random.default_rng(FLAGS.seed)
    work_dir = FLAGS.work_dir or tempfile.mkdtemp(prefix="gallery-bench-")
    figures = {"dim": FLAGS.dim, "dtype": FLAGS.dtype, "index_dtype": FLAGS.index_dtype, **ann_options(),
               "ann_threshold": FLAGS.ann_threshold,
               "centre_cosine": FLAGS.centre_cosine, "centre_cosine_std": FLAGS.centre_cosine_std}
    probe_pairs = samples(np.repeat(draw_centres(2000, rng), 2, axis=0), rng)
    genuine = np.sum(probe_pairs[0::2] * probe_pairs[1::2], axis=1)
    impostor = np.sum(probe_pairs[0:-2:2] * probe_pairs[3::2], axis=1)     # person i against person i + 1
    figures["genuine_cosine_mean_std"] = [float(genuine.mean()), float(genuine.std())]
    figures["impostor_cosine_mean_std"] = [float(impostor.mean()), float(impostor.std())]
    if FLAGS.templates_size:
        figures["templates"] = compare_templates(rng)
        print("templates", json.dumps(figures["templates"]), flush=True)
    if FLAGS.compare_size:
        figures["libraries"] = compare_libraries(rng)
    if FLAGS.real_model:
        figures["real_model"] = compare_real(rng)
        print("real_model", json.dumps(figures["real_model"]), flush=True)
    figures["sizes"] = {}
    for size in [int(value) for value in FLAGS.sizes if int(value)]:
        figures["sizes"][str(size)] = run_size(size, rng, work_dir)
        print(size, json.dumps(figures["sizes"][str(size)]), flush=True)
        if FLAGS.save_result:    # after each size: a long run stopped early keeps what it measured
            save_result(FLAGS.save_result, figures)
    for size in [int(value) for value in FLAGS.index_only_sizes if int(value)]:
        figures.setdefault("index_only", {})[str(size)] = run_index_only(size, rng)
        print(size, json.dumps(figures["index_only"][str(size)]), flush=True)
        if FLAGS.save_result:
            save_result(FLAGS.save_result, figures)
    if not FLAGS.work_dir:
        shutil.rmtree(work_dir, ignore_errors=True)
    report_result(FLAGS.save_result, figures, save=bool(FLAGS.save_result))


if __name__ == "__main__":
    app.run(main)
