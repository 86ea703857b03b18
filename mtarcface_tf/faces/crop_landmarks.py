"""Five landmarks of aligned face crops without detection: MTCNN's O-Net on one fixed box, a detector as fallback.

An aligned crop (a 112x112 record of MS1MV2, say) holds its face where the ArcFace template puts it, so the face
box need not be searched for. O-Net, the last stage of MTCNN (its weights ship with the ``mtcnn`` package), is run
batched on the same square box of every crop, then (``refine``) once more on that box moved and scaled to the face
the first pass found, as MTCNN's own cascade refines its boxes. Crops where O-Net's face confidence is below
``min_confidence``, or where the two passes disagree by more than ``MAX_PASS_DISAGREEMENT`` (the answer depends on
the box: O-Net is unsure), get their landmarks from a detector instead (``detect.landmarks_on_aligned_crop``,
RetinaFace by default). Speed and agreement with RetinaFace: bench/crop_landmarks.py, docs/landmarks.md.
TensorFlow is imported on first use only.
"""
import dataclasses

import numpy as np

from mtarcface_tf.faces.align import template_for
from mtarcface_tf.faces.detect import (DEFAULT_DETECTOR, MTCNN_INSTALL, _require_package, landmarks_on_aligned_crop,
                                       make_detector)

ONET_SIDE = 48                      # O-Net's input side
ONET_WEIGHTS = "onet.lz4"           # the mtcnn package's asset
REFERENCE_SIDE = 112                # crop side ONET_BOX is given for; other sides scale it
# The square box O-Net sees, x1, y1, x2, y2 in pixels of a 112x112 aligned crop: centred on the mean centre of
# MTCNN's face boxes on aligned crops (55.5, 62.3); side 84, the best of a scan over sides 80..100 and vertical
# shifts of +-3 px on SynthFaces crops of a seed no benchmark uses (docs/landmarks.md).
ONET_BOX = (13.5, 20.3, 97.5, 104.3)
# Below this O-Net face confidence a crop goes to the fallback detector. O-Net scored >= 0.996 on every real-photo
# crop of bench/crop_landmarks.py; cartoon-like SynthFaces crops in unusual poses score lower.
MIN_CONFIDENCE = 0.95
# Mean distance (pixels of a 112x112 crop) between the landmarks of the fixed-box pass and the refined pass above
# which a crop goes to the fallback detector. The real-photo crops of bench/crop_landmarks.py disagree by at most
# 1.2 px; chosen on 200 posed SynthFaces crops of a seed no benchmark or test uses (docs/landmarks.md).
MAX_PASS_DISAGREEMENT = 2.0
BATCH_SIZE = 256
# MTCNN's input normalisation: (pixel - 127.5) / 128.
_PIXEL_MEAN, _PIXEL_SCALE = 127.5, 128.0


@dataclasses.dataclass
class CropLandmarks:
    """Landmarks of a batch of crops.

    Attributes:
      landmarks: float32 [N, 5, 2] (x, y) pixels of each crop in template order; NaN rows where the fallback
        detector found no face.
      confidence: float32 [N] O-Net's face probability in [0, 1].
      fallback: bool [N], True where the landmarks came from (or were sought by) the fallback detector.
    """

    landmarks: np.ndarray
    confidence: np.ndarray
    fallback: np.ndarray

    @property
    def found(self):
        """bool [N]: the crops that have landmarks."""
        return ~np.isnan(self.landmarks).any(axis=(1, 2))


def resample_matrix(low, high, size_in, size_out):
    """Bilinear resampling of one axis as a matrix, sampling as ``tf.image.crop_and_resize`` does.

    Args:
      low, high: box edges as fractions of the image side (crop_and_resize's normalised box coordinates).
      size_in, size_out: input and output lengths of the axis.

    Returns:
      float32 [size_out, size_in]: output sample i = row i . input; rows of samples outside the image are zero
      (crop_and_resize's extrapolation value 0).
    """
    positions = low * (size_in - 1) + np.arange(size_out) * (high - low) * (size_in - 1) / (size_out - 1)
    matrix = np.zeros((size_out, size_in), np.float64)
    inside = (positions >= 0) & (positions <= size_in - 1)
    rows = np.flatnonzero(inside)
    lower = np.floor(positions[rows]).astype(np.int64)
    upper = np.minimum(lower + 1, size_in - 1)
    fraction = positions[rows] - lower
    np.add.at(matrix, (rows, lower), 1.0 - fraction)
    np.add.at(matrix, (rows, upper), fraction)
    return matrix.astype(np.float32)


class CropLandmarker:
    """Finds the five landmarks of aligned crops in batches: O-Net on a fixed box, refined on a box fitted to its
    first answer, a detector where it is unsure.

    Args:
      crop_size: side S of the square crops (the box scales with S / 112).
      min_confidence: crops whose O-Net confidence is below this go to ``fallback``.
      fallback: a detector name (``make_detector``, built on first need), a Detector instance, or None to keep
        O-Net's landmarks everywhere.
      batch_size: crops per O-Net call.
      jit_compile: compile the fixed-box pass with XLA (on CPU about as fast as TensorFlow's graph:
        bench/crop_landmarks.py).
      refine: run the second, refined pass (twice O-Net's work); False keeps the fixed-box pass alone.
      max_disagreement: mean distance in pixels of a 112x112 crop (scaled with S) between the two passes above
        which a crop goes to ``fallback``.

    Raises:
      DetectorUnavailableError: the ``mtcnn`` package is not installed.
    """

    def __init__(self, crop_size=REFERENCE_SIDE, min_confidence=MIN_CONFIDENCE, fallback=DEFAULT_DETECTOR,
                 batch_size=BATCH_SIZE, jit_compile=False, refine=True, max_disagreement=MAX_PASS_DISAGREEMENT):
        _require_package("mtcnn", MTCNN_INSTALL)
        self.crop_size, self.min_confidence, self.batch_size = crop_size, min_confidence, batch_size
        self.fallback, self.jit_compile, self.refine = fallback, jit_compile, refine
        self.max_disagreement = max_disagreement * crop_size / REFERENCE_SIDE
        self.box = np.asarray(ONET_BOX, np.float64) * crop_size / REFERENCE_SIDE
        self.template = template_for(crop_size).astype(np.float64)
        self._fixed, self._moved = None, None

    def _networks(self):
        """Builds (once) the compiled functions of both passes, each returning (O-Net landmark outputs [B, 10],
        face probability [B]): ``fixed(crops uint8 [B, S, S, 3])`` and ``moved(crops, boxes float32 [B, 4])``
        (boxes y1, x1, y2, x2 as fractions, ``tf.image.crop_and_resize``'s)."""
        if self._fixed is None:
            import tensorflow as tf  # pylint: disable=import-outside-toplevel
            from mtcnn.network.onet import ONet  # pylint: disable=import-outside-toplevel
            from mtcnn.utils.tensorflow import load_weights  # pylint: disable=import-outside-toplevel

            onet = ONet()
            onet.build()
            onet.set_weights(load_weights(ONET_WEIGHTS))
            x1, y1, x2, y2 = self.box / self.crop_size
            rows = tf.constant(resample_matrix(y1, y2, self.crop_size, ONET_SIDE))
            cols = tf.constant(resample_matrix(x1, x2, self.crop_size, ONET_SIDE))

            def outputs(patches):
                _, landmarks, face = onet(patches)
                return landmarks, face[:, 1]

            def fixed(crops):
                normalised = (tf.cast(crops, tf.float32) - _PIXEL_MEAN) / _PIXEL_SCALE
                return outputs(tf.einsum("ij,bjkc,lk->bilc", rows, normalised, cols))   # the box, resized to 48x48

            def moved(crops, boxes):
                normalised = (tf.cast(crops, tf.float32) - _PIXEL_MEAN) / _PIXEL_SCALE
                indices = tf.range(tf.shape(crops)[0])
                return outputs(tf.image.crop_and_resize(normalised, boxes, indices, (ONET_SIDE, ONET_SIDE)))

            self._fixed = tf.function(fixed, jit_compile=self.jit_compile)
            self._moved = tf.function(moved)
        return self._fixed, self._moved

    def _batched(self, function, *arrays):
        """Runs ``function`` over ``arrays`` (same length N) in batches of ``batch_size`` (the last one padded, so
        one shape is traced); returns (outputs float32 [N, 10], face probability float32 [N])."""
        outputs, confidence = [np.zeros((0, 10), np.float32)], [np.zeros((0,), np.float32)]
        count = len(arrays[0])
        for start in range(0, count, self.batch_size):
            batch = [a[start:start + self.batch_size] for a in arrays]
            padding = self.batch_size - len(batch[0])
            batch = [np.concatenate([b, np.zeros((padding,) + b.shape[1:], b.dtype)]) for b in batch]
            landmarks, face = function(*batch)
            outputs.append(landmarks.numpy())
            confidence.append(face.numpy())
        return np.concatenate(outputs)[:count], np.concatenate(confidence)[:count]

    def _to_crop(self, outputs):
        """float32 [N, 10] O-Net outputs (fractions of ``self.box``) -> float64 [N, 5, 2] pixels of the crop, as the
        mtcnn package maps them: x = (x2 - x1 + 1) * fraction + x1 - 1."""
        x1, y1, x2, y2 = self.box
        return np.stack([(x2 - x1 + 1) * outputs[:, :5] + x1 - 1, (y2 - y1 + 1) * outputs[:, 5:] + y1 - 1], axis=-1)

    def _check(self, crops):
        crops = np.asarray(crops)
        if crops.ndim != 4 or crops.shape[1:] != (self.crop_size, self.crop_size, 3) or crops.dtype != np.uint8:
            raise ValueError(f"crops must be uint8 [N, {self.crop_size}, {self.crop_size}, 3], got {crops.dtype} "
                             f"{crops.shape}.")
        return crops

    def onet(self, crops):
        """O-Net's landmarks on the fixed box, no refinement, no fallback.

        Args:
          crops: uint8 [N, S, S, 3] RGB aligned faces, S = ``crop_size``.

        Returns:
          (landmarks float32 [N, 5, 2] pixels of the crops, confidence float32 [N] in [0, 1]).
        """
        outputs, confidence = self._batched(self._networks()[0], self._check(crops))
        return self._to_crop(outputs).astype(np.float32), confidence

    def refined(self, crops, landmarks):
        """O-Net's landmarks on the fixed box moved and scaled to each crop's face: the box is mapped by the
        translation and scale that best carry the template's points onto ``landmarks`` (least squares).

        Args:
          crops: uint8 [N, S, S, 3] RGB aligned faces.
          landmarks: float [N, 5, 2] a first estimate (pixels of the crops), e.g. ``onet``'s.

        Returns:
          (landmarks float32 [N, 5, 2] pixels of the crops, confidence float32 [N] in [0, 1]).
        """
        crops, landmarks = self._check(crops), np.asarray(landmarks, np.float64)
        template = self.template - self.template.mean(axis=0)
        centred = landmarks - landmarks.mean(axis=1, keepdims=True)
        scale = (centred * template).sum(axis=(1, 2)) / (template ** 2).sum()                 # [N]
        shift = landmarks.mean(axis=1) - scale[:, None] * self.template.mean(axis=0)         # [N, 2] (x, y)
        # A pixel p of the fixed box is read at scale * p + shift; crop_and_resize reads fraction f at f * (S - 1).
        x1, y1, x2, y2 = self.box / self.crop_size
        offset = shift / (self.crop_size - 1)
        boxes = np.stack([scale * y1 + offset[:, 1], scale * x1 + offset[:, 0],
                          scale * y2 + offset[:, 1], scale * x2 + offset[:, 0]], axis=1).astype(np.float32)
        outputs, confidence = self._batched(self._networks()[1], crops, boxes)
        moved = scale[:, None, None] * self._to_crop(outputs) + shift[:, None, :]
        return moved.astype(np.float32), confidence

    def __call__(self, crops):
        """Landmarks of aligned crops: O-Net's (refined unless ``refine`` is False), or the fallback detector's where
        O-Net's confidence is low or its two passes disagree.

        Args:
          crops: uint8 [N, S, S, 3] RGB aligned faces, S = ``crop_size``.

        Returns:
          CropLandmarks (NaN landmarks where the fallback detector found no face).
        """
        landmarks, confidence = self.onet(crops)
        disagreement = np.zeros(len(landmarks))
        if self.refine:
            first = landmarks
            landmarks, confidence = self.refined(crops, first)
            disagreement = np.linalg.norm(landmarks - first, axis=-1).mean(axis=-1)
        unsure = (confidence < self.min_confidence) | (disagreement > self.max_disagreement)
        if self.fallback is None:
            unsure[:] = False
        if unsure.any() and isinstance(self.fallback, str):
            self.fallback = make_detector(self.fallback)
        for index in np.flatnonzero(unsure):
            found = landmarks_on_aligned_crop(self.fallback, crops[index])
            landmarks[index] = np.nan if found is None else found
        return CropLandmarks(landmarks=landmarks, confidence=confidence, fallback=unsure)
