"""What a run shows: the periodic progress line and TensorBoard scalars and images."""
import logging
import math
import time

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from mtarcface_tf.data.pipeline import PIXEL_MEAN, PIXEL_SCALE

log = logging.getLogger("mtarcface_tf.train")


_LINE_METRICS = (("loss", "loss"), ("arcface_loss", "arcface"), ("mask_loss", "mask_ce"), ("reg_loss", "reg"),
                 ("identity_accuracy", "id_acc"), ("mask_accuracy", "mask_acc"),
                 ("triplet_active_fraction", "active"), ("triplet_positive_distance", "d_pos"),
                 ("triplet_negative_distance", "d_neg"))


def format_duration(seconds):
    """Returns ``seconds`` as ``H:MM:SS`` (``?`` when unknown)."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    """Averages the step metrics and, every ``every_secs`` seconds, logs one progress line.

    Args:
      total_steps: the run's last step.
      images_per_step: images one step consumes (global batch x micro-batches).
      every_secs: seconds between lines.
      start_step: the step the run (re)starts from.
    """

    def __init__(self, total_steps, images_per_step, every_secs, start_step=0, clock=time.monotonic):
        self.total_steps = total_steps
        self.images_per_step = images_per_step
        self.every_secs = every_secs
        self._clock = clock
        self._sums, self._count = {}, 0
        self._last_time, self._last_step = clock(), start_step

    def update(self, step, metrics, force=False):
        """Adds the float ``metrics`` of ``step``; returns the averaged metrics (plus ``images_per_sec``) when a
        line is due (or ``force``), else None. The averages include only finite steps."""
        if metrics.get("finite", 1.0):
            for key, value in metrics.items():
                self._sums[key] = self._sums.get(key, 0.0) + value
            self._count += 1
        now = self._clock()
        if not force and now - self._last_time < self.every_secs:
            return None
        elapsed, steps = max(now - self._last_time, 1e-9), step - self._last_step
        summary = {k: v / max(self._count, 1) for k, v in self._sums.items()}
        summary.pop("finite", None)
        summary["images_per_sec"] = steps * self.images_per_step / elapsed
        summary["steps_per_sec"] = steps / elapsed
        self._sums, self._count = {}, 0
        self._last_time, self._last_step = now, step
        log.info(self.line(step, summary))
        return summary

    def restart_clock(self, step):
        """Starts the next rate measurement at ``step`` now (so evaluation time does not count as training)."""
        self._last_time, self._last_step = self._clock(), step

    def line(self, step, summary):
        """Returns the human-readable progress line of ``summary`` at ``step``."""
        parts = [f"step {step}/{self.total_steps}"]
        parts += [f"{label} {summary[key]:.4f}" for key, label in _LINE_METRICS if key in summary]
        if "lr" in summary:
            parts.append(f"lr {summary['lr']:.3g}")
        rate = summary.get("steps_per_sec", 0.0)
        eta = (self.total_steps - step) / rate if rate > 0 else None
        parts.append(f"{summary.get('images_per_sec', 0.0):.1f} img/s")
        parts.append(f"ETA {format_duration(eta)}")
        return " | ".join(parts)


def unnormalize(images):
    """Returns uint8 [B, H, W, 3] pixels of normalized float images ((pixel - 127.5) * 0.0078125)."""
    pixels = np.asarray(images, np.float32) / PIXEL_SCALE + PIXEL_MEAN
    return np.clip(np.round(pixels), 0, 255).astype(np.uint8)


def image_grid(images, columns=8):
    """Returns one uint8 [1, rows*H, columns*W, 3] grid of normalized float images [B, H, W, 3]."""
    pixels = unnormalize(images)
    count, height, width, channels = pixels.shape
    columns = min(columns, count)
    rows = -(-count // columns)
    grid = np.zeros((rows * height, columns * width, channels), np.uint8)
    for i, image in enumerate(pixels):
        r, c = divmod(i, columns)
        grid[r * height:(r + 1) * height, c * width:(c + 1) * width] = image
    return grid[None]


def _metadata(plugin_name, data_class):
    return summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=plugin_name),
                                       data_class=data_class)


class Summaries:
    """TensorBoard writer of a run (``WORKDIR/tb``); a no-op writer when ``logdir`` is None (non-chief workers).

    Summaries are written with TensorFlow's core ``tf.summary.write`` in TensorBoard's scalar and image formats,
    so writing them does not need the ``tensorboard`` package (viewing them does).
    """

    _SCALAR = _metadata("scalars", summary_pb2.DATA_CLASS_SCALAR)
    _IMAGE = _metadata("images", summary_pb2.DATA_CLASS_BLOB_SEQUENCE)

    def __init__(self, logdir):
        self._writer = tf.summary.create_file_writer(logdir) if logdir else tf.summary.create_noop_writer()

    def scalars(self, step, values, prefix=""):
        """Writes the float ``values`` dict at ``step``, each under ``PREFIX/NAME``."""
        with self._writer.as_default(step=step):
            for name, value in values.items():
                tf.summary.write(f"{prefix}/{name}" if prefix else name, tf.constant(float(value), tf.float32),
                                 metadata=self._SCALAR)
        self._writer.flush()

    def images(self, step, name, grid):
        """Writes a uint8 image [1, H, W, 3] (PNG-encoded) at ``step``."""
        height, width = grid.shape[1:3]
        tensor = tf.stack([tf.as_string(width), tf.as_string(height), tf.io.encode_png(grid[0])])
        with self._writer.as_default(step=step):
            tf.summary.write(name, tensor, metadata=self._IMAGE)
        self._writer.flush()

    def close(self):
        """Flushes and closes the writer."""
        self._writer.close()
