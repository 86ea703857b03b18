"""search/store.py: transactions, duplicates, model fingerprint, the index kept consistent with the database, and
one clear error for each fault (kill -9 during enrolment, corrupt / truncated database, missing / truncated index,
second writer, unknown format version). No TensorFlow: these run in seconds."""
import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from mtarcface_tf.search import index as index_module
from mtarcface_tf.search.index import Index
from mtarcface_tf.search.store import (
    INDEX_NAME,
    GalleryStore,
    ModelMismatchError,
    NotEnrolledError,
    StoreError,
)

DIM = 16
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _vectors(seed, count):
    rows = np.random.default_rng(seed).normal(size=(count, DIM)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _consistent(store):
    """Every person's stored template is its own best match through the index, and the index holds exactly the
    database's people."""
    ids, templates = store.templates()
    assert sorted(store.index.ids.tolist()) == sorted(ids.tolist())
    if len(ids):
        _, found = store.search(templates, 1)
        np.testing.assert_array_equal(found[:, 0], ids)


def test_enrol_remove_rename_and_duplicates(tmp_path):
    with GalleryStore.open(tmp_path / "g", writable=True, fingerprint="model-a") as store:
        first = store.enroll("ann", _vectors(0, 3), sources=["a1", "a2", "a3"], hashes=["h1", "h2", "h3"],
                             masked=[False, True, False], mask_probability=[0.1, 0.9, 0.2],
                             detection_scores=[0.99, 0.98, 0.97])
        again = store.enroll("bob", _vectors(1, 2), sources=["a2 copy", "b1"], hashes=["h2", "h9"])
        assert first["added"] == 3 and again["added"] == 1 and again["duplicates"] == [("a2 copy", "ann")]
        # the duplicate is not part of bob's template: it is his one new image
        np.testing.assert_allclose(store.templates()[1][1], _vectors(1, 2)[1], atol=1e-6)
        # the template is the renormalized mean of the person's images (independent: numpy on the inputs)
        mean = _vectors(0, 3).mean(axis=0)
        np.testing.assert_allclose(store.templates()[1][0], mean / np.linalg.norm(mean), atol=1e-6)
        assert [image["masked"] for image in store.images("ann")] == [0, 1, 0]
        store.rename("bob", "rob")
        with pytest.raises(StoreError, match="already enrolled"):
            store.rename("ann", "rob")
        store.remove("ann")
        with pytest.raises(StoreError, match="'ann' is not in the gallery"):
            store.remove("ann")
        assert [name for _, name, _ in store.people()] == ["rob"]
    with GalleryStore.open(tmp_path / "g") as store:
        assert store.stats()["people"] == 1 and store.stats()["images"] == 1
        _consistent(store)
        with pytest.raises(StoreError, match="read-only"):
            store.enroll("cy", _vectors(2, 1))


def test_incremental_index_equals_one_rebuilt_from_the_database(tmp_path):
    # float16 blobs: the index must hold the stored (rounded) templates, not the float32 ones enrolment computed
    queries = _vectors(9, 8)
    with GalleryStore.open(tmp_path / "g", writable=True, dtype="float16") as store:
        store.enroll("first", _vectors(99, 1))       # the first enrolment builds the index from the database
        store.enroll_many([{"name": f"p{i}", "embeddings": _vectors(i, 1 + i % 3)} for i in range(40)])
        store.enroll("p3", _vectors(100, 2))
        incremental = store.search(queries, 41)
        store.rebuild_index()
        rebuilt = store.search(queries, 41)
    np.testing.assert_array_equal(incremental[1], rebuilt[1])
    np.testing.assert_allclose(incremental[0], rebuilt[0], atol=1e-6)   # rows in another order: BLAS rounding


def test_model_mismatch_is_refused_unless_forced(tmp_path):
    with GalleryStore.open(tmp_path / "g", writable=True, fingerprint="a" * 64) as store:
        store.enroll("ann", _vectors(0, 1))
    with pytest.raises(ModelMismatchError, match=r"enrolled with model aaaaaaaaaaaa, this model is bbbbbbbbbbbb.*"
                                                 r"--force"):
        GalleryStore.open(tmp_path / "g", fingerprint="b" * 64)
    GalleryStore.open(tmp_path / "g", fingerprint="b" * 64, force=True).close()


def test_stale_missing_and_truncated_index_are_rebuilt_never_used(tmp_path, caplog):
    path = tmp_path / "g"
    with GalleryStore.open(path, writable=True) as store:
        store.enroll_many([{"name": f"p{i}", "embeddings": _vectors(i, 2)} for i in range(30)])
    saved = (path / INDEX_NAME).read_bytes()
    # A crash after the database commits but before the index is written: the old index is caught up.
    store = GalleryStore.open(path, writable=True)
    store.enroll("late", _vectors(99, 1))
    store.remove("p3")
    store._db.close()
    store._db = None
    store.close()
    caplog.clear()
    with GalleryStore.open(path) as reopened:
        assert "late" in [name for _, name, _ in reopened.people()]
        _consistent(reopened)
    assert not caplog.records       # caught up from the database's changes, not rebuilt
    # An index from another state of the database (more entries than the database holds) is rebuilt.
    with GalleryStore.open(path, writable=True) as writer:
        writer.remove("p4")
    (path / INDEX_NAME).write_bytes(saved)     # the older index, generation behind, holding p3 and p4
    with GalleryStore.open(path) as reopened:
        _consistent(reopened)
    for damage in (lambda: (path / INDEX_NAME).unlink(), lambda: (path / INDEX_NAME).write_bytes(saved[:100])):
        damage()
        caplog.clear()
        with GalleryStore.open(path) as reopened:
            _consistent(reopened)
        assert any("rebuilt from gallery.db" in record.getMessage() for record in caplog.records)


def test_second_writer_corrupt_truncated_and_newer_databases(tmp_path):
    path = tmp_path / "g"
    writer = GalleryStore.open(path, writable=True)
    writer.enroll_many([{"name": f"p{i}", "embeddings": _vectors(i, 4)} for i in range(400)])
    with pytest.raises(StoreError, match="another process is writing to this gallery"):
        GalleryStore.open(path, writable=True)
    with GalleryStore.open(path) as reader:      # readers work while the writer holds the gallery
        assert reader.count() == 400
    writer.close()
    db = path / "gallery.db"
    with sqlite3.connect(db) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    original = db.read_bytes()
    db.write_bytes(original[:len(original) // 2])
    with pytest.raises(StoreError, match=r"gallery.db: truncated"):
        GalleryStore.open(path)
    assert db.read_bytes() == original[:len(original) // 2]       # nothing overwritten
    db.write_bytes(b"this is not a database" * 10)
    with pytest.raises(StoreError, match="not a gallery database"):
        GalleryStore.open(path, writable=True)
    db.write_bytes(original)
    with sqlite3.connect(db) as connection:
        connection.execute("UPDATE meta SET value = '99' WHERE key = 'format_version'")
    with pytest.raises(StoreError, match="format version 99 is newer than this program's 1"):
        GalleryStore.open(path, writable=True)


WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from mtarcface_tf.search.store import GalleryStore
    rng = np.random.default_rng(0)
    with GalleryStore.open(sys.argv[1], writable=True, dim=16) as store:
        for person in range(10000):
            store.enroll(f"p{person}", rng.normal(size=(3, 16)))
            print(person, flush=True)
""")


def test_kill_9_during_enrolment_of_10k_people(tmp_path):
    path = tmp_path / "g"
    env = {**os.environ, "PYTHONPATH": REPO}
    process = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True,
                               env=env)
    last = -1
    for line in process.stdout:
        last = int(line)
        if last >= 300:
            break
    process.send_signal(signal.SIGKILL)
    for line in process.stdout:      # lines printed before the kill but not read yet
        last = int(line)
    process.wait()
    with GalleryStore.open(path, writable=True) as store:    # the lock died with the process
        people = store.people()
        assert last + 1 <= len(people) <= last + 2           # at most the person being written is lost
        assert {count for _, _, count in people} == {3}      # no half-written person
        _consistent(store)


# ---- the index's vectors in the gallery folder's vector file, mapped by every process ---------------------------
def _vector_files(path):
    return sorted(name for name in os.listdir(path) if name.startswith("vectors-"))


def _enrol(store, first, count):
    store.enroll_many([{"name": f"p{i}", "embeddings": _vectors(i, 2)} for i in range(first, first + count)])


def _top_k(queries, ids, templates, k):
    """numpy's full sort of a snapshot's similarities: the reference a reader's results must keep."""
    scores = queries @ templates.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), ids[order]


def test_readers_map_the_saved_vectors_and_keep_their_catch_up_in_ram(tmp_path):
    path = tmp_path / "g"
    with GalleryStore.open(path, writable=True) as store:
        _enrol(store, 0, 300)
    [name] = _vector_files(path)
    vectors = path / name
    assert vectors.stat().st_size == 300 * DIM * 4
    writer = GalleryStore.open(path, writable=True)
    _enrol(writer, 300, 20)                      # committed, not yet saved: a reader catches up in its RAM
    writer.remove("p5")
    with GalleryStore.open(path) as reader:
        assert isinstance(reader.index._base, np.memmap) and reader.index._n_base == 300
        assert reader.index.memory_bytes() < 320 * 8 + 20 * DIM * 4 + 4096
        assert reader.stats()["vectors_bytes"] == 300 * DIM * 4
        _consistent(reader)
    assert vectors.stat().st_size == 300 * DIM * 4
    writer.close()
    assert vectors.stat().st_size == 320 * DIM * 4
    with GalleryStore.open(path, writable=True, map_vectors=False) as store:     # back to RAM: the file goes
        assert store.index.vectors_file is None
        _consistent(store)
    assert _vector_files(path) == []
    with GalleryStore.open(path, map_vectors=False) as reader:
        _consistent(reader)


@pytest.mark.parametrize("kind", ["exact", "ann"])
def test_a_reader_keeps_its_snapshot_while_the_writer_removes_enrols_flushes_and_compacts(tmp_path, monkeypatch,
                                                                                          kind):
    """A reader opened on the saved gallery maps the same file pages as the writer writes (one page cache); its
    results must stay numpy's top-k over its snapshot through removals, enrolments, saves and a compaction."""
    monkeypatch.setattr(index_module, "TAIL_ROWS", 16)            # the writer appends to the file between saves too
    monkeypatch.setattr(index_module, "COMPACT_MIN_DEAD_ROWS", 8)
    path, options = tmp_path / "g", {"kind": kind, "min_candidates": 1000}     # ANN: every row re-ranked
    writer = GalleryStore.open(path, writable=True, index_options=options)
    _enrol(writer, 0, 200)
    writer.flush()
    reader = GalleryStore.open(path, index_options=options)
    ids, templates = reader.templates()
    queries = _vectors(7, 20)
    expected = _top_k(queries, ids, templates, 10)

    def reader_unchanged():
        scores, found = reader.search(queries, 10)
        np.testing.assert_array_equal(found, expected[1])
        np.testing.assert_allclose(scores, expected[0], atol=1e-5)

    for name in [f"p{i}" for i in range(0, 200, 10)]:
        writer.remove(name)
    _enrol(writer, 200, 10)
    reader_unchanged()
    writer.flush()                                                # 10 rows appended past the saved 200
    reader_unchanged()
    _enrol(writer, 210, 30)
    reader_unchanged()
    for name in [f"p{i}" for i in range(1, 130, 2)]:              # past a quarter of the rows dead: compacted
        writer.remove(name)
    reader_unchanged()
    compacted = os.path.basename(writer.index.vectors_file)
    assert compacted != os.path.basename(reader.index.vectors_file) and writer.index._n_base < 200
    _enrol(writer, 240, 30)
    writer.flush()
    assert _vector_files(path) == [compacted]                     # the reader's file is gone from the folder
    reader_unchanged()
    writer.close()
    reader_unchanged()
    reader.close()
    with GalleryStore.open(path) as reopened:
        _consistent(reopened)


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_a_missing_or_truncated_vector_file_is_rebuilt_with_one_warning(tmp_path, caplog, damage):
    path = tmp_path / "g"
    with GalleryStore.open(path, writable=True) as store:
        _enrol(store, 0, 50)
    [name] = _vector_files(path)
    vectors = path / name
    if damage == "missing":
        vectors.unlink()
    else:
        vectors.write_bytes(vectors.read_bytes()[:-1])
    for writable in (False, True):
        caplog.clear()
        with GalleryStore.open(path, writable=writable) as store:
            _consistent(store)
        warnings = [record.getMessage() for record in caplog.records]
        assert len(warnings) == 1 and f"{name}: vector file {damage if damage == 'truncated' else 'unread'}" \
            in warnings[0] and "rebuilt from gallery.db" in warnings[0]
    assert len(_vector_files(path)) == 1 and _vector_files(path) != [name]    # the writer's rebuild, in a new file
    caplog.clear()
    with GalleryStore.open(path) as reader:
        _consistent(reader)
    assert not caplog.records


def test_garbage_past_the_saved_rows_is_ignored_and_overwritten(tmp_path, caplog):
    path = tmp_path / "g"
    with GalleryStore.open(path, writable=True) as store:
        _enrol(store, 0, 50)
    vectors = path / _vector_files(path)[0]
    with open(vectors, "ab") as file:        # a crashed save's rows
        file.write(np.full((7, DIM), np.nan, np.float32).tobytes())
    with GalleryStore.open(path) as reader:
        _consistent(reader)
    with GalleryStore.open(path, writable=True) as store:
        _enrol(store, 50, 3)
    assert vectors.stat().st_size == 57 * DIM * 4
    with GalleryStore.open(path) as reader:
        _consistent(reader)
        assert reader.index._n_base == 53 and np.isfinite(reader.index.vectors).all()
    assert not caplog.records


def test_remove_takes_many_names_in_one_transaction_all_or_none(tmp_path, caplog):
    with GalleryStore.open(tmp_path / "g", writable=True) as store:
        store.enroll_many([{"name": f"p{i}", "embeddings": _vectors(i, 2)} for i in range(6)])
        store.flush()
        generation = store.generation
        store.remove("p1", "p3", "p1")                 # a repeat counts once
        assert store.generation == generation + 1 and [name for _, name, _ in store.people()] == ["p0", "p2", "p4",
                                                                                                 "p5"]
        assert store.stats()["images"] == 8
        with pytest.raises(NotEnrolledError, match="'nobody' is not in the gallery") as raised:
            store.remove("p4", "nobody", "p5")
        assert raised.value.name == "nobody" and store.generation == generation + 1 and len(store) == 4
        _consistent(store)
        with GalleryStore.open(tmp_path / "g") as reader:     # its saved index caught up with both removals
            assert reader.index.generation == generation + 1 and len(reader.index) == 4
            _consistent(reader)
    assert not caplog.records       # caught up from both tombstones, not rebuilt


def test_retune_is_recorded_for_every_index_the_gallery_builds(tmp_path):
    """Code size and candidates set once apply to the saved index, to a reader of an index saved before them, and to
    an index rebuilt from the database; a code size the index cannot use changes nothing."""
    options = {"ann_threshold": 100, "threads": 2}
    people = [{"name": f"p{i}", "embeddings": _vectors(i, 1)} for i in range(300)]
    with GalleryStore.open(tmp_path / "g", writable=True, index_options=options) as store:
        store.enroll_many(people)
        store.flush()
        store.retune(pq_bytes=8, min_candidates=40)
        assert store.index._ann.codes == 16 and store.index.min_candidates == 40
        with GalleryStore.open(tmp_path / "g") as reader:            # index.npz from before the retune
            assert (reader.index.pq_bytes, reader.index.min_candidates) == (8, 40)
            _consistent(reader)
        with pytest.raises(StoreError, match="code"):
            store.retune(pq_bytes=7)
        with pytest.raises(StoreError, match="min_candidates must be >= 1"):
            store.retune(min_candidates=0)
        assert store.stats()["index_pq_bytes"] == 8 and store.stats()["index_min_candidates"] == 40
    with GalleryStore.open(tmp_path / "g") as reader:                # the saved index
        assert reader.index._ann.codes == 16 and reader.index.min_candidates == 40
    os.remove(tmp_path / "g" / INDEX_NAME)
    with GalleryStore.open(tmp_path / "g", writable=True, index_options=options) as store:     # rebuilt
        assert (store.index.pq_bytes, store.index.min_candidates) == (8, 40)
        _consistent(store)


KILLED_IN_SAVE = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    from mtarcface_tf.search import index as index_module
    from mtarcface_tf.search.store import GalleryStore
    index_module.COMPACT_MIN_DEAD_ROWS = 8
    rng = np.random.default_rng(0)
    store = GalleryStore.open(sys.argv[1], writable=True, dim=16)
    store.enroll_many([{"name": f"p{i}", "embeddings": rng.normal(size=(2, 16))} for i in range(100)])
    store.flush()
    for person in range(40 if sys.argv[2] == "compaction" else 3):
        store.remove(f"p{person}")
    store.enroll_many([{"name": f"q{i}", "embeddings": rng.normal(size=(2, 16))} for i in range(20)])
    # killed in the save: the vector rows written and synced, index.npz not yet renamed into place
    os.replace = lambda *args: os.kill(os.getpid(), signal.SIGKILL)
    store.flush()
""")


@pytest.mark.parametrize("save", ["append", "compaction"])
def test_kill_9_during_the_save_of_the_vector_file(tmp_path, caplog, save):
    path = tmp_path / "g"
    env = {**os.environ, "PYTHONPATH": REPO}
    process = subprocess.run([sys.executable, "-c", KILLED_IN_SAVE, str(path), save], env=env, check=False)
    assert process.returncode == -signal.SIGKILL
    with np.load(path / INDEX_NAME) as saved:
        named = json.loads(str(saved["meta"]))["vectors_file"]
    assert len(_vector_files(path)) == (2 if save == "compaction" else 1) and named in _vector_files(path)
    assert len(list(path.glob(".index-*.npz.tmp"))) == 1         # the save's index, written but not renamed
    with GalleryStore.open(path) as reader:     # the older index.npz, caught up from the database
        assert reader.index._n_base == 100 and reader.count() == 117 - (37 if save == "compaction" else 0)
        _consistent(reader)
    with GalleryStore.open(path, writable=True) as store:
        assert _vector_files(path) == [named]                  # the compaction's unnamed file removed on open
        assert not list(path.glob(".index-*.npz.tmp"))
        _enrol(store, 500, 2)
    with GalleryStore.open(path) as reader:
        _consistent(reader)
    assert not caplog.records


def test_a_save_syncs_the_folder_after_renaming_index_npz(tmp_path, monkeypatch):
    """The rename reaches the disk only with its folder synced: the last sync of a save is the folder's, after the
    rename."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: events.append(stat.S_ISDIR(os.fstat(fd).st_mode)) or real_fsync(fd))
    monkeypatch.setattr(os, "replace", lambda *args: events.append("replace") or real_replace(*args))
    with GalleryStore.open(tmp_path / "g", writable=True) as store:
        _enrol(store, 0, 3)
    assert events[-2:] == ["replace", True] and events.count("replace") == 1


def test_a_reader_whose_vector_file_a_compaction_deleted_reads_index_npz_again(tmp_path, caplog, monkeypatch):
    """The race: a reader reads index.npz, the writer then saves a compacted index (new file, new index.npz) and
    deletes the old file, and the reader finds it gone. It must read index.npz again, not rebuild."""
    monkeypatch.setattr(index_module, "COMPACT_MIN_DEAD_ROWS", 8)
    path = tmp_path / "g"
    with GalleryStore.open(path, writable=True) as store:
        _enrol(store, 0, 40)
    before = (path / INDEX_NAME).read_bytes()
    with GalleryStore.open(path, writable=True) as store:
        for person in range(20):
            store.remove(f"p{person}")
    after = (path / INDEX_NAME).read_bytes()
    [compacted] = _vector_files(path)
    (path / INDEX_NAME).write_bytes(before)               # what the reader read: it names the deleted vector file
    load = Index.load

    def load_while_the_writer_saves(*args, **kwargs):
        try:
            return load(*args, **kwargs)
        finally:
            (path / INDEX_NAME).write_bytes(after)

    monkeypatch.setattr(Index, "load", load_while_the_writer_saves)
    with GalleryStore.open(path) as reader:
        assert os.path.basename(reader.index.vectors_file) == compacted and reader.count() == 20
        _consistent(reader)
    assert not caplog.records


def test_an_index_saved_in_ram_by_an_earlier_version_is_read_then_moved_into_a_vector_file(tmp_path, caplog):
    """Format 3 held the vectors inside index.npz: readers search it in RAM, the writer moves it into a file."""
    path = tmp_path / "g"
    with GalleryStore.open(path, writable=True, map_vectors=False) as store:
        _enrol(store, 0, 30)
    with np.load(path / INDEX_NAME) as saved:
        members = dict(saved)
    members["meta"] = np.array(json.dumps({**json.loads(str(members["meta"])), "format": "mtarcface-index-3"}))
    with open(path / INDEX_NAME, "wb") as file:
        np.savez(file, **members)
    with GalleryStore.open(path) as reader:
        assert reader.index.vectors_file is None
        _consistent(reader)
    with GalleryStore.open(path, writable=True) as store:
        _consistent(store)
    assert len(_vector_files(path)) == 1
    with GalleryStore.open(path) as reader:
        assert reader.index._n_base == 30
        _consistent(reader)
    assert not caplog.records


def test_vector_files_no_index_names_are_removed_by_the_writer(tmp_path):
    path = tmp_path / "g"
    with GalleryStore.open(path, writable=True) as store:
        _enrol(store, 0, 10)
    [name] = _vector_files(path)
    (path / "vectors-0123456789abcdef.bin").write_bytes(b"left by a crash")
    with GalleryStore.open(path):
        assert len(_vector_files(path)) == 2                  # readers delete nothing
    with GalleryStore.open(path, writable=True):
        assert _vector_files(path) == [name]
