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
        """Returns ``(JPEG, landmarks [5, 2] in the crop)`` of the largest face aligned to the template, or None
        (counted) without a face."""
        from mtarcface_tf.inference.align import align_face_and_landmarks
        faces = self._detector().detect(image_rgb)
        if not faces:
            stats.skip("no_face", path)
            return None
        if len(faces) > 1:
            stats.note("several_faces_took_largest", path)
        landmarks = np.asarray(max(faces, key=lambda f: f.area).landmarks, np.float32)
        face, mapped = align_face_and_landmarks(image_rgb, landmarks, self.image_size)
        return encode_jpeg(face, self.jpeg_quality), mapped

    def _record_bytes(self, path, stats):
        """Returns ``(encoded image, landmarks or None)`` to store for ``path``, or None when it is skipped
        (and counted). Landmarks come with faces this job detected and aligned."""
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
            return data, None
        ok, encoded = cv2.imencode(".png", image)
        return (encoded.tobytes(), None) if ok else None

    def write(self, start, stop, writer, counter):
        """Writes items ``[start, stop)`` to ``writer``; returns their ShardStats."""
        stats, labels = ShardStats(), set()
        for path, label in self.items[start:stop]:
            record = self._record_bytes(path, stats)
            counter.add()
            if record is None:
                continue
            writer.write(records.serialize_example(record[0], label, record[1]))
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


class LandmarkJob:
    """Copies the records of an existing TFRecord data set, adding the five landmarks (records.LANDMARKS_KEY)
    detected on each aligned crop; a crop where no face is found is copied without them and counted.

    Args:
      input_path: the records (directory, manifest, glob or file; see ``records.list_shards``).
      detector: a detector name made in each worker (``make_detector``) or a detector instance.
    """

    NO_FACE = "no_face_kept_without_landmarks"

    def __init__(self, input_path, detector):
        self.files = records.list_shards(input_path)
        self.counts = [records.count_records(path) for path in self.files]
        self.detector = detector

    def __len__(self):
        return sum(self.counts)

    def _items(self, start, stop):
        """Yields ``(item name, serialized record)`` for global record indices [start, stop)."""
        first = 0
        for path, count in zip(self.files, self.counts):
            if first + count > start and first < stop:
                for offset, serialized in enumerate(records.iter_records(path)):
                    if start <= first + offset < stop:
                        yield f"{os.path.basename(path)}:{offset}", serialized
            first += count

    def write(self, start, stop, writer, counter):
        """Writes records ``[start, stop)`` to ``writer`` with landmarks where found; returns their ShardStats."""
        from mtarcface_tf.inference.detect import landmarks_on_aligned_crop, make_detector
        if isinstance(self.detector, str):
            self.detector = make_detector(self.detector)
        stats, labels = ShardStats(), set()
        for item, serialized in self._items(start, stop):
            example = tf.train.Example.FromString(serialized)
            feature = example.features.feature
            image = cv2.imdecode(np.frombuffer(feature["image_raw"].bytes_list.value[0], np.uint8), cv2.IMREAD_COLOR)
            counter.add()
            if image is None:
                stats.skip("unreadable", item)
                continue
            landmarks = landmarks_on_aligned_crop(self.detector, np.ascontiguousarray(image[..., ::-1]))
            if landmarks is None:
                stats.note(self.NO_FACE, item)
            else:
                serialized = records.with_landmarks(serialized, landmarks)
            writer.write(serialized)
            labels.add(int(feature["label"].int64_list.value[0]))
            stats.images += 1
        stats.labels = label_ranges(labels)
        return stats


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


def add_landmarks(input_path, output_dir, name, detector="retinaface", **kwargs):
    """Writes a copy of the TFRecords at ``input_path`` with landmarks detected on each aligned crop.

    ``detector``: a name (made in each worker) or an instance (runs in this process, workers = 1). Crops where
    no face is found are copied without landmarks (their masks use the template) and counted in the manifest
    (``notes[LandmarkJob.NO_FACE]``). ``kwargs`` go to ``run_conversion`` (parallel and resumable as the other
    converters). Returns the manifest.
    """
    if not isinstance(detector, str) and kwargs.get("workers", 1) > 1:
        log.warning("a detector instance runs in this process: using 1 worker")
        kwargs["workers"] = 1
    try:
        job = LandmarkJob(input_path, detector)
    except ValueError as err:
        raise ConversionError(str(err)) from None
    landmarks_by = detector if isinstance(detector, str) else type(detector).__name__
    return run_conversion(job, output_dir, name, source=os.path.abspath(input_path),
                          extra={"landmarks_by": landmarks_by}, **kwargs)


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
    if "landmarks_by" in manifest:
        missing = manifest["notes"].get(LandmarkJob.NO_FACE, 0)
        lines.append(f"landmarks ({manifest['landmarks_by']}) found on {manifest['images'] - missing} of "
                     f"{manifest['images']} crops")
    return lines
