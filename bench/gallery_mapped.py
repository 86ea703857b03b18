"""A gallery reader's RAM, open time and latency with its index's vectors memory-mapped (``map_vectors``, the
default) and in RAM.

  PYTHONPATH=. python bench/gallery_mapped.py --people=200000 --save_result=gallery_mapped

For each setting: enrols --people people (random 512-d float32 embeddings, one each, --batch_people per
transaction) into a new gallery and closes it (the index saved), timed; then a fresh process opens it read-only and
reports the resident anonymous memory the open added (RssAnon: a mapped file's pages are the page cache, shared by
every reader, not the process's own), the open's seconds, the median latency of single-query searches through the
ANN (a first pass, in which a mapped reader faults the pages of its candidates' rows in, and the same queries again)
and exact (every entry scored), and exact search's milliseconds per query in one batch of --batch_queries. Apart
from the store, an index of --people entries (vectors in a file, as the store keeps them, or in RAM) times the one
removal of a quarter of them that compacts it (the live rows copied, into a new file when file-backed). The last
line printed is JSON.
"""
import io
import json
import os
import subprocess
import sys
import tempfile
import time

from mtarcface_tf.quiet import quiet_tensorflow

quiet_tensorflow()  # first, as in every bench (tests/test_quiet.py)

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from mtarcface_tf.results import anon_rss_bytes, median_seconds, report_result  # noqa: E402
from mtarcface_tf.search.index import make_index  # noqa: E402
from mtarcface_tf.search.store import GalleryStore  # noqa: E402

flags.DEFINE_integer("people", 200_000, "Gallery size.")
flags.DEFINE_integer("dim", 512, "Embedding size.")
flags.DEFINE_integer("batch_people", 10_000, "People per enrolment transaction.")
flags.DEFINE_integer("queries", 100, "Single-query ANN latency samples (exact: a fifth of them).")
flags.DEFINE_integer("batch_queries", 64, "Queries in the batched exact search.")
flags.DEFINE_string("work_dir", None, "Where the galleries are written (default: a temporary folder, removed).")
flags.DEFINE_string("read", None, "Internal: open this gallery read-only in this process and print its figures.")
flags.DEFINE_bool("map_vectors", True, "Internal, with --read: the reader maps the vectors.")
flags.DEFINE_string("save_result", None, "Save figures to docs/results/NAME.json.")
FLAGS = flags.FLAGS
K = 10
BATCH_CALLS = 3                    # timed calls of the batched exact search (the median is kept)


def unit(rows):
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def enrol(path, map_vectors):
    """Enrols --people random people into a new gallery at ``path``; returns the seconds (closing included)."""
    rng = np.random.default_rng(0)
    began = time.perf_counter()
    with GalleryStore.open(path, writable=True, map_vectors=map_vectors) as store:
        for start in range(0, FLAGS.people, FLAGS.batch_people):
            vectors = unit(rng.normal(size=(min(FLAGS.batch_people, FLAGS.people - start), FLAGS.dim)))
            store.enroll_many([{"name": f"p{start + i}", "embeddings": vector[None]}
                               for i, vector in enumerate(vectors)])
    return time.perf_counter() - began


def median_ms(search, queries):
    """Median milliseconds of ``search`` over ``queries`` one at a time (after one warm-up query)."""
    search(queries[:1])
    times = []
    for query in queries:
        began = time.perf_counter()
        search(query[None])
        times.append(time.perf_counter() - began)
    return 1000 * float(np.median(times))


def read(path, map_vectors):
    """The reader's figures (dict); runs in a fresh process."""
    queries = unit(np.random.default_rng(1).normal(size=(max(FLAGS.queries, FLAGS.batch_queries), FLAGS.dim)))
    before, began = anon_rss_bytes(), time.perf_counter()
    store = GalleryStore.open(path, map_vectors=map_vectors)
    store.search(queries[:1], K)
    figures = {"open_seconds": time.perf_counter() - began,
               "reader_anon_rss_mib": (anon_rss_bytes() - before) / 2 ** 20,
               "index_memory_mib": store.index.memory_bytes() / 2 ** 20, "uses_ann": store.index.uses_ann()}

    def ann(query):
        return store.search(query, K)

    def exact(query):
        return store.index.search(query, K, exact=True)

    batch = queries[:FLAGS.batch_queries]
    batched_seconds = median_seconds(lambda: exact(batch), BATCH_CALLS, warmup=1)
    figures.update(ann_p50_ms=median_ms(ann, queries[:FLAGS.queries]),
                   ann_p50_ms_again=median_ms(ann, queries[:FLAGS.queries]),
                   exact_p50_ms=median_ms(exact, queries[:max(1, FLAGS.queries // 5)]),
                   exact_batched_ms_per_query=1000 * batched_seconds / len(batch))
    store.close()
    return figures


def compaction_seconds(vectors_file):
    """Seconds (float) the removal of a quarter (plus one) of --people random entries takes in one call, its
    compaction included, from an index whose saved vectors are in ``vectors_file`` (None: in RAM)."""
    rng = np.random.default_rng(2)
    index = make_index("auto", dim=FLAGS.dim, vectors_file=vectors_file)
    for start in range(0, FLAGS.people, FLAGS.batch_people):
        count = min(FLAGS.batch_people, FLAGS.people - start)
        index.add(np.arange(start, start + count), unit(rng.normal(size=(count, FLAGS.dim))))
    index.save(io.BytesIO())      # a file-backed index's rows written to its file, as the store's are
    began = time.perf_counter()
    index.remove(np.arange(FLAGS.people // 4 + 1))
    return time.perf_counter() - began


def measure(work_dir):
    """{"mapped" | "ram": figures} for the two settings."""
    settings = {}
    for name, map_vectors in (("mapped", True), ("ram", False)):
        path = os.path.join(work_dir, f"gallery_{name}")
        seconds = enrol(path, map_vectors)
        reader = subprocess.run([sys.executable, __file__, f"--read={path}", f"--map_vectors={map_vectors}",
                                 f"--dim={FLAGS.dim}", f"--queries={FLAGS.queries}",
                                 f"--batch_queries={FLAGS.batch_queries}"],
                                check=True, capture_output=True, text=True).stdout
        vectors_file = os.path.join(work_dir, "vectors-compaction.bin") if map_vectors else None
        settings[name] = {"enrol_seconds": seconds, **json.loads(reader.strip().splitlines()[-1]),
                          "remove_quarter_seconds": compaction_seconds(vectors_file)}
        print(name, json.dumps(settings[name]), flush=True)
    return settings


def main(argv):
    del argv
    if FLAGS.read:
        print(json.dumps(read(FLAGS.read, FLAGS.map_vectors)))
        return
    if FLAGS.work_dir:
        settings = measure(FLAGS.work_dir)
    else:
        with tempfile.TemporaryDirectory() as folder:
            settings = measure(folder)
    report_result(FLAGS.save_result, {"people": FLAGS.people, "dim": FLAGS.dim, "settings": settings},
                  save=bool(FLAGS.save_result))


if __name__ == "__main__":
    app.run(main)
