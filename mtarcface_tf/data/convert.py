"""Converts insightface RecordIO, image-folder trees and verification ``.bin`` files into TFRecord shards.

This module owns the sources: one job per source says how the records of one shard are read (and, for photos,
detected and aligned with ``mtarcface_tf.faces``); ``shards.run_conversion`` writes them (parallel shards, resume,
manifest last; see data/shards.py). ``format_summary`` turns a manifest into the lines the tool prints.
"""
import json
import logging
import os
import sys

import numpy as np
import tensorflow as tf

from mtarcface_tf.data import bin_pairs, records
from mtarcface_tf.images import decode_image_rgb, encode_image, encode_jpeg
from mtarcface_tf.data.recordio import RecordIOError, RecordIOReader
from mtarcface_tf.data.shards import ConversionError, ShardStats, label_ranges, run_conversion
from mtarcface_tf.faces.align import align_face_and_landmarks
from mtarcface_tf.faces.crop_landmarks import BATCH_SIZE, MIN_CONFIDENCE, CropLandmarker
from mtarcface_tf.faces.detect import choose_detector, landmarks_on_aligned_crop, largest_face, make_detector

DEFAULT_IMAGE_SIZE = 112
DEFAULT_JPEG_QUALITY = 95
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
LABELS_FILE = "labels.json"
PAIRS_SUFFIX = ".pairs.json"  # convert_bin: NAME.pairs.json holds the .bin's issame list
_LISTED_PER_REASON = 20      # skipped files named in the summary per reason (the manifest lists them all)
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")   # JPEG, PNG: stored as they are
# How add_landmarks finds the landmarks of aligned crops (see LandmarkJob): O-Net on the template's box, or a detector.
LANDMARK_METHODS = ("onet", "detector")
DEFAULT_LANDMARK_METHOD = "onet"
WORKER_THREADS = 1           # TensorFlow threads of each add_landmarks worker process (LandmarkJob.start_worker)

log = logging.getLogger(__name__)


# -- jobs: how one source writes the records of one shard ----------------------------------------------------

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
        ``mtarcface_tf.faces.detect.make_detector``, or a detector instance (``detect(image_rgb) -> [Face]``).
      jpeg_quality: quality of the JPEG the aligned faces are stored as.
    """

    def __init__(self, items, image_size=DEFAULT_IMAGE_SIZE, detector=None, jpeg_quality=DEFAULT_JPEG_QUALITY):
        self.items, self.image_size = items, image_size
        self.detector, self.jpeg_quality = detector, jpeg_quality

    def __len__(self):
        return len(self.items)

    def _detector(self):
        if isinstance(self.detector, str):
            self.detector = make_detector(self.detector)
        return self.detector

    def _aligned(self, path, image_rgb, stats):
        """Returns ``(JPEG, landmarks [5, 2] in the crop)`` of the largest face aligned to the template, or None
        (counted) without a face."""
        faces = self._detector().detect(image_rgb)
        if not faces:
            stats.skip("no_face", path)
            return None
        if len(faces) > 1:
            stats.note("several_faces_took_largest", path)
        landmarks = np.asarray(largest_face(faces).landmarks, np.float32)
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
        image = decode_image_rgb(data)
        if image is None:
            stats.skip("unreadable", path)
            return None
        if self.detector is not None:
            return self._aligned(path, image, stats)
        if image.shape[:2] != (self.image_size, self.image_size):
            stats.skip("wrong_size", f"{path} ({image.shape[1]}x{image.shape[0]})")
            return None
        if data.startswith(_SIGNATURES):
            return data, None
        return encode_image(image, ".png"), None

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


def pair_labels(issame):
    """Labels for the 2N images of N verification pairs: only the two images of a same-pair share a label.

    Args:
      issame: bool [N], pair i = images 2i and 2i+1.

    Returns:
      int64 [2N], contiguous from 0 in image order: a same-pair's images get one new label, a different-pair's
      images one new label each. A label is not a person: one person in several pairs gets several labels.
    """
    sizes = np.where(np.asarray(issame, bool), 1, 2)
    first = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    return np.stack([first, first + sizes - 1], axis=1).reshape(-1)


class BinJob:
    """Writes the images of a verification ``.bin`` as they are, labelled by ``pair_labels``."""

    def __init__(self, bin_path):
        self.bins, self.issame = bin_pairs.read_bin_raw(bin_path)
        self.labels = pair_labels(self.issame)

    def __len__(self):
        return len(self.bins)

    def write(self, start, stop, writer, counter):
        """Writes images ``[start, stop)`` to ``writer``; returns their ShardStats."""
        for i in range(start, stop):
            writer.write(records.serialize_example(self.bins[i], int(self.labels[i])))
            counter.add()
        return ShardStats(images=stop - start, labels=label_ranges(self.labels[start:stop]))


class LandmarkJob:
    """Copies the records of an existing TFRecord data set, adding the five landmarks (records.LANDMARKS_KEY) of
    each aligned crop; a crop where none are found is copied without them and counted.

    Args:
      input_path: the records (directory, manifest, glob or file; see ``records.list_shards``).
      detector: a detector name (made in each worker with ``make_detector``) or a detector instance: with method
        "onet" the fallback for crops where O-Net is unsure, with "detector" the finder of every crop.
      method: one of LANDMARK_METHODS. "onet": ``faces.crop_landmarks.CropLandmarker``, MTCNN's O-Net on the
        template's face box in batches (no detection), ``detector`` below ``min_confidence``; "detector":
        ``detect.landmarks_on_aligned_crop`` on every crop (about 50x slower, docs/landmarks.md).
      min_confidence: O-Net confidence below which method "onet" asks ``detector``.
      batch_size: crops per O-Net call.
    """

    NO_FACE = "no_face_kept_without_landmarks"
    FALLBACK = "low_onet_confidence_sent_to_detector"

    def __init__(self, input_path, detector, method=DEFAULT_LANDMARK_METHOD, min_confidence=MIN_CONFIDENCE,
                 batch_size=BATCH_SIZE):
        if method not in LANDMARK_METHODS:
            raise ConversionError(f"unknown landmark method {method!r}; choose one of: {', '.join(LANDMARK_METHODS)}")
        self.files = records.list_shards(input_path)
        self.counts = [records.count_records(path) for path in self.files]
        self.detector, self.method = detector, method
        self.min_confidence, self.batch_size = min_confidence, batch_size
        self._landmarkers = {}

    def __len__(self):
        return sum(self.counts)

    def __getstate__(self):
        return {**self.__dict__, "_landmarkers": {}}

    def start_worker(self):
        """Runs first in each (spawned) worker process: TensorFlow gets WORKER_THREADS threads, since the workers
        already share the cores between them (more threads per worker spin on a busy machine: bench/crop_landmarks.py
        measures crops per CPU-second)."""
        tf.config.threading.set_intra_op_parallelism_threads(WORKER_THREADS)
        tf.config.threading.set_inter_op_parallelism_threads(WORKER_THREADS)

    def _items(self, start, stop):
        """Yields ``(item name, serialized record)`` for global record indices [start, stop)."""
        first = 0
        for path, count in zip(self.files, self.counts):
            if first + count > start and first < stop:
                for offset, serialized in enumerate(records.iter_records(path)):
                    if start <= first + offset < stop:
                        yield f"{os.path.basename(path)}:{offset}", serialized
            first += count

    def _landmarks(self, crops, stats, items):
        """Returns float32 [N, 5, 2] landmarks of same-size RGB crops (NaN rows where none were found)."""
        if self.method == "detector" or crops[0].shape[0] != crops[0].shape[1]:
            if isinstance(self.detector, str):
                self.detector = make_detector(self.detector)
            found = [landmarks_on_aligned_crop(self.detector, crop) for crop in crops]
            return np.stack([np.full((5, 2), np.nan, np.float32) if f is None else f for f in found])
        size = crops[0].shape[0]
        if size not in self._landmarkers:
            self._landmarkers[size] = CropLandmarker(size, self.min_confidence, self.detector, self.batch_size)
        result = self._landmarkers[size](np.stack(crops))
        for item in np.asarray(items)[result.fallback]:
            stats.note(self.FALLBACK, str(item))
        return result.landmarks

    def _flush(self, pending, writer, stats, counter):
        """Finds the landmarks of the ``pending`` (item, serialized, crop RGB) records and writes them."""
        by_size = {}
        for index, (_, _, crop) in enumerate(pending):
            by_size.setdefault(crop.shape, []).append(index)
        for indices in by_size.values():
            found = self._landmarks([pending[i][2] for i in indices], stats, [pending[i][0] for i in indices])
            for i, landmarks in zip(indices, found):
                item, serialized, _ = pending[i]
                if np.isnan(landmarks).any():
                    stats.note(self.NO_FACE, item)
                    pending[i] = (item, serialized, None)
                else:
                    pending[i] = (item, records.with_landmarks(serialized, landmarks), None)
        for _, serialized, _ in pending:
            writer.write(serialized)
        counter.add(len(pending))
        pending.clear()

    def write(self, start, stop, writer, counter):
        """Writes records ``[start, stop)`` to ``writer`` with landmarks where found; returns their ShardStats."""
        stats, labels, pending = ShardStats(), set(), []
        for item, serialized in self._items(start, stop):
            feature = tf.train.Example.FromString(serialized).features.feature
            image = decode_image_rgb(feature["image_raw"].bytes_list.value[0])
            if image is None:
                stats.skip("unreadable", item)
                counter.add()
                continue
            pending.append((item, serialized, image))
            labels.add(int(feature["label"].int64_list.value[0]))
            stats.images += 1
            if len(pending) == self.batch_size:
                self._flush(pending, writer, stats, counter)
        self._flush(pending, writer, stats, counter)
        stats.labels = label_ranges(labels)
        return stats


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
    """Converts a verification ``.bin``'s images to TFRecords as they are, in order (pair i = images 2i, 2i+1).

    Labels follow ``pair_labels``: equal labels mean "the same person" (a same-pair), different labels mean
    nothing (different people, or the same person in another pair); the manifest's "identities" counts labels.
    ``NAME.pairs.json`` beside the shards keeps the pairs' issame list. Returns the manifest.
    """
    job = BinJob(bin_path)
    pairs = json.dumps({"issame": [bool(same) for same in job.issame]})
    return run_conversion(job, output_dir, name, source=os.path.abspath(bin_path),
                          extra={"labels": "same-pairs share a label; other labels are not distinct people"},
                          side_files={f"{name}{PAIRS_SUFFIX}": pairs}, **kwargs)


def add_landmarks(input_path, output_dir, name, detector="retinaface", method=DEFAULT_LANDMARK_METHOD,
                  min_confidence=MIN_CONFIDENCE, batch_size=BATCH_SIZE, **kwargs):
    """Writes a copy of the TFRecords at ``input_path`` with the five landmarks of each aligned crop.

    ``method`` "onet" (the default): MTCNN's O-Net on the template's face box, in batches of ``batch_size``, with
    ``detector`` for crops whose O-Net confidence is below ``min_confidence`` (counted in the manifest's
    ``notes[LandmarkJob.FALLBACK]``); "detector": ``detector`` on every crop. ``detector``: a name (made in each
    worker) or an instance (runs in this process, workers = 1). Crops where no landmarks are found are copied
    without them (their masks use the template) and counted (``notes[LandmarkJob.NO_FACE]``). ``kwargs`` go to
    ``run_conversion`` (parallel shards, resumable, progress, as the other converters). Returns the manifest, whose
    ``landmarks_by`` names the method and detector.
    """
    if not isinstance(detector, str) and kwargs.get("workers", 1) > 1:
        log.warning("a detector instance runs in this process: using 1 worker")
        kwargs["workers"] = 1
    try:
        job = LandmarkJob(input_path, detector, method, min_confidence, batch_size)
    except ValueError as err:
        raise ConversionError(str(err)) from None
    detector_name = detector if isinstance(detector, str) else type(detector).__name__
    landmarks_by = f"onet+{detector_name}" if method == "onet" else detector_name
    # The workers run TensorFlow (O-Net, the detector): spawned, so that a caller that already ran it cannot hang them.
    return run_conversion(job, output_dir, name, source=os.path.abspath(input_path),
                          extra={"landmarks_by": landmarks_by}, start_method="spawn", **kwargs)


def ready_detector(name=None):
    """Resolves a conversion's detector (``choose_detector``: None = RetinaFace where its weights are installed, else
    MTCNN, the note going to stderr) and builds it once, so that a missing package fails before any work.

    Returns the detector name (str); raises ``DetectorUnavailableError`` (one line saying how to install it).
    """
    name, note = choose_detector(name)
    if note:
        print(note, file=sys.stderr)
    make_detector(name)
    return name


def convert_source(source, input_path, output_dir, name, idx_path=None, image_size=DEFAULT_IMAGE_SIZE, align=False,
                   with_landmarks=False, detector=None, landmark_method=DEFAULT_LANDMARK_METHOD, **kwargs):
    """Converts one input into TFRecord shards: what ``tools/convert.py`` runs.

    Args:
      source: "recordio" (``convert_recordio``, ``idx_path`` its index), "folder" (``convert_folder``; ``align``:
        detect and align each image to ``image_size``), "bin" (``convert_bin``) or "tfrecord" (a copy with
        landmarks, ``add_landmarks``; needs ``with_landmarks``).
      input_path, output_dir, name: as the converters take them.
      detector: "mtcnn", "retinaface" or None (``ready_detector``'s choice), for ``align`` and the landmarks.
      landmark_method: ``add_landmarks``' method ("onet": O-Net on the template's box, ``detector`` as fallback).
      kwargs: ``run_conversion``'s (num_shards, workers, resume, command).

    Returns:
      the manifest (dict).

    Raises:
      ConversionError: ``source`` "tfrecord" without ``with_landmarks``, or a converter's own errors.
    """
    if source == "recordio":
        return convert_recordio(input_path, output_dir, name, idx_path=idx_path, **kwargs)
    if source == "folder":
        return convert_folder(input_path, output_dir, name, image_size=image_size,
                              detector=ready_detector(detector) if align else None, **kwargs)
    if source == "tfrecord":
        if not with_landmarks:
            raise ConversionError("--source=tfrecord copies records to add landmarks: give --add_landmarks")
        if landmark_method == "onet":
            CropLandmarker()    # fails here, in one line, when the mtcnn package O-Net comes from is missing
        return add_landmarks(input_path, output_dir, name, detector=ready_detector(detector), method=landmark_method,
                             **kwargs)
    return convert_bin(input_path, output_dir, name, **kwargs)


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
