"""Converts insightface RecordIO, image-folder trees and verification ``.bin`` files into TFRecord shards.

This module owns the sources: one job per source says how the records of one shard are read (and, for photos,
detected and aligned with ``mtarcface_tf.faces``); ``shards.run_conversion`` writes them (parallel shards, resume,
manifest last; see data/shards.py). ``format_summary`` turns a manifest into the lines the tool prints.
"""
import json
import logging
import os

import cv2
import numpy as np

from mtarcface_tf.data import bin_pairs, records
from mtarcface_tf.data.image_codec import encode_jpeg
from mtarcface_tf.data.recordio import RecordIOError, RecordIOReader
from mtarcface_tf.data.shards import ConversionError, ShardStats, label_ranges, run_conversion
from mtarcface_tf.faces.align import align_face
from mtarcface_tf.faces.detect import largest_face, make_detector

DEFAULT_IMAGE_SIZE = 112
DEFAULT_JPEG_QUALITY = 95
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
LABELS_FILE = "labels.json"
PAIRS_SUFFIX = ".pairs.json"  # convert_bin: NAME.pairs.json holds the .bin's issame list
_LISTED_PER_REASON = 20      # skipped files named in the summary per reason (the manifest lists them all)
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")   # JPEG, PNG: stored as they are

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
        """Returns the JPEG of the largest face aligned to the template, or None (counted) without a face."""
        faces = self._detector().detect(image_rgb)
        if not faces:
            stats.skip("no_face", path)
            return None
        if len(faces) > 1:
            stats.note("several_faces_took_largest", path)
        face = align_face(image_rgb, np.asarray(largest_face(faces).landmarks, np.float32), self.image_size)
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
