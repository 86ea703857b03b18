"""RAM and latency of a gallery store whose index's vectors are memory-mapped (map_vectors, the default) or in RAM.

  PYTHONPATH=. python docs/checks/mapped_vectors.py [PEOPLE] [WORK_DIR]

For each setting: enrols PEOPLE people (default 200,000; random 512-d float32 embeddings, one each, 10,000 per
transaction) into a new gallery under WORK_DIR (default: a temporary folder) and closes it (the index saved), timed;
then, in a fresh process, opens it read-only and reports the resident anonymous memory the open added (RssAnon: a
mapped file's pages are the page cache, shared by every reader, not the process's own), the open's seconds and the
median latency of single-query searches over 100 queries through the ANN and exact (every entry scored). One JSON
line per setting.
"""
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from mtarcface_tf.search.store import GalleryStore

DIM = 512
BATCH = 10_000
QUERIES = 100


def anon_rss_bytes():
    with open("/proc/self/status", encoding="ascii") as status:
        return 1024 * next(int(line.split()[1]) for line in status if line.startswith("RssAnon:"))


def unit(rows):
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def enrol(path, people, map_vectors):
    rng = np.random.default_rng(0)
    began = time.perf_counter()
    with GalleryStore.open(path, writable=True, map_vectors=map_vectors) as store:
        for start in range(0, people, BATCH):
            vectors = unit(rng.normal(size=(min(BATCH, people - start), DIM)).astype(np.float32))
            store.enroll_many([{"name": f"p{start + i}", "embeddings": vector[None]}
                               for i, vector in enumerate(vectors)])
    return time.perf_counter() - began


def median_ms(search, queries):
    search(queries[:1])
    times = []
    for query in queries:
        began = time.perf_counter()
        search(query[None])
        times.append(time.perf_counter() - began)
    return 1000 * float(np.median(times))


def read(path, map_vectors):
    """Runs in a fresh process: the reader's figures (dict)."""
    queries = unit(np.random.default_rng(1).normal(size=(QUERIES, DIM)).astype(np.float32))
    before, began = anon_rss_bytes(), time.perf_counter()
    store = GalleryStore.open(path, map_vectors=map_vectors)
    store.search(queries[:1], 10)
    figures = {"open_seconds": time.perf_counter() - began,
               "reader_anon_rss_mib": (anon_rss_bytes() - before) / 2 ** 20,
               "index_memory_mib": store.index.memory_bytes() / 2 ** 20, "uses_ann": store.index.uses_ann(),
               "ann_p50_ms": median_ms(lambda query: store.search(query, 10), queries),
               "exact_p50_ms": median_ms(lambda query: store.index.search(query, 10, exact=True), queries[:20])}
    store.close()
    return figures


def main(people, work_dir):
    for map_vectors in (True, False):
        path = os.path.join(work_dir, f"gallery_{'mapped' if map_vectors else 'ram'}")
        seconds = enrol(path, people, map_vectors)
        reader = subprocess.run([sys.executable, __file__, "--read", path, str(map_vectors)], check=True,
                                capture_output=True, text=True).stdout
        print(json.dumps({"people": people, "map_vectors": map_vectors, "enrol_seconds": seconds,
                          **json.loads(reader)}), flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--read"]:
        print(json.dumps(read(sys.argv[2], sys.argv[3] == "True")))
    elif len(sys.argv) > 2:
        main(int(sys.argv[1]), sys.argv[2])
    else:
        with tempfile.TemporaryDirectory() as folder:
            main(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000, folder)
