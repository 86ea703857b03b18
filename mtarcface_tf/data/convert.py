"""Converts insightface RecordIO, image-folder trees and verification ``.bin`` files into TFRecord shards.

The items of a source are split into ``num_shards`` contiguous ranges (deterministic from the item count), and
each shard is written by one worker process under a temporary name, renamed when complete. Finished shards are
recorded in ``NAME.progress.json``, so ``resume=True`` writes only the missing ones; the manifest
(``records.manifest_path``) is written last and the progress file removed. An output that already holds a
manifest or a partial conversion is never overwritten or mixed into: ConversionError says what to do.
"""
import dataclasses
import json
import logging
import math
import multiprocessing
import os

import cv2
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from mtarcface_tf.data import bin_pairs, records
from mtarcface_tf.data.image_codec import encode_jpeg
from mtarcface_tf.data.recordio import RecordIOError, RecordIOReader

DEFAULT_IMAGE_SIZE = 112
DEFAULT_JPEG_QUALITY = 95
IMAGES_PER_AUTO_SHARD = 100_000
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
PROGRESS_SUFFIX = ".progress.json"
LABELS_FILE = "labels.json"
_COUNTER_STEP = 256          # items a worker processes between updates of the shared progress counter
_POLL_SECONDS = 0.2
_LISTED_PER_REASON = 20      # skipped files named in the summary per reason (the manifest lists them all)
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")   # JPEG, PNG: stored as they are

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


# -- jobs: how one source writes the records of one shard ----------------------------------------------------

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


class RecordIOJob:
    """Copies image records ``[start, stop)`` (in image-key order) of a ``.rec`` without re-encoding."""

    def __init__(self, rec_path, idx_path=None):
        self.rec_path, self.idx_path = rec_path, idx_path
        with RecordIOReader(rec_path, idx_path) as reader:
            self.keys = reader.image_keys()
            self.index = reader.index()
            self.num_identities = reader.num_identities
        self._reader = None

    def __len__(self):
        return len(self.keys)

    def __getstate__(self):
        return {**self.__dict__, "_reader": None}

    def write(self, start, stop, writer, counter):
        """Writes records ``[start, stop)`` to ``writer``; corrupt records are skipped and counted."""
        if self._reader is None:  # opened in the worker process: a file object must not cross a fork
            self._reader = RecordIOReader(self.rec_path, self.idx_path, index=self.index)
        stats, labels = ShardStats(), set()
        for key in self.keys[start:stop]:
            try:
                label, image = self._reader.read(int(key))
            except RecordIOError as err:
                stats.skip("corrupt_record", err)
                counter.add()
                continue
            label = int(label if np.ndim(label) == 0 else label[0])
            writer.write(records.serialize_example(image, label))
            labels.add(label)
            stats.images += 1
            counter.add()
        stats.labels = label_ranges(labels)
        return stats


def list_image_folder(input_dir):
    """Returns ``(items, names)``: ``[(path, label)]`` of the images in ``input_dir/<identity>/``, and the sorted
    identity folder names (label = index in that list). Raises ConversionError when there is no image."""
    if not os.path.isdir(input_dir):
        raise FileNotFoundError(f"{input_dir}: image folder not found (expected one sub-folder per identity)")
    names = sorted(d for d in os.listdir(input_dir)
                   if os.path.isdir(os.path.join(input_dir, d)) and not d.startswith("."))
    items = []
    for label, name in enumerate(names):
        folder = os.path.join(input_dir, name)
        items += [(os.path.join(folder, f), label) for f in sorted(os.listdir(folder))
                  if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(folder, f))]
    if not items:
        raise ConversionError(f"{input_dir}: no images found (expected {input_dir}/<identity>/<image>.jpg)")
    return items, names


class FolderJob:
    """Writes images of an identity-folder tree: as they are (already aligned) or detected and aligned.

    Args:
      items: ``[(path, label)]`` from ``list_image_folder``.
      image_size: side the records must have.
      detector: None (inputs are aligned faces of ``image_size``), a detector name made in each worker with
        ``mtarcface_tf.inference.detect.make_detector``, or a detector instance (``detect(image_rgb) -> [Face]``).
      jpeg_quality: quality of the JPEG the aligned faces are stored as.
    """

    def __init__(self, items, image_size=DEFAULT_IMAGE_SIZE, detector=None, jpeg_quality=DEFAULT_JPEG_QUALITY):
        self.items, self.image_size = items, image_size
        self.detector, self.jpeg_quality = detector, jpeg_quality

    def __len__(self):
        return len(self.items)

    def _detector(self):
        if isinstance(self.detector, str):
            from mtarcface_tf.inference.detect import make_detector
            self.detector = make_detector(self.detector)
        return self.detector

    def _aligned(self, path, image_rgb, stats):
        """Returns the JPEG of the largest face aligned to the template, or None (counted) without a face."""
        from mtarcface_tf.inference.align import align_face
        faces = self._detector().detect(image_rgb)
        if not faces:
            stats.skip("no_face", path)
            return None
        if len(faces) > 1:
            stats.note("several_faces_took_largest", path)
        face = align_face(image_rgb, np.asarray(max(faces, key=lambda f: f.area).landmarks, np.float32), self.image_size)
        return encode_jpeg(face, self.jpeg_quality)

    def _record_bytes(self, path, stats):
        """Returns the encoded image to store for ``path``, or None when it is skipped (and counted)."""
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            stats.skip("unreadable", path)
            return None
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
        if image is None:
            stats.skip("unreadable", path)
            return None
        if self.detector is not None:
            return self._aligned(path, np.ascontiguousarray(image[..., ::-1]), stats)
        if image.shape[:2] != (self.image_size, self.image_size):
            stats.skip("wrong_size", f"{path} ({image.shape[1]}x{image.shape[0]})")
            return None
        if data.startswith(_SIGNATURES):
            return data
        ok, encoded = cv2.imencode(".png", image)
        return encoded.tobytes() if ok else None

    def write(self, start, stop, writer, counter):
        """Writes items ``[start, stop)`` to ``writer``; returns their ShardStats."""
        stats, labels = ShardStats(), set()
        for path, label in self.items[start:stop]:
            data = self._record_bytes(path, stats)
            counter.add()
            if data is None:
                continue
            writer.write(records.serialize_example(data, label))
            labels.add(label)
            stats.images += 1
        stats.labels = label_ranges(labels)
        return stats


class BinJob:
    """Writes the images of a verification ``.bin`` as they are, label = pair index (images 2i, 2i+1 -> i)."""

    def __init__(self, bin_path):
        self.bins, _ = bin_pairs.read_bin_raw(bin_path)

    def __len__(self):
        return len(self.bins)

    def write(self, start, stop, writer, counter):
        """Writes images ``[start, stop)`` to ``writer``; returns their ShardStats."""
        for i in range(start, stop):
            writer.write(records.serialize_example(self.bins[i], i // 2))
            counter.add()
        return ShardStats(images=stop - start, labels=label_ranges(i // 2 for i in range(start, stop)))


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


# Set in each worker process by the pool initializer (inherited through fork, so the job is not pickled per task).
_WORKER_STATE = {}


def _init_worker(job, shared_counter):
    _WORKER_STATE["job"], _WORKER_STATE["counter"] = job, _Counter(shared_counter)


def _worker_task(task):
    return _write_shard(_WORKER_STATE["job"], task, _WORKER_STATE["counter"])


def _progress_path(output_dir, name):
    return os.path.join(output_dir, name + PROGRESS_SUFFIX)


def _load_progress(output_dir, name, plan, resume):
    """Returns the shards already complete (``{index: stats}``); raises ConversionError when the output is taken."""
    manifest = records.manifest_path(output_dir, name)
    progress = _progress_path(output_dir, name)
    if os.path.exists(manifest):
        raise ConversionError(f"{manifest} already exists: this data set is complete; choose another --output_dir "
                              f"or --name (or delete it to convert again)")
    partial = os.path.exists(progress) or any(os.path.exists(p) for p in records.shard_paths(
        output_dir, name, plan["num_shards"]))
    if not resume:
        if partial:
            raise ConversionError(f"{output_dir} already holds a partial conversion named {name!r}: use --resume to "
                                  f"continue it or another --output_dir")
        return {}
    if not os.path.exists(progress):
        return {}
    state = records.read_manifest(progress)
    if state["plan"] != plan:
        raise ConversionError(f"{progress}: the conversion there was made with {state['plan']}, not {plan}; "
                              f"resume with the same input and --num_shards, or use another --output_dir")
    paths = records.shard_paths(output_dir, name, plan["num_shards"])
    return {int(i): s for i, s in state["done"].items() if os.path.exists(paths[int(i)])}


def _save_progress(output_dir, name, plan, done):
    records.atomic_write_text(_progress_path(output_dir, name),
                              json.dumps({"plan": plan, "done": {str(i): s for i, s in sorted(done.items())}}))


def _run_pending(job, tasks, workers, bar, on_done):
    """Writes ``tasks`` with ``workers`` processes (in this process when 1), updating ``bar``."""
    context = multiprocessing.get_context("fork")
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
                   extra=None, side_files=None, progress=True):
    """Writes all items of ``job`` into ``num_shards`` TFRecord shards and the manifest; returns the manifest.

    Args:
      job: a RecordIOJob, FolderJob or BinJob (``len(job)`` items, ``job.write(start, stop, writer, counter)``).
      output_dir, name: shards ``output_dir/NAME-0000i-of-000NN.tfrecord`` and ``NAME.manifest.json``.
      source: what was converted (recorded in the manifest and checked on resume).
      num_shards: 0 picks ``auto_num_shards``.
      workers: processes writing shards in parallel.
      resume: keep the shards a previous, interrupted run finished and write only the others.
      command: the command line, recorded in the manifest.
      extra: more manifest entries.
      side_files: ``{file name: text}`` written into ``output_dir`` just before the manifest.
      progress: show a tqdm bar (images/s, ETA).
    Raises ConversionError when the output already holds this data set (see the module docstring).
    """
    num_items = len(job)
    num_shards = num_shards or auto_num_shards(num_items, workers)
    plan = {"source": source, "items": num_items, "num_shards": num_shards}
    os.makedirs(output_dir, exist_ok=True)
    done = _load_progress(output_dir, name, plan, resume)
    paths = records.shard_paths(output_dir, name, num_shards)
    tasks = [(i, a, b, paths[i]) for i, (a, b) in enumerate(shard_ranges(num_items, num_shards)) if i not in done]
    if done:
        log.info("resuming: %d of %d shards already complete", len(done), num_shards)

    def on_done(index, stats):
        done[index] = stats
        _save_progress(output_dir, name, plan, done)

    initial = sum(b - a for i, (a, b) in enumerate(shard_ranges(num_items, num_shards)) if i in done)
    with tqdm(total=num_items, initial=initial, unit="img", desc=f"convert {name}", disable=not progress,
              smoothing=0.1) as bar:
        _run_pending(job, tasks, workers, bar, on_done)
    manifest = _manifest(done, paths, source, command, extra)
    for file_name, text in (side_files or {}).items():
        records.atomic_write_text(os.path.join(output_dir, file_name), text)
    records.atomic_write_text(records.manifest_path(output_dir, name), json.dumps(manifest, indent=2))
    os.remove(_progress_path(output_dir, name))
    return manifest


def _manifest(done, paths, source, command, extra):
    stats = [done[i] for i in range(len(paths))]
    skipped, notes = {}, {}
    for s in stats:
        for reason, items in s["skipped"].items():
            skipped.setdefault(reason, []).extend(items)
        for reason, items in s["notes"].items():
            notes.setdefault(reason, []).extend(items)
    manifest = {
        "images": sum(s["images"] for s in stats),
        "identities": _count_labels(s["labels"] for s in stats),
        "shards": [os.path.basename(p) for p in paths],
        "source": source,
        "command": command,
        "skipped": {reason: len(items) for reason, items in skipped.items()},
        "skipped_items": skipped,
        "notes": {reason: len(items) for reason, items in notes.items()},
        "noted_items": notes,
    }
    manifest.update(extra or {})
    return manifest


# -- one entry point per source ------------------------------------------------------------------------------

def convert_recordio(rec_path, output_dir, name, idx_path=None, **kwargs):
    """Converts an insightface ``.rec`` (+ ``.idx``) to TFRecords, copying image bytes; label = int(label[0]).

    ``kwargs`` go to ``run_conversion`` (num_shards, workers, resume, command, progress). Returns the manifest.
    """
    job = RecordIOJob(rec_path, idx_path)
    extra = {"header_identities": job.num_identities} if job.num_identities is not None else {}
    return run_conversion(job, output_dir, name, source=os.path.abspath(rec_path), extra=extra, **kwargs)


def convert_folder(input_dir, output_dir, name, image_size=DEFAULT_IMAGE_SIZE, detector=None,
                   jpeg_quality=DEFAULT_JPEG_QUALITY, **kwargs):
    """Converts an identity-folder tree (label = sorted folder index) to TFRecords; writes ``labels.json``.

    Without ``detector`` the images must be aligned ``image_size`` squares (others are skipped and counted);
    with one (a name or an instance, see FolderJob) the largest face of each image is aligned and stored as
    JPEG. A detector instance runs in this process (workers = 1). ``kwargs`` go to ``run_conversion``.
    Returns the manifest.
    """
    items, names = list_image_folder(input_dir)
    if detector is not None and not isinstance(detector, str) and kwargs.get("workers", 1) > 1:
        log.warning("a detector instance runs in this process: using 1 worker")
        kwargs["workers"] = 1
    job = FolderJob(items, image_size, detector, jpeg_quality)
    aligned_by = detector if detector is None or isinstance(detector, str) else type(detector).__name__
    labels = json.dumps({n: i for i, n in enumerate(names)}, indent=1)
    return run_conversion(job, output_dir, name, source=os.path.abspath(input_dir), extra={"aligned_by": aligned_by},
                          side_files={LABELS_FILE: labels}, **kwargs)


def convert_bin(bin_path, output_dir, name, **kwargs):
    """Converts a verification ``.bin``'s images to TFRecords as they are, label = pair index. Returns the manifest."""
    return run_conversion(BinJob(bin_path), output_dir, name, source=os.path.abspath(bin_path), **kwargs)


def format_summary(manifest, output_dir):
    """Returns human-readable lines about a finished conversion: counts, skipped items by reason, hints."""
    lines = [f"wrote {manifest['images']} images of {manifest['identities']} identities into "
             f"{len(manifest['shards'])} shards in {output_dir}"]
    hints = {"wrong_size": "not aligned faces of the expected size: convert them with --align",
             "unreadable": "cannot be read or decoded", "no_face": "no face found",
             "corrupt_record": "corrupt records"}
    for reason, items in manifest["skipped_items"].items():
        lines.append(f"skipped {len(items)} ({hints.get(reason, reason)}):")
        lines += [f"  {item}" for item in items[:_LISTED_PER_REASON]]
        if len(items) > _LISTED_PER_REASON:
            lines.append(f"  ... and {len(items) - _LISTED_PER_REASON} more (all in the manifest)")
    for reason, count in manifest["notes"].items():
        lines.append(f"note: {count} images: {reason.replace('_', ' ')}")
    return lines
