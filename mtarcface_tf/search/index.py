"""One search interface over L2-normalized embeddings: exact below a size, approximate (ANN) above it.

``make_index`` returns an :class:`Index`; every kind answers ``search(queries, k) -> (scores, ids)`` with cosine
similarities (descending) and the caller's int64 ids, padded with ``-inf`` / ``-1`` when fewer than ``k`` entries
exist. The exact search keeps one contiguous matrix and does a BLAS matmul per block of gallery rows over the whole
batch of queries with ``argpartition`` for the top-k. The ANN search (by default faiss's 4-bit product quantization
scanned with SIMD "fast scan" over every entry; faiss IVF and usearch HNSW as the measured alternatives, see
docs/gallery.md) proposes ``max(k * rerank, min_candidates)`` candidates per query, which are re-scored exactly from
the same matrix, so its scores are exact cosines and only its recall is approximate. Rows are written once:
removals leave dead rows until a compaction, so a saved vector file can be memory-mapped by readers while its one
writer goes on adding (to RAM, then past the saved rows) and removing.
No TensorFlow, no model: numpy, faiss, usearch.
"""
import concurrent.futures
import functools
import json
import math
import os
import re
import secrets
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
RERANK_BLOCK_VALUES = 1 << 24      # candidate vector values gathered per re-ranking block (64 MiB of float32)
RETRAIN_GROWTH = 4                 # the IVF is re-trained when the index has grown this much since its training
LISTS_PER_SQRT = 2                 # IVF lists = LISTS_PER_SQRT * sqrt(n)
TRAIN_POINTS_PER_LIST = 32         # k-means training sample per list (bounds the training time at 1M)
HNSW_CONNECTIVITY = 32
HNSW_EXPANSION_SEARCH = 128
FORMAT = "mtarcface-index-4"           # dead rows (id -1); the vectors in the .npz or named raw file beside it
EARLIER_FORMATS = ("mtarcface-index-3", "mtarcface-index-2", "mtarcface-index-1")     # read too
ANN_FORMATS = (FORMAT, "mtarcface-index-3")    # their ANN structure is read as written (1, 2: dropped and rebuilt)
TAIL_ROWS = 65_536                 # a file-backed index appends its RAM tail to its vector file past this many rows
COMPACT_DEAD_SHARE = 0.25          # removed entries' rows past this share of all rows: the live ones are compacted
COMPACT_MIN_DEAD_ROWS = 1024       # ... once there are at least this many
MIN_CAPACITY = 1024                # rows allocated at least when the RAM tail or the id array grows
NAME_TOKEN_BYTES = 8               # random bytes in a new vector file's name (compaction, the store's new files)
NAME_TOKEN = re.compile(rf"-[0-9a-f]{{{2 * NAME_TOKEN_BYTES}}}$")
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
    ``vectors_file`` (None: the vector matrix is in RAM; else the path of the raw file holding its saved rows).

    Rows never change once written: a removed entry's row stays, dead (its id slot -1), until dead rows pass
    COMPACT_DEAD_SHARE of all rows and the live ones are copied into a fresh matrix (a new file when file-backed).
    The ANN, keyed by row, keeps a dead row's key until then (removing keys from faiss's fast scan moves every code
    of a shard: 1.4 s per call at 1M entries): re-ranking skips dead rows, and asks the ANN for more candidates in
    proportion to the dead keys it holds. Rows [0, n_base) are a read-only memory map of ``vectors_file``, rows
    [n_base, n) a RAM tail.
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
        self.vectors_file = None if vectors_file is None else os.fspath(vectors_file)
        self.read_only = False                            # True: the vector file is never written (a reader's index)
        self._base = np.zeros((0, self.dim), dtype)       # rows [0, n_base): the vector file, mapped read-only
        self._n_base = 0
        self._tail = np.zeros((0, self.dim), dtype)       # rows [n_base, n) in RAM; capacity grows geometrically
        self._ids = np.zeros(0, np.int64)                 # per row: the entry's id, -1 for a dead row
        self._n = 0                                       # rows written, live and dead
        self._row_of = {}                                 # id -> row, live entries only
        self._ann = None                                  # built lazily once the ANN is in use
        self._ann_size = 0                                # entries when the ANN was last built

    # ---- content -------------------------------------------------------------------------------------------------
    def __len__(self):
        return len(self._row_of)

    def _live_rows(self):
        return np.flatnonzero(self._ids[:self._n] >= 0)

    @property
    def ids(self):
        """int64 [n]: the ids held, in row order."""
        return self._ids[self._live_rows()]

    @property
    def vectors(self):
        """[n, dim] (storage dtype): the vectors held, in ``ids`` order (a copy gathered from the rows)."""
        return self._gather(self._live_rows())

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
        self._tail[rows - self._n_base] = vectors
        self._ids[rows] = ids
        self._row_of.update(zip(ids.tolist(), rows.tolist()))
        self._n += len(ids)
        if self._ann is not None and len(self) <= RETRAIN_GROWTH * self._ann_size:
            self._ann.add(rows, vectors)
        elif self.uses_ann():
            self._build_ann()
        if self.vectors_file and not self.read_only and self._n - self._n_base >= TAIL_ROWS:
            self._write_tail()

    def remove(self, ids):
        """Removes the entries ``ids`` (int64 [n]); ids not held are ignored, repeats count once. Returns how many
        were removed (int). Their rows stay, dead, until the next compaction."""
        ids = _as_ids(ids)
        rows = np.array([self._row_of.pop(i) for i in dict.fromkeys(ids.tolist()) if i in self._row_of], np.int64)
        if not len(rows):
            return 0
        self._ids[rows] = -1
        if self._ann is not None and not self.uses_ann():
            self._ann = None
        dead = self._n - len(self)
        if not self.read_only and dead >= COMPACT_MIN_DEAD_ROWS and dead > COMPACT_DEAD_SHARE * self._n:
            self._compact()
        return len(rows)

    def move_vectors(self, vectors_file):
        """Copies every row (dead ones too: rows keep their numbers, so the ANN stays) into RAM (``vectors_file``
        None) or into the new raw file ``vectors_file`` (created or overwritten), which the index then uses. The old
        file is left for its owner to delete once no saved index names it."""
        self._relocate(np.arange(self._n), vectors_file)

    def _compact(self):
        """Drops the dead rows: the live ones are copied into a fresh matrix (in RAM, or a file under a new name,
        since readers may have mapped the current one) and the ANN, keyed by row, keeps their keys, renumbered."""
        live = self._live_rows()
        self._relocate(live, fresh_vectors_file(self.vectors_file) if self.vectors_file else None)
        self._ids, self._n = self._ids[live], len(live)
        self._row_of = dict(zip(self._ids.tolist(), range(self._n)))
        if self._ann is not None:
            self._ann.keep(live, _Rows(self._gather, np.arange(self._n), self.dtype))

    def _relocate(self, rows, vectors_file):
        """Copies ``rows`` (int64 [m]) as rows [0, m) into RAM or the raw file ``vectors_file``, chunk by chunk."""
        if vectors_file is None:
            base, tail = np.zeros((0, self.dim), self.dtype), self._gather(rows)
        else:
            with open(vectors_file, "wb") as file:
                for start in range(0, len(rows), ADD_CHUNK_ROWS):
                    file.write(self._gather(rows[start:start + ADD_CHUNK_ROWS]).data)
            base, tail = _map_rows(vectors_file, self.dtype, len(rows), self.dim), np.zeros((0, self.dim), self.dtype)
        self._base, self._n_base, self._tail = base, len(base), tail
        self.vectors_file, self.read_only = vectors_file, False

    def _reserve(self, rows):
        if rows > len(self._ids):
            ids = np.full(max(rows, 2 * len(self._ids), MIN_CAPACITY), -1, np.int64)
            ids[:self._n] = self._ids[:self._n]
            self._ids = ids
        tail_rows = rows - self._n_base
        if tail_rows > len(self._tail):
            tail = np.zeros((max(tail_rows, 2 * len(self._tail), MIN_CAPACITY), self.dim), self.dtype)
            tail[:self._n - self._n_base] = self._tail[:self._n - self._n_base]
            self._tail = tail

    def _write_tail(self, sync=False):
        """Appends the RAM tail to the vector file at row n_base and maps the file again, longer. Rows past the
        n_base of the last saved index are nobody's (a crashed save's leftovers): readers map only the rows their
        index.npz names, so they never see these bytes change."""
        count = self._n - self._n_base
        with open(self.vectors_file, "r+b" if self._n_base else "wb") as file:
            file.seek(self._n_base * self.dim * np.dtype(self.dtype).itemsize)
            file.write(self._tail[:count].data)
            if sync:
                file.flush()
                os.fsync(file.fileno())
        if count:
            self._base, self._n_base = _map_rows(self.vectors_file, self.dtype, self._n, self.dim), self._n
            self._tail = np.zeros((0, self.dim), self.dtype)

    def _gather(self, rows):
        """The vectors (storage dtype) [*rows.shape, dim] of ``rows`` (int64, any shape, each in [0, n)), from the
        mapped base and the RAM tail."""
        rows = np.asarray(rows, np.int64)
        if not self._n_base:
            return self._tail[rows]
        flat = rows.ravel()
        in_base = flat < self._n_base
        if in_base.all():
            return self._base[rows]
        vectors = np.empty((len(flat), self.dim), self.dtype)
        vectors[in_base] = self._base[flat[in_base]]
        vectors[~in_base] = self._tail[flat[~in_base] - self._n_base]
        return vectors.reshape(rows.shape + (self.dim,))

    def _blocks(self):
        """(first row int, vectors [b, dim] storage dtype) over every row, base then tail, at most block_rows
        each (views, no copy)."""
        for part, first, count in ((self._base, 0, self._n_base), (self._tail, self._n_base, self._n - self._n_base)):
            for start in range(0, count, self.block_rows):
                yield first + start, part[start:min(count, start + self.block_rows)]

    # ---- search --------------------------------------------------------------------------------------------------
    def uses_ann(self):
        """True when searches go through the ANN (kind "ann", or "auto" past ann_threshold)."""
        return self.kind == "ann" or (self.kind == "auto" and len(self) > self.ann_threshold)

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
        if self.uses_ann() and len(self) and not exact:
            if self._ann is None:
                self._build_ann()
            return self._rerank_in_blocks(queries, self._ann.candidates(queries, self._candidate_count(k)), k)
        return self._exact(queries, k)

    def _rerank_in_blocks(self, queries, rows, k):
        """:meth:`_rerank` over blocks of queries whose gathered candidate vectors hold at most RERANK_BLOCK_VALUES
        values: a large batch (an evaluation's thousands of probes, 2,000 candidates each) would otherwise copy
        gigabytes at once."""
        per_block = max(1, RERANK_BLOCK_VALUES // max(1, rows.shape[1] * self.dim))
        if len(queries) <= per_block:
            return self._rerank(queries, rows, k)
        parts = [self._rerank(queries[start:start + per_block], rows[start:start + per_block], k)
                 for start in range(0, len(queries), per_block)]
        return tuple(np.concatenate(part) for part in zip(*parts))

    def _exact(self, queries, k):
        scores = np.full((len(queries), k), -np.inf, np.float32)
        rows = np.full((len(queries), k), -1, np.int64)
        for start, block in self._blocks():
            block_scores = queries @ block.astype(np.float32, copy=False).T
            dead = self._ids[start:start + len(block)] < 0
            if dead.any():
                block_scores[:, dead] = -np.inf
            top = _top_k(block_scores, k)
            merged_scores = np.concatenate([scores, np.take_along_axis(block_scores, top, axis=1)], axis=1)
            merged_rows = np.concatenate([rows, top + start], axis=1)
            order = _top_k(merged_scores, k)
            scores = np.take_along_axis(merged_scores, order, axis=1)
            rows = np.take_along_axis(merged_rows, order, axis=1)
        if not self._n:
            return scores, rows
        return scores, np.where(rows >= 0, self._ids[np.maximum(rows, 0)], -1)     # a dead row's id is -1 too

    def _candidate_count(self, k):
        """ANN candidates (int) to re-rank for the top-k: max(k * rerank, min_candidates) live ones, scaled up by
        the share of dead keys the ANN holds (at most all its keys)."""
        live = min(len(self), max(k * self.rerank, self.min_candidates))
        keys = self._ann.count()
        return min(keys, math.ceil(live * keys / len(self)))

    def _rerank(self, queries, rows, k):
        """Exact cosines of each query's candidate rows (int64 [q, c], -1 = none; dead rows skipped); returns the
        top-k of them."""
        valid = (rows >= 0) & (rows < self._n)
        rows = np.where(valid, rows, 0)
        valid &= self._ids[rows] >= 0
        vectors = self._gather(rows).astype(np.float32, copy=False)   # [q, c, dim]
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
        live = self._live_rows()
        self._ann.build(live, _Rows(self._gather, live, self.dtype))
        self._ann_size = len(live)

    def build_ann(self):
        """(Re)builds the ANN structure from the entries now held (training included); a no-op when empty."""
        if len(self):
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
    def save(self, file, vectors_inline=False):
        """Writes the index (ids per row, -1 for dead rows; the ANN structure, settings, ``generation``) to a binary
        file object or path as one .npz; the owner makes the write atomic (temporary name + rename).

        An index in RAM (or ``vectors_inline``) writes its vectors into the .npz. A file-backed one first appends
        its RAM tail to ``vectors_file`` and syncs it; the .npz then names that file (which must lie in the .npz's
        folder) and its row count instead of holding the vectors.

        Raises:
          SearchIndexError: a file-backed index loaded read-only, unless ``vectors_inline``.
        """
        meta = {"format": FORMAT, "kind": self.kind, "dim": self.dim, "dtype": self.dtype, "backend": self.backend,
                "ann_threshold": self.ann_threshold, "nprobe": self.nprobe, "rerank": self.rerank,
                "pq_bytes": self.pq_bytes, "min_candidates": self.min_candidates, "block_rows": self.block_rows,
                "generation": self.generation, "ann_keys": self._ann.count() if self._ann is not None else 0}
        members = {"ids": self._ids[:self._n],
                   "ann": self._ann.serialize() if self._ann is not None else np.zeros(0, np.uint8)}
        if self.vectors_file and not vectors_inline:
            if self.read_only:
                raise SearchIndexError(f"{self.vectors_file}: the index was loaded read-only; load it with "
                                       "read_only=False to save it.")
            self._write_tail(sync=True)
            meta.update(vectors_file=os.path.basename(self.vectors_file), vector_rows=self._n_base)
        else:
            members["vectors"] = self._gather(np.arange(self._n)) if self._n_base else self._tail[:self._n]
        np.savez(file, meta=np.array(json.dumps(meta)), **members)

    @classmethod
    def load(cls, file, threads=None, read_only=False, vectors_dir=None):
        """Reads an index written by :meth:`save` (no pickle).

        Args:
          file: the .npz, a path or a binary file object.
          threads: the ANN's threads (the fast scan's shard count).
          read_only: never write the vector file (an index searched beside the one process that writes it): added
            rows stay in RAM, removed ones are never compacted, :meth:`save` refuses.
          vectors_dir: the folder of the vector file a file-backed index names (default: the .npz's folder, or the
            current directory for a file object).

        Returns:
          The Index; a file-backed one maps rows [0, vector_rows) of its vector file read-only.

        Raises:
          SearchIndexError: the .npz is unreadable, or its vector file is missing or shorter than it says.
        """
        try:
            with np.load(file, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                ids, ann = data["ids"], data["ann"]
                vectors = data["vectors"] if "vectors" in data.files else None
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as error:
            raise SearchIndexError(f"unreadable index ({type(error).__name__}: {error})") from error
        if meta.get("format") not in (FORMAT,) + EARLIER_FORMATS:
            raise SearchIndexError(f"unknown index format {meta.get('format')!r}")
        pq_bytes = meta["pq_bytes"]
        if meta["format"] not in ANN_FORMATS and meta["backend"] == "faiss-pqfs":
            pq_bytes = None     # earlier formats stored IVF-PQ's code size here; their fast scan used the default
        index = cls(kind=meta["kind"], dim=meta["dim"], dtype=meta["dtype"], ann_threshold=meta["ann_threshold"],
                    backend=meta["backend"], nprobe=meta["nprobe"], rerank=meta["rerank"], pq_bytes=pq_bytes,
                    min_candidates=meta.get("min_candidates"), block_rows=meta["block_rows"], threads=threads)
        index.generation, index.read_only = int(meta["generation"]), read_only
        index._ids, index._n = ids.astype(np.int64), len(ids)
        if vectors_dir is None:
            vectors_dir = os.path.dirname(os.fspath(file)) if isinstance(file, (str, os.PathLike)) else ""
        index._read_vectors(meta, vectors, vectors_dir)
        live = index._live_rows()
        index._row_of = dict(zip(index._ids[live].tolist(), live.tolist()))
        if len(index._row_of) != len(live):
            raise SearchIndexError("index holds repeated ids")
        if len(ann) and meta["format"] in ANN_FORMATS:
            index._ann = make_ann_backend(index.backend, index.dim, index.nprobe, index.pq_bytes, threads)
            index._ann.deserialize(ann)
            index._ann_size = len(index)
            # format 3 removed a dead row's key at once
            if index._ann.count() != meta.get("ann_keys", len(index)):
                index._ann = None     # stale ANN structure: rebuilt from the vectors on the next search
        return index

    def _read_vectors(self, meta, vectors, folder):
        """Takes the .npz's vectors into RAM, or maps the vector file it names (a plain name, in ``folder``)."""
        if vectors is not None:
            if vectors.shape != (self._n, self.dim):
                raise SearchIndexError(f"index holds {vectors.shape} vectors for {self._n} ids")
            self._tail = np.ascontiguousarray(vectors, self.dtype)
            return
        name, rows = meta.get("vectors_file"), meta.get("vector_rows")
        if not isinstance(name, str) or os.path.basename(name) != name or rows != self._n:
            raise SearchIndexError(f"index names vector file {name!r} with {rows} rows for {self._n} ids")
        self.vectors_file = os.path.join(folder, name)
        self._base, self._n_base = _map_rows(self.vectors_file, self.dtype, rows, self.dim), rows

    def memory_bytes(self):
        """Approximate RAM held (int bytes): the RAM tail of the vector matrix (all of it unless file-backed), the
        ids and the ANN structure."""
        ann = self._ann.memory_bytes() if self._ann is not None else 0
        return int(self._tail[:self._n - self._n_base].nbytes + self._ids[:self._n].nbytes + ann)


class _Rows:
    """The vectors of ``rows`` (int64 [n]) of an index, gathered when indexed (by a slice or an index array; the
    ANN builds from it chunk by chunk, so a file-backed matrix is never read into RAM whole)."""

    def __init__(self, gather, rows, dtype):
        self._gather, self._rows, self.dtype = gather, rows, np.dtype(dtype)

    def __len__(self):
        return len(self._rows)

    def __getitem__(self, which):
        return self._gather(self._rows[which])

    def __array__(self, dtype=None, copy=None):
        return self[:].astype(dtype or self.dtype, copy=False)


def _map_rows(path, dtype, rows, dim):
    """Rows [0, rows) of the raw vector file ``path``: a read-only memory map [rows, dim] of ``dtype``. Raises
    SearchIndexError when the file is missing or shorter."""
    wanted = rows * dim * np.dtype(dtype).itemsize
    try:
        size = os.path.getsize(path)
        if size < wanted:
            raise SearchIndexError(f"{path}: vector file truncated ({size} of {wanted} bytes)")
        return np.memmap(path, dtype, "r", shape=(rows, dim)) if rows else np.zeros((0, dim), dtype)
    except OSError as error:
        raise SearchIndexError(f"{path}: vector file unreadable ({error.strerror})") from error


def fresh_vectors_file(path):
    """A new name (str) for a vector file beside ``path``: ``NAME-<random hex>.EXT`` for ``NAME.EXT`` or
    ``NAME-<hex>.EXT``. Never a name used before, so never one under which a reader may map an older file."""
    stem, extension = os.path.splitext(path)
    return f"{NAME_TOKEN.sub('', stem)}-{secrets.token_hex(NAME_TOKEN_BYTES)}{extension}"


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
    ("faiss-ivfpq", for galleries past RAM): native add_with_ids, so it stays incremental."""

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

    def keep(self, keys, vectors):
        """Rebuilt from ``vectors`` (the kept entries', in ``keys`` order): an IVF holds its ids inside its lists."""
        del keys
        self.build(np.arange(len(vectors), dtype=np.int64), vectors)

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
    rotation. The entries are dealt to one scan per thread by key modulo the shard count as they are added, so a
    single query's scan runs on every core (it is bound by memory bandwidth, which one core does not use up); a
    compaction renumbers keys where they lie. Each shard is an IndexIDMap over an IndexPQFastScan: native
    add_with_ids, so it stays incremental."""

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

    def keep(self, keys, vectors):
        """Drops the entries not keyed in ``keys`` (int64 [m], ascending) and renumbers the kept ones 0..m-1 in
        that order, in place: no code is computed again (``vectors`` unused)."""
        del vectors
        faiss = self._faiss
        for shard in self.shards:
            held = faiss.vector_to_array(shard.id_map)
            gone = held[~np.isin(held, keys)]
            if len(gone):
                shard.remove_ids(np.ascontiguousarray(gone))
                self._clear_tail_slots(shard)
            faiss.copy_array_to_vector(np.searchsorted(keys, faiss.vector_to_array(shard.id_map)), shard.id_map)

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
    """usearch HNSW over inner product with float16 vectors in the graph (add is native)."""

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

    def candidates(self, queries, count):
        matches = self.index.search(np.ascontiguousarray(queries, np.float32), count, threads=self.threads)
        keys = np.asarray(matches.keys, np.int64)
        if keys.ndim == 1:      # one query: usearch answers a Matches of the found keys only
            return np.pad(keys, (0, count - len(keys)), constant_values=-1)[None]
        found = np.asarray(matches.counts).reshape(len(queries), 1)
        return np.where(np.arange(keys.shape[1]) < found, keys, -1)

    def keep(self, keys, vectors):
        """Rebuilt from ``vectors`` (the kept entries', in ``keys`` order): a removal leaves a graph node behind."""
        del keys
        self.build(np.arange(len(vectors), dtype=np.uint64), vectors)

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
    vectors)``, ``keep(keys, vectors)`` (drop the other keys, renumber the kept ones 0..m-1; ``vectors`` theirs),
    ``candidates(queries [q, dim], count) -> keys int64 [q, count]`` (-1 = none; an
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
        path: the vector matrix lives in that raw file, created or overwritten, memory-mapped read-only, instead of
        RAM, for galleries whose vectors exceed RAM: rows are appended to it TAIL_ROWS at a time and on
        :meth:`Index.save`, which then names the file in the .npz (saved beside it) instead of holding the vectors;
        :meth:`Index.load` maps it again. The ANN structure and ids stay in RAM).
    """
    return Index(kind=kind, dim=dim, dtype=dtype, ann_threshold=ann_threshold, **options)
