"""Writing TFRecord shards and their manifest: the one home of both writers and of the manifest format.

- ``run_conversion``, the engine of the converters (data/convert.py): the items of a job are split into
  ``num_shards`` contiguous ranges (deterministic from the item count), and each shard is written by one worker
  process under a temporary name, renamed when complete. Finished shards are recorded in ``NAME.progress.json``, so
  ``resume=True`` writes only the missing ones; the manifest is written last and the progress file removed. An
  output that already holds a manifest or a partial conversion is never overwritten or mixed into:
  ``ConversionError`` says what to do.
- ``ShardedRecordWriter``, a streaming writer (SynthFaces, tests, benchmarks): records round-robin into the shards,
  each under a temporary name until ``close`` renames them and writes the manifest.

Shard names, manifest paths and reading the records back are ``records.py``.
"""
import dataclasses
import json
import logging
import math
import multiprocessing
import os

import numpy as np
import tensorflow as tf
from mtarcface_tf.atomic import write_text
from mtarcface_tf.progress import progress_bar

from mtarcface_tf.data.records import manifest_path, read_manifest, serialize_example, shard_paths

IMAGES_PER_AUTO_SHARD = 100_000
PROGRESS_SUFFIX = ".progress.json"
_COUNTER_STEP = 256          # items a worker processes between updates of the shared progress counter
_POLL_SECONDS = 0.2

log = logging.getLogger(__name__)


class ConversionError(Exception):
    """A conversion the user must change: output already present, unusable input, mismatched resume."""


# -- shard bookkeeping -------------------------------------------------------------------------------------

def shard_ranges(num_items, num_shards):
    """Returns ``num_shards`` contiguous ``(start, stop)`` item ranges covering ``range(num_items)``."""
    bounds = np.linspace(0, num_items, num_shards + 1).round().astype(np.int64)
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def auto_num_shards(num_items, workers):
    """Returns the shard count used when none is given: one per 100k items, at least one per worker."""
    return max(int(workers), math.ceil(num_items / IMAGES_PER_AUTO_SHARD), 1)


def label_ranges(labels):
    """Compresses int labels into sorted ``[start, end)`` runs (insightface labels are contiguous per shard)."""
    values = np.unique(np.asarray(list(labels), np.int64))
    if not len(values):
        return []
    breaks = np.flatnonzero(np.diff(values) != 1) + 1
    return [[int(run[0]), int(run[-1]) + 1] for run in np.split(values, breaks)]


def _count_labels(runs_per_shard):
    """Returns the number of distinct labels in several shards' ``label_ranges`` lists."""
    labels = set()
    for runs in runs_per_shard:
        for start, end in runs:
            labels.update(range(start, end))
    return len(labels)


@dataclasses.dataclass
class ShardStats:
    """What writing one shard produced: records, label runs, skipped items by reason, notes (e.g. many faces)."""

    images: int = 0
    labels: list = dataclasses.field(default_factory=list)
    skipped: dict = dataclasses.field(default_factory=dict)
    notes: dict = dataclasses.field(default_factory=dict)

    def skip(self, reason, item):
        """Counts and lists one skipped item."""
        self.skipped.setdefault(reason, []).append(str(item))

    def note(self, reason, item):
        """Counts and lists one written item worth reporting (e.g. several faces found)."""
        self.notes.setdefault(reason, []).append(str(item))


# -- progress of worker processes ------------------------------------------------------------------------------

class _Counter:
    """Adds processed items to a shared multiprocessing counter every few items (for the progress bar)."""

    def __init__(self, shared):
        self.shared, self.pending = shared, 0

    def add(self, n=1):
        self.pending += n
        if self.pending >= _COUNTER_STEP:
            self.flush()

    def flush(self):
        with self.shared.get_lock():
            self.shared.value += self.pending
        self.pending = 0


# -- the engine: plan, refuse or resume, write shards in parallel, manifest last -----------------------------

def _write_shard(job, task, counter):
    """Writes shard ``task = (index, start, stop, path)`` under ``path.tmp`` and renames it; returns stats."""
    index, start, stop, path = task
    tmp = path + ".tmp"
    try:
        with tf.io.TFRecordWriter(tmp) as writer:
            stats = job.write(start, stop, writer, counter)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    os.replace(tmp, path)
    counter.flush()
    return index, dataclasses.asdict(stats)


# Set in each worker process by the pool initializer (the job is handed over once per worker, not per task).
_WORKER_STATE = {}


def _init_worker(job, shared_counter):
    if hasattr(job, "start_worker"):
        job.start_worker()
    _WORKER_STATE["job"], _WORKER_STATE["counter"] = job, _Counter(shared_counter)


def _worker_task(task):
    return _write_shard(_WORKER_STATE["job"], task, _WORKER_STATE["counter"])


def _progress_path(output_dir, name):
    return os.path.join(output_dir, name + PROGRESS_SUFFIX)


def _load_progress(output_dir, name, plan, resume):
    """Returns the shards already complete (``{index: stats}``); raises ConversionError when the output is taken."""
    manifest = manifest_path(output_dir, name)
    progress = _progress_path(output_dir, name)
    if os.path.exists(manifest):
        raise ConversionError(f"{manifest} already exists: this data set is complete; choose another --output_dir "
                              f"or --name (or delete it to convert again)")
    partial = os.path.exists(progress) or any(os.path.exists(p) for p in shard_paths(
        output_dir, name, plan["num_shards"]))
    if not resume:
        if partial:
            raise ConversionError(f"{output_dir} already holds a partial conversion named {name!r}: use --resume to "
                                  f"continue it or another --output_dir")
        return {}
    if not os.path.exists(progress):
        return {}
    state = read_manifest(progress)
    if state["plan"] != plan:
        raise ConversionError(f"{progress}: the conversion there was made with {state['plan']}, not {plan}; "
                              f"resume with the same input and --num_shards, or use another --output_dir")
    paths = shard_paths(output_dir, name, plan["num_shards"])
    return {int(i): s for i, s in state["done"].items() if os.path.exists(paths[int(i)])}


def _save_progress(output_dir, name, plan, done):
    write_text(_progress_path(output_dir, name),
               json.dumps({"plan": plan, "done": {str(i): s for i, s in sorted(done.items())}}))


def _run_pending(job, tasks, workers, bar, on_done, start_method):
    """Writes ``tasks`` with ``workers`` processes started by ``start_method`` (in this process when 1), updating
    ``bar``."""
    context = multiprocessing.get_context(start_method)
    shared = context.Value("q", 0)
    if workers <= 1 or len(tasks) <= 1:
        counter = _Counter(shared)
        for task in tasks:
            on_done(*_write_shard(job, task, counter))
            bar.update(shared.value - bar.n)
        return
    with context.Pool(min(workers, len(tasks)), initializer=_init_worker, initargs=(job, shared)) as pool:
        pending = [pool.apply_async(_worker_task, (task,)) for task in tasks]
        while pending:
            pending[0].wait(_POLL_SECONDS)
            bar.update(shared.value - bar.n)
            for result in [r for r in pending if r.ready()]:
                pending.remove(result)
                on_done(*result.get())
        bar.update(shared.value - bar.n)


def run_conversion(job, output_dir, name, source, num_shards=0, workers=1, resume=False, command="",
                   extra=None, side_files=None, progress=True, start_method="fork"):
    """Writes all items of ``job`` into ``num_shards`` TFRecord shards and the manifest; returns the manifest.

    Args:
      job: e.g. convert's RecordIOJob, FolderJob or BinJob (``len(job)`` items,
        ``job.write(start, stop, writer, counter)``, and optionally ``job.start_worker()``, run first in each worker
        process).
      output_dir, name: shards ``output_dir/NAME-0000i-of-000NN.tfrecord`` and ``NAME.manifest.json``.
      source: what was converted (recorded in the manifest and checked on resume).
      num_shards: 0 picks ``auto_num_shards``.
      workers: processes writing shards in parallel.
      resume: keep the shards a previous, interrupted run finished and write only the others.
      command: the command line, recorded in the manifest.
      extra: more manifest entries.
      side_files: ``{file name: text}`` written into ``output_dir`` just before the manifest.
      progress: show progress (images/s, ETA; a bar on a terminal, plain lines in a log).
      start_method: how worker processes start (``multiprocessing`` context name). "fork" is cheap but unsafe for
        jobs that run TensorFlow ops when this process already has (its thread pools do not survive a fork and
        the workers hang); such jobs use "spawn" (the job is then pickled to each worker).
    Raises ConversionError when the output already holds this data set (see the module docstring).
    """
    num_items = len(job)
    num_shards = num_shards or auto_num_shards(num_items, workers)
    plan = {"source": source, "items": num_items, "num_shards": num_shards}
    os.makedirs(output_dir, exist_ok=True)
    done = _load_progress(output_dir, name, plan, resume)
    paths = shard_paths(output_dir, name, num_shards)
    tasks = [(i, a, b, paths[i]) for i, (a, b) in enumerate(shard_ranges(num_items, num_shards)) if i not in done]
    if done:
        log.info("resuming: %d of %d shards already complete", len(done), num_shards)

    def on_done(index, stats):
        done[index] = stats
        _save_progress(output_dir, name, plan, done)

    initial = sum(b - a for i, (a, b) in enumerate(shard_ranges(num_items, num_shards)) if i in done)
    with progress_bar(total=num_items, initial=initial, unit="img", desc=f"convert {name}", disable=not progress,
              smoothing=0.1) as bar:
        _run_pending(job, tasks, workers, bar, on_done, start_method)
    manifest = _manifest(done, paths, source, command, extra)
    for file_name, text in (side_files or {}).items():
        write_text(os.path.join(output_dir, file_name), text)
    write_text(manifest_path(output_dir, name), json.dumps(manifest, indent=2))
    os.remove(_progress_path(output_dir, name))
    return manifest


def build_manifest(images, identities, paths, source, command, extra=None, skipped=None, notes=None):
    """Returns the manifest dict of a written data set (one format for every writer).

    Args:
      images, identities: counts (int). paths: the shard paths (their base names are listed).
      source, command: what was converted and the command line. extra: more entries.
      skipped, notes: ``{reason: [item, ...]}`` of skipped / noted items (counted and listed), when the writer
        tracks them.
    """
    manifest = {
        "images": images,
        "identities": identities,
        "shards": [os.path.basename(p) for p in paths],
        "source": source,
        "command": command,
    }
    if skipped is not None:
        manifest.update(skipped={reason: len(items) for reason, items in skipped.items()}, skipped_items=skipped)
    if notes is not None:
        manifest.update(notes={reason: len(items) for reason, items in notes.items()}, noted_items=notes)
    manifest.update(extra or {})
    return manifest


def _manifest(done, paths, source, command, extra):
    stats = [done[i] for i in range(len(paths))]
    skipped, notes = {}, {}
    for s in stats:
        for reason, items in s["skipped"].items():
            skipped.setdefault(reason, []).extend(items)
        for reason, items in s["notes"].items():
            notes.setdefault(reason, []).extend(items)
    return build_manifest(sum(s["images"] for s in stats), _count_labels(s["labels"] for s in stats), paths, source,
                          command, extra, skipped, notes)


# -- the streaming writer -------------------------------------------------------------------------------------

class ShardedRecordWriter:
    """Writes examples round-robin into ``num_shards`` shards, each under a ``.tmp`` name until ``close``.

    Use as a context manager; on an exception the temporary files are removed and nothing is left behind.
    ``write(image_bytes, label)`` adds one record; ``close(source, command)`` renames the shards into place
    and writes the manifest last, so a directory with a manifest always holds a complete data set.
    """

    def __init__(self, output_dir, name, num_shards=1):
        if num_shards < 1:
            raise ValueError(f"num_shards must be >= 1, got {num_shards}")
        os.makedirs(output_dir, exist_ok=True)
        self.output_dir, self.name = output_dir, name
        self.paths = shard_paths(output_dir, name, num_shards)
        self._writers = [tf.io.TFRecordWriter(p + ".tmp") for p in self.paths]
        self._next = 0
        self.images = 0
        self.labels = set()

    def write(self, image_bytes, label, landmarks=None):
        """Appends one (encoded image, int label, optional landmarks float32 [5, 2]) record to the next shard."""
        self._writers[self._next].write(serialize_example(image_bytes, label, landmarks))
        self._next = (self._next + 1) % len(self._writers)
        self.images += 1
        self.labels.add(int(label))

    def close(self, source="", command="", extra=None):
        """Renames the shards into place and writes the manifest; returns the manifest dict."""
        for writer in self._writers:
            writer.close()
        for path in self.paths:
            os.replace(path + ".tmp", path)
        manifest = build_manifest(self.images, len(self.labels), self.paths, source, command, extra)
        write_text(manifest_path(self.output_dir, self.name), json.dumps(manifest, indent=2))
        self._writers = []
        return manifest

    def abort(self):
        """Closes and deletes the temporary shards."""
        for writer in self._writers:
            writer.close()
        for path in self.paths:
            if os.path.exists(path + ".tmp"):
                os.remove(path + ".tmp")
        self._writers = []

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None and self._writers:
            self.abort()
        return False
