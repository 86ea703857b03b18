"""One search interface over L2-normalized embeddings: exact below a size, approximate (ANN) above it.

``make_index`` returns an :class:`Index`; every kind answers ``search(queries, k) -> (scores, ids)`` with cosine
similarities (descending) and the caller's int64 ids, padded with ``-inf`` / ``-1`` when fewer than ``k`` entries
exist. The exact search keeps one contiguous matrix and does a BLAS matmul per block of gallery rows over the whole
batch of queries with ``argpartition`` for the top-k. The ANN search (by default faiss's 4-bit product quantization
scanned with SIMD "fast scan" over every entry; faiss IVF and usearch HNSW as the measured alternatives, see
docs/gallery.md) proposes ``max(k * rerank, min_candidates)`` candidates per query, which are re-scored exactly from
the same matrix, so its scores are exact cosines and only its recall is approximate.
No TensorFlow, no model: numpy, faiss, usearch.
"""
import concurrent.futures
import functools
import json
import math
import zipfile

import numpy as np

# Defaults of make_index (the gallery store and the application use them unless given index_options).
DEFAULT_ANN_THRESHOLD = 50_000     # entries above which kind="auto" searches through the ANN index
DEFAULT_BACKEND = "faiss-pqfs"     # chosen on recall, latency, RAM and build time at 1M: see docs/gallery.md
DEFAULT_NPROBE = 128               # IVF lists visited per query ("faiss-ivf", "faiss-ivfpq")
DEFAULT_RERANK = 10                # ANN candidates per wanted result, re-scored exactly
MIN_CANDIDATES = 500               # ANN candidates re-scored per query at least (k=1 needs a margin too)
PQ_DIMS_PER_CODE = 2               # "faiss-pqfs" by default: dimensions per 4-bit code (D=512: 256 codes, 128 B)
IVFPQ_BYTES = 64                   # "faiss-ivfpq" by default: bytes per code
PQ_ROTATION_SEED = 1234            # "faiss-pqfs": the fixed random rotation applied before quantization
PQ_TRAIN_POINTS = 16_384           # "faiss-pqfs": codebook training sample (16 centroids per sub-space)
PQ_MIN_TRAIN_POINTS = 16 * 39      # faiss's k-means asks for 39 points per centroid
SHARD_SPREAD_SDS = 4               # "faiss-pqfs": each shard proposes count/S plus this many binomial std of it
DEFAULT_BLOCK_ROWS = 262_144       # gallery rows scored per matmul block (bounds the [q, block] score matrix)
ADD_CHUNK_ROWS = 65_536            # rows handed to the ANN library per call (bounds the float32 copy it needs)
RETRAIN_GROWTH = 4                 # the IVF is re-trained when the index has grown this much since its training
LISTS_PER_SQRT = 2                 # IVF lists = LISTS_PER_SQRT * sqrt(n)
TRAIN_POINTS_PER_LIST = 32         # k-means training sample per list (bounds the training time at 1M)
HNSW_CONNECTIVITY = 32
HNSW_EXPANSION_SEARCH = 128
FORMAT = "mtarcface-index-3"           # "faiss-pqfs" is sharded, its rotation applied outside faiss
EARLIER_FORMATS = ("mtarcface-index-2", "mtarcface-index-1")   # read too: their ANN structure is dropped and rebuilt
KINDS = ("auto", "exact", "ann")
BACKENDS = ("faiss-pqfs", "faiss-ivf", "faiss-ivfpq", "usearch")


class SearchIndexError(ValueError):
    """Bad ids or vectors given to an index, or an index file that cannot be read (message names the cause)."""


def _as_ids(ids):
    ids = np.asarray(ids)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise SearchIndexError(f"ids must be a 1-D integer array, got {ids.dtype} {ids.shape}.")
    if len(ids) and ids.min() < 0:
        raise SearchIndexError("ids must be >= 0 (-1 is the padding id).")
    return ids.astype(np.int64)


class Index:
    """Cosine top-k over (id, vector) entries. Build with :func:`make_index`.

    Attributes: ``kind`` ("auto" | "exact" | "ann"), ``dim``, ``dtype`` (storage, "float32" or "float16"),
    ``ann_threshold``, ``backend``, ``generation`` (an int the owner sets to tie the index to its database),
    ``vectors_file`` (None: the vector matrix is in RAM).
    """

    def __init__(self, kind="auto", dim=512, dtype="float32", ann_threshold=DEFAULT_ANN_THRESHOLD,
                 backend=DEFAULT_BACKEND, nprobe=DEFAULT_NPROBE, rerank=DEFAULT_RERANK, pq_bytes=None,
                 min_candidates=None, block_rows=DEFAULT_BLOCK_ROWS, threads=None, vectors_file=None):
        if kind not in KINDS:
            raise SearchIndexError(f"index kind must be one of {KINDS}, got {kind!r}.")
        if backend not in BACKENDS:
            raise SearchIndexError(f"ANN backend must be one of {BACKENDS}, got {backend!r}.")
        if dtype not in ("float32", "float16"):
            raise SearchIndexError(f"index dtype must be float32 or float16, got {dtype!r}.")
        self.kind, self.dim, self.dtype, self.backend = kind, int(dim), dtype, backend
        self.ann_threshold, self.nprobe, self.rerank = int(ann_threshold), int(nprobe), int(rerank)
        if backend == "faiss-pqfs":
            pq_fast_scan_codes(self.dim, pq_bytes)
        self.pq_bytes, self.block_rows, self.threads = pq_bytes, int(block_rows), threads
        self.min_candidates = int(MIN_CANDIDATES if min_candidates is None else min_candidates)
        self.generation = 0
        self.vectors_file = vectors_file
        self._vectors = np.zeros((0, self.dim), dtype)   # rows [0, n) live; capacity grows geometrically
        self._ids = np.zeros(0, np.int64)
        self._n = 0
        self._row_of = {}                                 # id -> row
        self._ann = None                                  # built lazily once the ANN is in use
        self._ann_size = 0                                # entries when the ANN was last built

    # ---- content -------------------------------------------------------------------------------------------------
    def __len__(self):
        return self._n

    @property
    def ids(self):
        """int64 [n]: the ids held, in row order."""
        return self._ids[:self._n].copy()

    @property
    def vectors(self):
        """[n, dim] (storage dtype): the vectors held, in ``ids`` order (a view; do not modify)."""
        return self._vectors[:self._n]

    def __contains__(self, entry_id):
        return int(entry_id) in self._row_of

    def add(self, ids, vectors):
        """Adds entries.

        Args:
          ids: int64 [n], >= 0, none already held and no repeats.
          vectors: float32 [n, dim], L2-normalized (stored as ``dtype``).

        Raises:
          SearchIndexError: shape mismatch, a negative or repeated id, or an id already held.
        """
        ids = _as_ids(ids)
        vectors = np.asarray(vectors, np.float32)
        if vectors.ndim != 2 or vectors.shape != (len(ids), self.dim):
            raise SearchIndexError(f"vectors must be [{len(ids)}, {self.dim}], got {vectors.shape}.")
        if len(np.unique(ids)) != len(ids):
            raise SearchIndexError("ids repeat within one add.")
        held = [int(i) for i in ids if int(i) in self._row_of]
        if held:
            raise SearchIndexError(f"{len(held)} ids are already in the index (e.g. {held[0]}); remove them first.")
        self._reserve(self._n + len(ids))
        rows = np.arange(self._n, self._n + len(ids))
        self._vectors[rows] = vectors
        self._ids[rows] = ids
        self._row_of.update(zip(ids.tolist(), rows.tolist()))
        self._n += len(ids)
        if self._ann is not None and self._n <= RETRAIN_GROWTH * self._ann_size:
            self._ann.add(rows, vectors)
        elif self.uses_ann():
            self._build_ann()

    def remove(self, ids):
        """Removes the entries ``ids`` (int64 [n]); ids not held are ignored, repeats count once. Returns how many
        were removed (int)."""
        ids = _as_ids(ids)
        present = [i for i in dict.fromkeys(ids.tolist()) if i in self._row_of]    # repeats removed once
        old_n, refilled = self._n, set()
        for entry_id in present:    # swap-remove: the last row moves into the hole, so rows stay contiguous
            row, last = self._row_of.pop(entry_id), self._n - 1
            if row != last:
                moved = int(self._ids[last])
                self._vectors[row], self._ids[row] = self._vectors[last], moved
                self._row_of[moved] = row
                refilled.add(row)
            self._n -= 1
        if present and self._ann is not None:
            if not self.uses_ann():
                self._ann = None
            else:   # the ANN is keyed by row: drop the rows that changed or went, re-add the refilled ones
                refilled = np.asarray(sorted(row for row in refilled if row < self._n), np.int64)
                self._ann.remove(np.concatenate([refilled, np.arange(self._n, old_n)]))
                if len(refilled):
                    self._ann.add(refilled, self._vectors[refilled].astype(np.float32))
        return len(present)

    def _reserve(self, size):
        if size <= len(self._ids):
            return
        capacity = max(size, 2 * len(self._ids), 1024)
        if self.vectors_file:    # the file keeps its rows when it grows: map it again, larger
            if isinstance(self._vectors, np.memmap):
                self._vectors.flush()
            with open(self.vectors_file, "r+b" if self._n else "w+b") as file:
                file.truncate(capacity * self.dim * np.dtype(self.dtype).itemsize)
            vectors = np.memmap(self.vectors_file, self.dtype, "r+", shape=(capacity, self.dim))
        else:
            vectors = np.zeros((capacity, self.dim), self.dtype)
            vectors[:self._n] = self._vectors[:self._n]
        ids = np.full(capacity, -1, np.int64)
        ids[:self._n] = self._ids[:self._n]
        self._vectors, self._ids = vectors, ids

    # ---- search --------------------------------------------------------------------------------------------------
    def uses_ann(self):
        """True when searches go through the ANN (kind "ann", or "auto" past ann_threshold)."""
        return self.kind == "ann" or (self.kind == "auto" and self._n > self.ann_threshold)

    def search(self, queries, k, exact=False):
        """Top-k entries per query by cosine similarity.

        Args:
          queries: float32 [q, dim] (or [dim]), L2-normalized.
          k: int >= 1.
          exact: score every entry even where the ANN would be used (the reference the ANN is measured against).

        Returns:
          (scores float32 [q, k], descending, exact cosines in [-1, 1]; ids int64 [q, k]); where fewer than k
          entries exist (or the ANN found fewer candidates) the tail is ``-inf`` / ``-1``.
        """
        queries = np.atleast_2d(np.asarray(queries, np.float32))
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise SearchIndexError(f"queries must be [q, {self.dim}], got {queries.shape}.")
        k = int(k)
        if k < 1:
            raise SearchIndexError(f"k must be >= 1, got {k}.")
        if self.uses_ann() and self._n and not exact:
            if self._ann is None:
                self._build_ann()
            count = min(self._n, max(k * self.rerank, self.min_candidates))
            return self._rerank(queries, self._ann.candidates(queries, count), k)
        return self._exact(queries, k)

    def _exact(self, queries, k):
        scores = np.full((len(queries), k), -np.inf, np.float32)
        rows = np.full((len(queries), k), -1, np.int64)
        for start in range(0, self._n, self.block_rows):
            block = self._vectors[start:min(self._n, start + self.block_rows)]
            block_scores = queries @ block.astype(np.float32, copy=False).T
            top = _top_k(block_scores, k)
            merged_scores = np.concatenate([scores, np.take_along_axis(block_scores, top, axis=1)], axis=1)
            merged_rows = np.concatenate([rows, top + start], axis=1)
            order = _top_k(merged_scores, k)
            scores = np.take_along_axis(merged_scores, order, axis=1)
            rows = np.take_along_axis(merged_rows, order, axis=1)
        if not self._n:
            return scores, rows
        return scores, np.where(rows >= 0, self._ids[np.maximum(rows, 0)], -1)

    def _rerank(self, queries, rows, k):
        """Exact cosines of each query's candidate rows (int64 [q, c], -1 = none); returns the top-k of them."""
        valid = (rows >= 0) & (rows < self._n)
        rows = np.where(valid, rows, 0)
        vectors = self._vectors[rows].astype(np.float32, copy=False)   # [q, c, dim]
        # einsum's own loop, not BLAS: a threaded BLAS call leaves its threads spinning for a while, and they took
        # the cores from the next query's shard scans (measured in docs/gallery.md)
        scores = np.einsum("qcd,qd->qc", vectors, queries)
        scores = np.where(valid, scores, -np.inf).astype(np.float32)
        width = min(k, scores.shape[1])
        order = _top_k(scores, width)
        top_scores = np.take_along_axis(scores, order, axis=1)
        top_ids = np.where(np.isfinite(top_scores), self._ids[np.take_along_axis(rows, order, axis=1)], -1)
        if width < k:
            top_scores = np.pad(top_scores, ((0, 0), (0, k - width)), constant_values=-np.inf)
            top_ids = np.pad(top_ids, ((0, 0), (0, k - width)), constant_values=-1)
        return top_scores, top_ids

    def _build_ann(self):
        self._ann = make_ann_backend(self.backend, self.dim, self.nprobe, self.pq_bytes, self.threads)
        self._ann.build(np.arange(self._n, dtype=np.int64), self._vectors[:self._n])
        self._ann_size = self._n

    def build_ann(self):
        """(Re)builds the ANN structure from the entries now held (training included); a no-op when empty."""
        if self._n:
            self._build_ann()

    def retune(self, pq_bytes=None, min_candidates=None, rerank=None):
        """Changes the ANN's speed/recall settings (see :func:`make_index`; None keeps a setting) and drops its
        structure when the code size changes: it is rebuilt from the vectors on the next search or
        :meth:`build_ann`. The entries are kept. Raises SearchIndexError on a code size the backend cannot use."""
        if pq_bytes is not None and pq_bytes != self.pq_bytes:
            if self.backend == "faiss-pqfs":
                pq_fast_scan_codes(self.dim, pq_bytes)
            self.pq_bytes, self._ann = int(pq_bytes), None
        if min_candidates is not None:
            self.min_candidates = int(min_candidates)
        if rerank is not None:
            self.rerank = int(rerank)

    # ---- persistence ---------------------------------------------------------------------------------------------
    def save(self, file):
        """Writes the index (ids, vectors, the ANN structure, settings, ``generation``) to a binary file object
        or path as one .npz; the owner makes the write atomic (temporary name + rename)."""
        meta = {"format": FORMAT, "kind": self.kind, "dim": self.dim, "dtype": self.dtype, "backend": self.backend,
                "ann_threshold": self.ann_threshold, "nprobe": self.nprobe, "rerank": self.rerank,
                "pq_bytes": self.pq_bytes, "min_candidates": self.min_candidates, "block_rows": self.block_rows,
                "generation": self.generation}
        ann = self._ann.serialize() if self._ann is not None else np.zeros(0, np.uint8)
        np.savez(file, meta=np.array(json.dumps(meta)), ids=self._ids[:self._n], vectors=self._vectors[:self._n],
                 ann=ann)

    @classmethod
    def load(cls, file, threads=None):
        """Reads an index written by :meth:`save` (no pickle). Raises SearchIndexError when it is unreadable."""
        try:
            with np.load(file, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                ids, vectors, ann = data["ids"], data["vectors"], data["ann"]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as error:
            raise SearchIndexError(f"unreadable index ({type(error).__name__}: {error})") from error
        if meta.get("format") not in (FORMAT,) + EARLIER_FORMATS:
            raise SearchIndexError(f"unknown index format {meta.get('format')!r}")
        pq_bytes = meta["pq_bytes"]
        if meta["format"] != FORMAT and meta["backend"] == "faiss-pqfs":
            pq_bytes = None     # earlier formats stored IVF-PQ's code size here; their fast scan used the default
        index = cls(kind=meta["kind"], dim=meta["dim"], dtype=meta["dtype"], ann_threshold=meta["ann_threshold"],
                    backend=meta["backend"], nprobe=meta["nprobe"], rerank=meta["rerank"], pq_bytes=pq_bytes,
                    min_candidates=meta.get("min_candidates"), block_rows=meta["block_rows"], threads=threads)
        if vectors.shape != (len(ids), index.dim):
            raise SearchIndexError(f"index holds {vectors.shape} vectors for {len(ids)} ids")
        index.generation = int(meta["generation"])
        index._vectors, index._ids = np.ascontiguousarray(vectors, index.dtype), ids.astype(np.int64)
        index._n = len(ids)
        index._row_of = dict(zip(index._ids.tolist(), range(index._n)))
        if len(index._row_of) != index._n:
            raise SearchIndexError("index holds repeated ids")
        if len(ann) and meta["format"] == FORMAT:
            index._ann = make_ann_backend(index.backend, index.dim, index.nprobe, index.pq_bytes, threads)
            index._ann.deserialize(ann)
            index._ann_size = index._n
            if index._ann.count() != index._n:
                index._ann = None     # stale ANN structure: rebuilt from the vectors on the next search
        return index

    def memory_bytes(self):
        """Approximate RAM held (int bytes): the vector matrix (unless it is in ``vectors_file``), the ids and the
        ANN structure."""
        ann = self._ann.memory_bytes() if self._ann is not None else 0
        vectors = 0 if self.vectors_file else self._vectors[:self._n].nbytes
        return int(vectors + self._ids[:self._n].nbytes + ann)


def _top_k(scores, k):
    """Column indices int64 [q, min(k, c)] of each row's k largest ``scores`` [q, c], best first."""
    k = min(k, scores.shape[1])
    if k < scores.shape[1]:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1).astype(np.int64)


class _FaissIVF:
    """faiss IVF over inner product with 8-bit scalar codes ("faiss-ivf") or product quantization
    ("faiss-ivfpq", for galleries past RAM): native add_with_ids / remove_ids, so it stays incremental."""

    def __init__(self, dim, nprobe, pq_bytes, threads, product_quantized):
        import faiss  # pylint: disable=import-outside-toplevel

        self._faiss, self.dim, self.nprobe, self.pq_bytes = faiss, dim, nprobe, pq_bytes
        self.product_quantized = product_quantized
        if threads:
            faiss.omp_set_num_threads(int(threads))
        self.index = None

    def build(self, ids, vectors):
        faiss = self._faiss
        lists = max(1, int(LISTS_PER_SQRT * np.sqrt(max(len(ids), 1))))
        quantizer = faiss.IndexFlatIP(self.dim)
        if self.product_quantized:
            index = faiss.IndexIVFPQ(quantizer, self.dim, lists, self.pq_bytes, 8, faiss.METRIC_INNER_PRODUCT)
        else:
            index = faiss.IndexIVFScalarQuantizer(quantizer, self.dim, lists, faiss.ScalarQuantizer.QT_8bit,
                                                  faiss.METRIC_INNER_PRODUCT)
        sample = np.random.default_rng(0).permutation(len(ids))[:lists * TRAIN_POINTS_PER_LIST]
        index.train(np.ascontiguousarray(vectors[np.sort(sample)], np.float32))
        self._quantizer = quantizer   # the IVF does not own it: keep it alive as long as the index
        self.index = index
        self.add(ids, vectors)

    def candidates(self, queries, count):
        self.index.nprobe = self.nprobe
        _, ids = self.index.search(np.ascontiguousarray(queries, np.float32), count)
        return ids

    def add(self, ids, vectors):
        for start in range(0, len(ids), ADD_CHUNK_ROWS):
            chunk = slice(start, start + ADD_CHUNK_ROWS)
            self.index.add_with_ids(np.ascontiguousarray(vectors[chunk], np.float32),
                                    np.ascontiguousarray(ids[chunk], np.int64))

    def remove(self, ids):
        self.index.remove_ids(np.ascontiguousarray(ids, np.int64))

    def count(self):
        return int(self.index.ntotal)

    def serialize(self):
        return self._faiss.serialize_index(self.index)

    def deserialize(self, data):
        self.index = self._faiss.deserialize_index(np.asarray(data, np.uint8))

    def memory_bytes(self):
        return int(self.serialize().nbytes)


class _FaissPQFastScan:
    """faiss 4-bit product quantization over inner product, every entry scanned with SIMD look-up tables ("fast
    scan"; no partitioning, so no entry is out of reach of a query: see docs/gallery.md), after a fixed random
    rotation. The entries are dealt to one scan per thread by key modulo the shard count, so a single query's scan
    runs on every core (it is bound by memory bandwidth, which one core does not use up). Each shard is an
    IndexIDMap over an IndexPQFastScan: native add_with_ids / remove_ids, so it stays incremental."""

    def __init__(self, dim, threads, code_bytes):
        import faiss  # pylint: disable=import-outside-toplevel

        self._faiss, self.dim = faiss, dim
        self.threads = int(threads or faiss.omp_get_max_threads())
        self.codes = pq_fast_scan_codes(dim, code_bytes)
        self.rotation = None       # float32 [dim, dim]: rotated = vectors @ rotation.T
        self.shards = []           # IndexIDMap, each over its own IndexPQFastScan

    def build(self, keys, vectors):
        faiss = self._faiss
        faiss.omp_set_num_threads(self.threads)
        # an embedding's variance is uneven over its axes; rotating spreads it evenly over the sub-quantizers
        # (recall@10 at 1M people 0.963 -> 0.999: docs/gallery.md)
        rotation = faiss.RandomRotationMatrix(self.dim, self.dim)
        rotation.init(PQ_ROTATION_SEED)
        self.rotation = faiss.vector_to_array(rotation.A).reshape(self.dim, self.dim).astype(np.float32)
        sample = np.random.default_rng(0).permutation(len(keys))[:PQ_TRAIN_POINTS]
        # k-means needs more points than its 16 centroids: a tiny gallery's vectors are repeated
        train = np.resize(np.asarray(vectors[np.sort(sample)], np.float32),
                          (max(len(sample), PQ_MIN_TRAIN_POINTS), self.dim))
        trained = faiss.IndexPQFastScan(self.dim, self.codes, 4, faiss.METRIC_INNER_PRODUCT)
        trained.train(self._rotate(train))
        self.shards = [self._id_map(faiss.clone_index(trained)) for _ in range(self.threads)]
        self.add(keys, vectors)

    def _id_map(self, scan):
        index = self._faiss.IndexIDMap(scan)
        scan.thisown, index.own_fields = False, True    # the map owns (and frees) its scan
        return index

    def _rotate(self, vectors):
        return np.ascontiguousarray(np.asarray(vectors, np.float32) @ self.rotation.T)

    def add(self, keys, vectors):
        keys = np.asarray(keys, np.int64)
        for start in range(0, len(keys), ADD_CHUNK_ROWS):
            chunk_keys = keys[start:start + ADD_CHUNK_ROWS]
            rotated = self._rotate(vectors[start:start + ADD_CHUNK_ROWS])
            for number, shard in enumerate(self.shards):
                mine = chunk_keys % len(self.shards) == number
                if mine.any():
                    shard.add_with_ids(np.ascontiguousarray(rotated[mine]), np.ascontiguousarray(chunk_keys[mine]))

    def remove(self, keys):
        keys = np.asarray(keys, np.int64)
        for number, shard in enumerate(self.shards):
            mine = keys[keys % len(self.shards) == number]
            if len(mine):
                shard.remove_ids(np.ascontiguousarray(mine))
                self._clear_tail_slots(shard)

    def _clear_tail_slots(self, shard):
        """faiss (1.15) IndexFastScan.remove_ids moves entries down but leaves their old 4-bit codes in the slots
        past the new end of the last 32-entry block, and a later add ORs new codes into those slots: entries added
        after a removal were then scored from garbage (found by tests/test_search_index.py). Zero those slots."""
        faiss = self._faiss
        scan = faiss.downcast_index(shard.index)
        end = -(-scan.ntotal // scan.bbs) * scan.bbs
        if end == scan.ntotal:
            return
        packer = scan.get_CodePacker()
        packer.thisown = True
        codes = faiss.swig_ptr(faiss.rev_swig_ptr(scan.codes.get(), scan.codes.size()))   # the index's own bytes
        zero = np.zeros(scan.code_size, np.uint8)
        for slot in range(scan.ntotal, end):
            packer.pack_1_c(faiss.swig_ptr(zero), slot, codes)

    def candidates(self, queries, count):
        rotated = self._rotate(queries)
        if len(self.shards) == 1:
            return self.shards[0].search(rotated, count)[1]
        per_shard = shard_candidates(count, len(self.shards))
        found = list(_scan_pool(len(self.shards)).map(lambda shard: shard.search(rotated, per_shard), self.shards))
        keys = np.concatenate([result[1] for result in found], axis=1)
        scores = np.where(keys >= 0, np.concatenate([result[0] for result in found], axis=1), -np.inf)
        best = np.argpartition(-scores, count - 1, axis=1)[:, :count]    # re-ranking orders them
        return np.take_along_axis(keys, best, axis=1)

    def count(self):
        return int(sum(shard.ntotal for shard in self.shards))

    def serialize(self):
        blobs = [self._faiss.serialize_index(shard) for shard in self.shards]
        header = np.array([len(blobs)] + [len(blob) for blob in blobs], np.int64)
        return np.concatenate([header.view(np.uint8), self.rotation.ravel().view(np.uint8)] + blobs)

    def deserialize(self, data):
        data = np.asarray(data, np.uint8)
        shards = int(data[:8].view(np.int64)[0])
        sizes = data[8:8 * (shards + 1)].view(np.int64)
        offset = 8 * (shards + 1) + 4 * self.dim * self.dim
        self.rotation = data[8 * (shards + 1):offset].view(np.float32).reshape(self.dim, self.dim).copy()
        self.shards = []
        for size in sizes:
            self.shards.append(self._faiss.deserialize_index(data[offset:offset + size]))
            offset += size

    def memory_bytes(self):
        scans = [self._faiss.downcast_index(shard.index) for shard in self.shards]
        return int(self.rotation.nbytes + sum(scan.codes.size() + 8 * scan.ntotal for scan in scans))


@functools.lru_cache(maxsize=None)
def _scan_pool(workers):
    """A pool of ``workers`` threads (shared by the process's indexes) whose faiss calls each use one OpenMP
    thread: the shards' scans run side by side, one per core, and faiss releases the GIL while it scans."""
    def one_openmp_thread():
        import faiss  # pylint: disable=import-outside-toplevel

        faiss.omp_set_num_threads(1)

    return concurrent.futures.ThreadPoolExecutor(workers, "pq-scan", initializer=one_openmp_thread)


def shard_candidates(count, shards):
    """Candidates (int) each of ``shards`` scans proposes for ``count`` merged ones. Entries are dealt to shards by
    key, independently of any query, so a shard holds a binomial share of the best ``count``: its mean ``count /
    shards`` plus SHARD_SPREAD_SDS standard deviations (at most ``count``): a scan's cost grows with the number it
    keeps."""
    share = count / shards
    return min(count, math.ceil(share + SHARD_SPREAD_SDS * math.sqrt(share)))


def pq_fast_scan_codes(dim, code_bytes=None):
    """4-bit codes per vector of "faiss-pqfs" (int): ``2 * code_bytes``, or, when ``code_bytes`` is None, the
    largest divisor of ``dim`` up to one per PQ_DIMS_PER_CODE dimensions. Raises SearchIndexError unless the code
    count divides ``dim``."""
    if code_bytes is None:
        return max(c for c in range(1, max(1, dim // PQ_DIMS_PER_CODE) + 1) if dim % c == 0)
    codes = 2 * int(code_bytes)
    if codes < 1 or dim % codes:
        raise SearchIndexError(f"pq_bytes={code_bytes} gives {codes} 4-bit codes, which must divide dim={dim}; "
                               f"choose pq_bytes with 2 * pq_bytes dividing {dim}.")
    return codes


class _USearchHNSW:
    """usearch HNSW over inner product with float16 vectors in the graph (add / remove are native)."""

    def __init__(self, dim, threads):
        from usearch.index import Index as USearchIndex  # pylint: disable=import-outside-toplevel

        self._make = lambda: USearchIndex(ndim=dim, metric="ip", dtype="f16", connectivity=HNSW_CONNECTIVITY,
                                          expansion_search=HNSW_EXPANSION_SEARCH)
        self.threads = int(threads or 0)
        self.index = self._make()

    def build(self, ids, vectors):
        self.index = self._make()
        self.add(ids, vectors)

    def add(self, ids, vectors):
        self.index.add(np.ascontiguousarray(ids, np.uint64), np.ascontiguousarray(vectors, np.float32),
                       threads=self.threads)

    def remove(self, ids):
        self.index.remove(np.ascontiguousarray(ids, np.uint64))

    def candidates(self, queries, count):
        matches = self.index.search(np.ascontiguousarray(queries, np.float32), count, threads=self.threads)
        keys = np.asarray(matches.keys, np.int64)
        if keys.ndim == 1:      # one query: usearch answers a Matches of the found keys only
            return np.pad(keys, (0, count - len(keys)), constant_values=-1)[None]
        found = np.asarray(matches.counts).reshape(len(queries), 1)
        return np.where(np.arange(keys.shape[1]) < found, keys, -1)

    def count(self):
        return len(self.index)

    def serialize(self):
        return np.frombuffer(bytes(self.index.save()), np.uint8)

    def deserialize(self, data):
        from usearch.index import Index as USearchIndex  # pylint: disable=import-outside-toplevel

        self.index = USearchIndex.restore(bytes(np.asarray(data, np.uint8)))

    def memory_bytes(self):
        return int(self.index.memory_usage)


def make_ann_backend(backend, dim, nprobe=DEFAULT_NPROBE, pq_bytes=None, threads=None):
    """Returns the ANN structure named ``backend`` (one of BACKENDS): ``build(keys, vectors)``, ``add(keys,
    vectors)``, ``remove(keys)``, ``candidates(queries [q, dim], count) -> keys int64 [q, count]`` (-1 = none; an
    :class:`Index` keys its entries by row, so no id look-up stands between the candidates and re-ranking), ``count()``,
    ``serialize() -> uint8 [n]``, ``deserialize``, ``memory_bytes()``."""
    if backend == "usearch":
        return _USearchHNSW(dim, threads)
    if backend == "faiss-pqfs":
        return _FaissPQFastScan(dim, threads, pq_bytes)
    return _FaissIVF(dim, nprobe, pq_bytes or IVFPQ_BYTES, threads, product_quantized=backend == "faiss-ivfpq")


def make_index(kind="auto", dim=512, dtype="float32", ann_threshold=DEFAULT_ANN_THRESHOLD, **options):
    """Returns an empty :class:`Index`.

    Args:
      kind: "exact" (always the full matmul), "ann" (always the ANN + exact re-ranking), or "auto" (exact up to
        ``ann_threshold`` entries, ANN above; the ANN is built when the size first crosses it).
      dim: vector size D.
      dtype: storage of the vector matrix, "float32" or "float16" (half the RAM; scores are computed in float32).
      ann_threshold: entry count above which "auto" uses the ANN.
      **options: ``backend`` ("faiss-pqfs" default | "faiss-ivf" | "faiss-ivfpq" | "usearch"), ``nprobe`` (IVF
        only), ``rerank`` (candidates per wanted result), ``min_candidates`` (candidates per query at least;
        default MIN_CANDIDATES), ``pq_bytes`` (bytes per PQ code: "faiss-ivfpq", default IVFPQ_BYTES; "faiss-pqfs",
        default one 4-bit code per PQ_DIMS_PER_CODE dimensions; fewer bytes scan faster with lower recall:
        docs/gallery.md), ``block_rows``, ``threads`` (also the fast scan's shard count), ``vectors_file`` (a
        path: the vector matrix lives in that memory-mapped file, created or overwritten, instead of RAM, for
        galleries whose vectors exceed RAM; the ANN structure and ids stay in RAM. :meth:`Index.save` writes the
        vectors into the index file as usual and :meth:`Index.load` reads them into RAM).
    """
    return Index(kind=kind, dim=dim, dtype=dtype, ann_threshold=ann_threshold, **options)
