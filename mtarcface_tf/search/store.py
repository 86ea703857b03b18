"""The gallery store: a directory holding a SQLite database (the truth) and the search index beside it (derived).

``gallery.db`` (WAL; readers keep reading while one writer writes) holds ``people`` (name, mean template), ``images``
(one row per enrolled image: source path, SHA-256 of its bytes, time, mask status and probability, detection score,
embedding blob float32 or float16), ``removed`` (tombstones for the index's catch-up) and ``meta`` (format version,
model fingerprint, embedding size and dtype, ``generation``). Every enrol / remove / rename is one transaction that
also bumps ``generation``. ``index.npz`` is the :class:`~mtarcface_tf.search.index.Index` of the people's templates,
written under a temporary name and renamed, and tagged with the generation it reflects; by default its vectors are
in ``vectors-<random hex>.bin`` beside it (``map_vectors``), which every reader memory-maps read-only and the writer
only appends to past the rows the saved index names (a compaction writes a new file). On open the index is
caught up from the database (people changed and removed since its generation) and checked (entry count and id sum
equal the database's); an index that is missing, unreadable or disagrees is rebuilt from the database, never used.
One writer at a time: a writable store holds an exclusive lock on ``writer.lock``.
"""
import contextlib
import fcntl
import logging
import os
import re
import sqlite3
import struct
import tempfile
import time

import numpy as np

from mtarcface_tf.search.index import (
    NAME_TOKEN_BYTES,
    Index,
    SearchIndexError,
    fresh_vectors_file,
    make_index,
)

LOG = logging.getLogger(__name__)

FORMAT_VERSION = 1
DB_NAME = "gallery.db"
INDEX_NAME = "index.npz"
TUNED_SETTINGS = ("pq_bytes", "min_candidates")    # ANN settings a gallery records (retune) for its indexes
VECTORS_NAME = "vectors.bin"           # the index's vector file is vectors-<random hex>.bin, a new one per compaction
VECTORS_PATTERN = re.compile(rf"vectors-[0-9a-f]{{{2 * NAME_TOKEN_BYTES}}}\.bin")
TEMP_INDEX_PREFIX, TEMP_INDEX_SUFFIX = ".index-", ".npz.tmp"     # index.npz while it is written
INDEX_READ_ATTEMPTS = 2                # a compaction may delete the vector file between reading index.npz and mapping
LOCK_NAME = "writer.lock"
BUSY_TIMEOUT_MS = 10_000
SQLITE_HEADER = b"SQLite format 3\x00"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS people (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, created REAL NOT NULL, generation INTEGER NOT NULL,
    template BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY, person_id INTEGER NOT NULL REFERENCES people(id) ON DELETE CASCADE,
    source TEXT, sha256 TEXT UNIQUE, enrolled REAL NOT NULL, masked INTEGER, mask_probability REAL,
    detection_score REAL, embedding BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS images_person ON images(person_id);
CREATE TABLE IF NOT EXISTS removed (person_id INTEGER PRIMARY KEY, generation INTEGER NOT NULL);
"""


class StoreError(ValueError):
    """A gallery that cannot be opened or written as asked (the message names the path and the fix)."""


class NotEnrolledError(StoreError):
    """A name nobody in the gallery has (``name``: str)."""

    def __init__(self, name, path):
        super().__init__(f"{name!r} is not in the gallery {path or ''}".rstrip() +
                         "; tools/recognize.py list shows who is.")
        self.name = name


class ModelMismatchError(StoreError):
    """The gallery was enrolled with another model than the one asked to search or extend it."""


def _normalize(vectors):
    vectors = np.asarray(vectors, np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1)


def _check_sqlite_file(path):
    """Raises StoreError when ``path`` is not a complete SQLite file: wrong header, or shorter than the page count
    its header records (a truncated copy)."""
    try:
        with open(path, "rb") as handle:
            header = handle.read(100)
        size = os.path.getsize(path)
    except OSError as error:
        raise StoreError(f"{path}: cannot be read ({error.strerror}).") from error
    if len(header) < 100 or not header.startswith(SQLITE_HEADER):
        raise StoreError(f"{path}: not a gallery database (no SQLite header); restore it from a backup or enrol "
                         "again into a new --gallery folder.")
    page_size = struct.unpack(">H", header[16:18])[0]
    page_size = 65536 if page_size == 1 else page_size
    pages = struct.unpack(">I", header[28:32])[0]
    if pages and size < pages * page_size:
        raise StoreError(f"{path}: truncated ({size} of {pages * page_size} bytes); restore it from a backup or "
                         "enrol again into a new --gallery folder.")


class GalleryStore:
    """One gallery directory. Open with :meth:`open`; use as a context manager (closing flushes the index).

    Attributes: ``path`` (the directory, or None in memory), ``writable``, ``dim``, ``dtype``,
    ``fingerprint`` (str or None), ``index`` (the :class:`Index` of person templates; ids = person ids).
    """

    def __init__(self, connection, path, writable, lock, index_options, map_vectors=True):
        self._db, self.path, self.writable, self._lock = connection, path, writable, lock
        self._index_options = dict(index_options or {})
        self._map_vectors = map_vectors
        self.index = None
        self._dirty = False
        self._new_fingerprint = None      # adopted by a gallery without one on its next write

    # ---- opening -------------------------------------------------------------------------------------------------
    @classmethod
    def open(cls, path, writable=False, dim=None, dtype="float32", fingerprint=None, force=False,
             index_options=None, map_vectors=True):
        """Opens (and with ``writable`` creates) the gallery directory ``path`` (None: a private in-memory one).

        Args:
          path: directory (str / PathLike) or None.
          writable: take the writer lock; create the directory and database when absent.
          dim, dtype: embedding size and blob dtype ("float32" | "float16") of a new gallery (dim may stay None
            until the first enrolment).
          fingerprint: the model's fingerprint (str); checked against the gallery's unless ``force``; a new gallery
            records it.
          index_options: ``make_index`` keyword arguments (kind, ann_threshold, backend, nprobe, ...).
          map_vectors: keep the index's vectors in the folder's vector file (``vectors-<random hex>.bin``),
            memory-mapped read-only and shared by every process through the page cache, instead of a copy in each
            process's RAM; a reader's own catch-up (changes committed after the saved index) stays in its RAM.
            False: in RAM.

        Raises:
          StoreError: missing / corrupt / truncated database, newer format, another writer holds the lock.
          ModelMismatchError: ``fingerprint`` differs from the gallery's and ``force`` is off.
        """
        if path is None:
            store = cls(sqlite3.connect(":memory:", isolation_level=None), None, True, None, index_options)
        else:
            store = cls._open_directory(os.fspath(path), writable, index_options, map_vectors)
        try:
            store._prepare(dim, dtype, fingerprint, force)
        except sqlite3.DatabaseError as error:
            store.close()
            raise StoreError(f"{store._db_path()}: damaged database ({error}); restore it from a backup or enrol "
                             "again into a new --gallery folder.") from error
        except BaseException:
            store.close()
            raise
        return store

    @classmethod
    def _open_directory(cls, path, writable, index_options, map_vectors):
        db_path = os.path.join(path, DB_NAME)
        if os.path.exists(path) and not os.path.isdir(path):
            raise StoreError(f"{path}: is a file; --gallery takes a gallery folder (created by enroll).")
        if not writable and not os.path.isfile(db_path):
            raise StoreError(f"{path}: no gallery here ({DB_NAME} missing); create it with tools/recognize.py enroll.")
        if os.path.isfile(db_path):
            _check_sqlite_file(db_path)
        lock = None
        if writable:
            os.makedirs(path, exist_ok=True)
            lock = open(os.path.join(path, LOCK_NAME), "a+", encoding="utf-8")  # noqa: SIM115 (held until close)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as error:
                lock.close()
                raise StoreError(f"{path}: another process is writing to this gallery; wait for it to finish "
                                 "(one writer at a time; readers are fine).") from error
            uri = f"file:{db_path}"
        else:
            uri = f"file:{db_path}?mode=ro"
        try:
            connection = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
        except sqlite3.Error as error:
            if lock:
                lock.close()
            raise StoreError(f"{db_path}: cannot be opened ({error}).") from error
        return cls(connection, path, writable, lock, index_options, map_vectors)

    def _db_path(self):
        return os.path.join(self.path, DB_NAME) if self.path else ":memory:"

    def _prepare(self, dim, dtype, fingerprint, force):
        self._db.execute("PRAGMA foreign_keys = ON")
        if self.writable:
            if self.path:
                self._db.execute("PRAGMA journal_mode = WAL")
                self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.executescript(SCHEMA)
            if self._meta("format_version") is None:
                self._set_meta(format_version=FORMAT_VERSION, generation=0, dtype=dtype, created=time.time())
        version = self._meta("format_version")
        if version is None:
            raise StoreError(f"{self._db_path()}: not a gallery database (no format version); enrol into a new "
                             "--gallery folder.")
        if int(version) > FORMAT_VERSION:
            raise StoreError(f"{self._db_path()}: gallery format version {version} is newer than this program's "
                             f"{FORMAT_VERSION}; upgrade mtarcface_tf to read it.")
        stored_dim = self._meta("dim")
        self.dim = int(stored_dim) if stored_dim is not None else dim
        self.dtype = self._meta("dtype")
        self.fingerprint = self._meta("fingerprint")
        self.check_model(fingerprint, force)
        self._load_index()

    def check_model(self, fingerprint, force=False):
        """Raises ModelMismatchError when ``fingerprint`` (str or None = unknown) differs from the gallery's,
        unless ``force``; a gallery without one adopts it on the next write."""
        if fingerprint is None or self.fingerprint is None or fingerprint == self.fingerprint or force:
            self._new_fingerprint = fingerprint if self.fingerprint is None else None
            return
        raise ModelMismatchError(
            f"{self.path or 'the gallery'}: enrolled with model {self.fingerprint[:12]}, this model is "
            f"{fingerprint[:12]}; its embeddings are not comparable: use the gallery's model, enrol into a new "
            "--gallery, or pass --force.")

    # ---- low level -----------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _transaction(self):
        if not self.writable:
            raise StoreError(f"{self.path}: opened read-only; open it writable to change it.")
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _meta(self, key):
        try:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        except sqlite3.OperationalError as error:
            if "no such table" in str(error):
                return None
            raise
        return None if row is None else row[0]

    def _set_meta(self, **values):
        self._db.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                             [(key, str(value)) for key, value in values.items()])

    @property
    def generation(self):
        """int: bumped by every committed change of people or templates."""
        return int(self._meta("generation") or 0)

    def _blob(self, vector):
        return np.asarray(vector, self.dtype).tobytes()

    def _vectors(self, blobs):
        return np.frombuffer(b"".join(blobs), self.dtype).reshape(len(blobs), self.dim).astype(np.float32)

    # ---- the index -----------------------------------------------------------------------------------------------
    def _index_path(self):
        return os.path.join(self.path, INDEX_NAME) if self.path else None

    def _load_index(self):
        """Loads index.npz, catches it up from the database and checks it; otherwise rebuilds it."""
        path = self._index_path()
        if self.dim is None:
            self.index = None
            return
        if path and os.path.isfile(path):
            index, reason = self._read_index(path)
        else:
            index, reason = None, "missing" if path else "in memory"
        if reason is None:
            self.index = index
            self.index.retune(**self._tuned())     # the recorded settings, when a retune was not saved yet
            self._place_vectors()
            return
        if path and self.count():
            LOG.warning("%s: %s; rebuilt from %s (%d people).", path, reason, DB_NAME, self.count())
        self.rebuild_index()

    def _read_index(self, path):
        """(index, None) when ``path`` loads and, caught up, agrees with the database; else (None, the reason)."""
        for _ in range(INDEX_READ_ATTEMPTS):
            try:
                index = Index.load(path, threads=self._index_options.get("threads"), read_only=not self.writable)
                break
            except SearchIndexError as error:
                reason = f"unreadable ({error})"
        else:
            return None, reason
        if self.writable:      # before the catch-up, which may compact into a new file
            self._remove_leftovers(index.vectors_file)
        reason = self._catch_up(index)
        return (index, None) if reason is None else (None, reason)

    def _place_vectors(self):
        """Moves a loaded index's vectors where ``map_vectors`` wants them: the writer's into a new vector file
        (an index saved in RAM, e.g. by an earlier version), anyone's into RAM when not mapped."""
        if self.index.vectors_file and not self._map_vectors:
            self.index.move_vectors(None)
        elif not self.index.vectors_file and self._maps_own_vectors():
            self.index.move_vectors(self._new_vectors_path())
        else:
            return
        self._dirty = self.writable

    def _maps_own_vectors(self):
        return bool(self.path and self.writable and self._map_vectors)

    def _new_vectors_path(self):
        return fresh_vectors_file(os.path.join(self.path, VECTORS_NAME))

    def _remove_leftovers(self, kept):
        """Deletes the folder's vector files other than ``kept`` (path or None), left by a crashed save or
        compaction or replaced by a compaction (a reader that mapped it keeps its mapping: unlink semantics), and
        the temporary index files of a killed save (only the writer, who holds the lock, writes them)."""
        for name in os.listdir(self.path):
            unnamed = VECTORS_PATTERN.fullmatch(name) and name != os.path.basename(kept or "")
            if unnamed or (name.startswith(TEMP_INDEX_PREFIX) and name.endswith(TEMP_INDEX_SUFFIX)):
                os.remove(os.path.join(self.path, name))

    def _catch_up(self, index):
        """Applies the changes committed after ``index.generation``; returns None when the index then agrees with
        the database, else the reason (str) it cannot be used."""
        generation = self.generation
        if index.dim != self.dim or index.dtype != self._full_index_options()["dtype"] \
                or index.generation > generation:
            return "made for another gallery state"
        if index.generation < generation:
            removed = [row[0] for row in self._db.execute("SELECT person_id FROM removed WHERE generation > ?",
                                                          (index.generation,))]
            changed = self._db.execute("SELECT id, template FROM people WHERE generation > ?",
                                       (index.generation,)).fetchall()
            index.remove(np.array(removed + [row[0] for row in changed], np.int64))
            if changed:
                index.add(np.array([row[0] for row in changed], np.int64), self._vectors([row[1] for row in changed]))
            index.generation = generation
            self._dirty = True
        count, id_sum = self._db.execute("SELECT COUNT(*), COALESCE(SUM(id), 0) FROM people").fetchone()
        if len(index) != count or int(index.ids.sum()) != id_sum:
            return f"holds {len(index)} people, {DB_NAME} {count}"
        return None

    def _full_index_options(self):
        """``make_index`` arguments: the index keeps the blobs' dtype unless ``index_options`` say otherwise (a
        float16 database with a float32 index: half the disk, exact single queries without conversion)."""
        return {"kind": "auto", "dtype": self.dtype, **self._tuned(), **self._index_options}

    def _tuned(self):
        """The ANN settings :meth:`retune` recorded in ``meta`` ({name: int})."""
        recorded = {key: self._meta(f"index_{key}") for key in TUNED_SETTINGS}
        return {key: int(value) for key, value in recorded.items() if value is not None}

    def retune(self, pq_bytes=None, min_candidates=None):
        """Sets the ANN's code size in bytes and candidates re-ranked per query at least (ints; None keeps one; see
        ``make_index``), records them in ``meta`` for every index this gallery builds, and applies them now; the
        ANN is rebuilt when the code size changes, and the index saved on :meth:`flush`. Raises StoreError on a
        value the index cannot use, changing nothing."""
        values = {key: int(value) for key, value in zip(TUNED_SETTINGS, (pq_bytes, min_candidates))
                  if value is not None}
        if values.get("min_candidates", 1) < 1:
            raise StoreError(f"min_candidates must be >= 1, got {values['min_candidates']}.")
        code_bytes = self.index.pq_bytes if self.index is not None else None
        with self._transaction():
            self._set_meta(**{f"index_{key}": str(value) for key, value in values.items()})
            if self.index is not None:
                try:
                    self.index.retune(**values)
                except SearchIndexError as error:
                    raise StoreError(f"{self.path or 'the gallery'}: {error}") from error
        if self.index is not None:
            if self.index.pq_bytes != code_bytes and self.index.uses_ann():
                self.index.build_ann()
            self._dirty = True

    def rebuild_index(self):
        """Rebuilds the index from the people's templates in the database (marks it to be saved)."""
        vectors_file = self._new_vectors_path() if self._maps_own_vectors() else None
        index = make_index(dim=self.dim, **{**self._full_index_options(), "vectors_file": vectors_file})
        rows = self._db.execute("SELECT id, template FROM people ORDER BY id").fetchall()
        if rows:
            index.add(np.array([row[0] for row in rows], np.int64), self._vectors([row[1] for row in rows]))
        index.generation = self.generation
        self.index, self._dirty = index, True

    def flush(self):
        """Writes the index beside the database when it changed since loading: its new vector rows appended to its
        vector file and synced, then index.npz (temporary name, synced, renamed); then deletes vector files that
        index.npz no longer names."""
        if not (self.writable and self.path and self._dirty and self.index is not None):
            return
        self._write_index(self.path)
        self._remove_leftovers(self.index.vectors_file)
        with self._transaction():
            self._db.execute("DELETE FROM removed WHERE generation <= ?", (self.index.generation,))
        self._dirty = False

    def _write_index(self, directory, vectors_inline=False):
        handle, temp_path = tempfile.mkstemp(prefix=TEMP_INDEX_PREFIX, suffix=TEMP_INDEX_SUFFIX, dir=directory)
        try:
            with os.fdopen(handle, "wb") as temp_file:
                self.index.save(temp_file, vectors_inline=vectors_inline)
                temp_file.flush()
                os.fsync(temp_file.fileno())
            os.replace(temp_path, os.path.join(directory, INDEX_NAME))
        except BaseException:
            os.unlink(temp_path)
            raise
        folder = os.open(directory, os.O_RDONLY)
        try:        # the rename itself reaches the disk (a power loss after it keeps the new index.npz)
            os.fsync(folder)
        finally:
            os.close(folder)

    def close(self):
        """Flushes the index (writable stores) and closes the database and the writer lock."""
        try:
            if self._db is not None:
                self.flush()
        finally:
            if self._db is not None:
                self._db.close()
                self._db = None
            if self._lock is not None:
                self._lock.close()
                self._lock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- writing -------------------------------------------------------------------------------------------------
    def enroll(self, name, embeddings, sources=None, hashes=None, masked=None, mask_probability=None,
               detection_scores=None):
        """Adds images of ``name`` (a new person, or more images of an enrolled one) in one transaction.

        Args:
          name: non-empty str.
          embeddings: float [K, D] (normalized here).
          sources, hashes: optional list[str] [K]: image paths and SHA-256 hex digests of their bytes; an image
            whose hash is already enrolled (for anyone) is skipped.
          masked: optional bool [K]; mask_probability, detection_scores: optional float [K].

        Returns:
          dict ``{"person_id": int, "added": int, "duplicates": [(source, enrolled person name), ...]}``.

        Raises:
          StoreError: empty name, no embeddings, wrong size, read-only store.
        """
        return self.enroll_many([{"name": name, "embeddings": embeddings, "sources": sources, "hashes": hashes,
                                      "masked": masked, "mask_probability": mask_probability,
                                      "detection_scores": detection_scores}])[0]

    def enroll_many(self, people):
        """Enrols several people (dicts of :meth:`enroll`'s arguments) in one transaction; returns their results."""
        prepared = [self._prepared(person) for person in people]
        # normalized images and mean templates computed for the whole batch: per-person numpy calls dominated
        # enrolling a million people
        counts = np.array([len(person["embeddings"]) for person in prepared])
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        embeddings = _normalize(np.concatenate([person["embeddings"] for person in prepared]))
        templates = _normalize(np.add.reduceat(embeddings, starts, axis=0) / counts[:, None])
        for person, start, count, template in zip(prepared, starts, counts, templates):
            person["embeddings"], person["template"] = embeddings[start:start + count], template
        if self.dim is None:
            self.dim = prepared[0]["embeddings"].shape[1]
        results = []
        with self._transaction():
            generation = self.generation + 1
            if self._meta("dim") is None:
                self._set_meta(dim=self.dim)
            if self._new_fingerprint:
                self._set_meta(fingerprint=self._new_fingerprint)
                self.fingerprint, self._new_fingerprint = self._new_fingerprint, None
            for person in prepared:
                results.append(self._write_person(person, generation))
            self._set_meta(generation=generation)
        if self.index is None:
            self.rebuild_index()
            return results
        changed = [result for result in results if result["added"]]
        if changed:
            ids = np.array([result["person_id"] for result in changed], np.int64)
            self.index.remove(ids)
            # the stored blobs, decoded: the index holds what a rebuild from the database would
            self.index.add(ids, self._vectors([result.pop("template_blob") for result in changed]))
        for result in results:
            result.pop("template_blob", None)
        self.index.generation = self.generation
        self._dirty = True
        return results

    def _prepared(self, person):
        name, embeddings = person["name"], np.atleast_2d(np.asarray(person["embeddings"], np.float32))
        if not isinstance(name, str) or not name.strip():
            raise StoreError(f"person name must be a non-empty string, got {name!r}.")
        if embeddings.ndim != 2 or not len(embeddings):
            raise StoreError(f"{name}: no embeddings to enrol (shape {embeddings.shape}).")
        if self.dim is not None and embeddings.shape[1] != self.dim:
            raise StoreError(f"{name}: embeddings have size {embeddings.shape[1]}, the gallery holds {self.dim}; "
                             "enrol with the gallery's model.")
        count = len(embeddings)

        def column(key):
            values = person.get(key)
            if values is None:
                return [None] * count
            if len(values) != count:
                raise StoreError(f"{name}: {key} has {len(values)} entries for {count} embeddings.")
            return list(values)

        return {"name": name, "embeddings": embeddings, "sources": column("sources"),
                    "hashes": column("hashes"), "masked": column("masked"),
                    "mask_probability": column("mask_probability"),
                    "detection_scores": column("detection_scores")}

    def _write_person(self, person, generation):
        now, duplicates, rows, kept = time.time(), [], [], []
        for i, embedding in enumerate(person["embeddings"]):
            digest = person["hashes"][i]
            if digest is not None:
                owner = self._db.execute("SELECT p.name FROM images i JOIN people p ON p.id = i.person_id "
                                         "WHERE i.sha256 = ?", (digest,)).fetchone()
                if owner is not None:
                    duplicates.append((person["sources"][i], owner[0]))
                    continue
            kept.append(i)
            masked = person["masked"][i]
            rows.append((person["sources"][i], digest, now, None if masked is None else int(bool(masked)),
                         _float_or_none(person["mask_probability"][i]),
                         _float_or_none(person["detection_scores"][i]), self._blob(embedding)))
        found = self._db.execute("SELECT id FROM people WHERE name = ?", (person["name"],)).fetchone()
        if not rows:
            return {"person_id": found[0] if found else None, "added": 0, "duplicates": duplicates}
        if found is None:
            template = self._blob(person["template"] if len(kept) == len(person["embeddings"])
                                  else _normalize(person["embeddings"][kept].mean(axis=0)))
            person_id = self._db.execute("INSERT INTO people(name, created, generation, template) VALUES (?,?,?,?)",
                                         (person["name"], now, generation, template)).lastrowid
        else:
            person_id = found[0]
        self._db.executemany("INSERT INTO images(person_id, source, sha256, enrolled, masked, mask_probability, "
                             "detection_score, embedding) VALUES (?,?,?,?,?,?,?,?)",
                             [(person_id, *row) for row in rows])
        if found is not None:
            template = self._blob(_normalize(self.person_embeddings(person_id).mean(axis=0)))
            self._db.execute("UPDATE people SET template = ?, generation = ? WHERE id = ?",
                             (template, generation, person_id))
        return {"person_id": person_id, "added": len(rows), "duplicates": duplicates, "template_blob": template}

    def remove(self, *names):
        """Removes the people ``names`` (str each; repeats count once) and their images in one transaction: all of
        them, or none when one is not enrolled (NotEnrolledError naming it). The index drops them in one call, so a
        mass removal compacts it at most once."""
        if not names:
            return
        with self._transaction():
            person_ids = [self._person_id(name) for name in names]
            generation = self.generation + 1
            self._db.executemany("DELETE FROM people WHERE id = ?", [(person,) for person in person_ids])
            self._db.executemany("INSERT OR REPLACE INTO removed(person_id, generation) VALUES (?, ?)",
                                 [(person, generation) for person in person_ids])
            self._set_meta(generation=generation)
        if self.index is not None:
            self.index.remove(np.array(person_ids, np.int64))
            self.index.generation = self.generation
            self._dirty = True

    def rename(self, old, new):
        """Renames a person (one transaction). Raises StoreError for an unknown ``old`` or a taken ``new``."""
        if not isinstance(new, str) or not new.strip():
            raise StoreError(f"new name must be a non-empty string, got {new!r}.")
        with self._transaction():
            person_id = self._person_id(old)
            if self._db.execute("SELECT 1 FROM people WHERE name = ?", (new,)).fetchone():
                raise StoreError(f"{new!r} is already enrolled; remove it first or choose another name.")
            self._db.execute("UPDATE people SET name = ? WHERE id = ?", (new, person_id))

    def set_option(self, **values):
        """Records gallery-wide options (str values) in ``meta`` (e.g. use_svm)."""
        with self._transaction():
            self._set_meta(**values)

    @property
    def index_options(self):
        """dict: the ``make_index`` keyword arguments this store builds its index with."""
        return dict(self._index_options)

    def copy_database(self, directory):
        """Writes a consistent copy of the database (SQLite's online backup) to ``directory``/gallery.db, which
        must not exist, and the index beside it (its vectors inside index.npz)."""
        target_path = os.path.join(os.fspath(directory), DB_NAME)
        if os.path.exists(target_path):
            raise StoreError(f"{directory}: a gallery exists there already; choose another path.")
        os.makedirs(directory, exist_ok=True)
        target = sqlite3.connect(target_path)
        try:
            self._db.backup(target)
        finally:
            target.close()
        if self.index is not None:
            self._write_index(directory, vectors_inline=True)

    def option(self, key, default=None):
        """Returns the gallery-wide option ``key`` (str) or ``default``."""
        value = self._meta(key)
        return default if value is None else value

    # ---- reading -------------------------------------------------------------------------------------------------
    def _person_id(self, name):
        row = self._db.execute("SELECT id FROM people WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotEnrolledError(name, self.path)
        return row[0]

    def count(self):
        """Number of enrolled people (int)."""
        return self._db.execute("SELECT COUNT(*) FROM people").fetchone()[0]

    def __len__(self):
        return self.count()

    def people(self):
        """list of (person id int, name str, image count int), by id (enrolment order)."""
        return self._db.execute("SELECT p.id, p.name, COUNT(i.id) FROM people p LEFT JOIN images i "
                                "ON i.person_id = p.id GROUP BY p.id ORDER BY p.id").fetchall()

    def names_of(self, person_ids):
        """Names (list[str], "" for -1 / unknown ids) of int64 person ids [n]."""
        wanted = sorted({int(i) for i in np.ravel(person_ids) if i >= 0})
        names = {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start:start + 500]
            names.update(self._db.execute(f"SELECT id, name FROM people WHERE id IN ({','.join('?' * len(chunk))})",
                                          chunk).fetchall())
        return [names.get(int(i), "") for i in np.ravel(person_ids)]

    def person_embeddings(self, person):
        """float32 [K, D]: the image embeddings of a person (name str or id int), in enrolment order."""
        person_id = self._person_id(person) if isinstance(person, str) else int(person)
        blobs = [row[0] for row in self._db.execute("SELECT embedding FROM images WHERE person_id = ? ORDER BY id",
                                                    (person_id,))]
        return self._vectors(blobs) if blobs else np.zeros((0, self.dim or 0), np.float32)

    def all_embeddings(self):
        """(person ids int64 [N], embeddings float32 [N, D]) of every enrolled image, by person then image id."""
        rows = self._db.execute("SELECT person_id, embedding FROM images ORDER BY person_id, id").fetchall()
        if not rows:
            return np.zeros(0, np.int64), np.zeros((0, self.dim or 0), np.float32)
        return np.array([row[0] for row in rows], np.int64), self._vectors([row[1] for row in rows])

    def templates(self):
        """(person ids int64 [P], templates float32 [P, D]) by id."""
        rows = self._db.execute("SELECT id, template FROM people ORDER BY id").fetchall()
        if not rows:
            return np.zeros(0, np.int64), np.zeros((0, self.dim or 0), np.float32)
        return np.array([row[0] for row in rows], np.int64), self._vectors([row[1] for row in rows])

    def images(self, person):
        """list of dicts (source, sha256, enrolled, masked, mask_probability, detection_score) of a person."""
        person_id = self._person_id(person) if isinstance(person, str) else int(person)
        keys = ("source", "sha256", "enrolled", "masked", "mask_probability", "detection_score")
        rows = self._db.execute(f"SELECT {', '.join(keys)} FROM images WHERE person_id = ? ORDER BY id",
                                (person_id,)).fetchall()
        return [dict(zip(keys, row)) for row in rows]

    def search(self, queries, k):
        """Top-k people per query: (scores float32 [q, k] cosine, descending; person ids int64 [q, k]; -inf / -1
        padding). ``queries``: float [q, D], normalized here."""
        queries = _normalize(np.atleast_2d(queries))
        if self.index is None:
            return (np.full((len(queries), k), -np.inf, np.float32), np.full((len(queries), k), -1, np.int64))
        return self.index.search(queries, k)

    def stats(self):
        """dict: people, images, masked images, dim, dtype, fingerprint, generation, format version, index kind,
        entries and ANN settings (``index_pq_bytes`` None: the default code size), database, index and vector file
        sizes in bytes."""
        people, images, masked = self._db.execute(
            "SELECT (SELECT COUNT(*) FROM people), COUNT(*), COALESCE(SUM(masked), 0) FROM images").fetchone()
        index = self.index
        files = {"database_bytes": self.path and self._db_path(), "index_bytes": self._index_path(),
                 "vectors_bytes": index.vectors_file if index is not None else None}
        sizes = {}
        for key, file_path in files.items():
            sizes[key] = os.path.getsize(file_path) if file_path and os.path.isfile(file_path) else 0
        return dict(people=people, images=images, masked_images=int(masked), dim=self.dim, dtype=self.dtype,
                    fingerprint=self.fingerprint, generation=self.generation, format_version=FORMAT_VERSION,
                    index_entries=len(index) if index is not None else 0,
                    index_search=("ann" if index is not None and index.uses_ann() else "exact"),
                    index_pq_bytes=index.pq_bytes if index is not None else None,
                    index_min_candidates=index.min_candidates if index is not None else None,
                    **sizes)


def _float_or_none(value):
    return None if value is None else float(value)
