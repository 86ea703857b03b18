"""Five landmarks of aligned face crops without detection: MTCNN's O-Net on one fixed box, a detector as fallback.

An aligned crop (a 112x112 record of MS1MV2, say) holds its face where the ArcFace template puts it, so the face
box need not be searched for. O-Net, the last stage of MTCNN (its weights ship with the ``mtcnn`` package), is run
batched on the same square box of every crop, then (``refine``) once more on that box moved and scaled to the face
the first pass found, as MTCNN's own cascade refines its boxes (only where the box moves by ``MIN_BOX_MOVE`` or more:
a box that barely moves reads nearly the same patch). Crops where O-Net's face confidence is below
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
# Crops whose refined box would move by less than this (mean displacement of its corners, pixels of a 112x112 crop)
# keep the first pass: 73% of the real-photo crops of bench/crop_landmarks.py, for +0.05 px of error there.
MIN_BOX_MOVE = 2.0
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


class CropLandmarker:
    """Finds the five landmarks of aligned crops in batches: O-Net on a fixed box, refined on a box fitted to its
    first answer, a detector where it is unsure.

    Args:
      crop_size: side S of the square crops (the box scales with S / 112).
      min_confidence: crops whose O-Net confidence is below this go to ``fallback``.
      fallback: a detector name (``make_detector``, built on first need), a Detector instance, or None to keep
        O-Net's landmarks everywhere.
      batch_size: crops per O-Net call.
      refine: run the second, refined pass where the box moves; False keeps the fixed-box pass alone.
      max_disagreement: mean distance in pixels of a 112x112 crop (scaled with S) between the two passes above
        which a crop goes to ``fallback``.
      min_box_move: the refined pass runs on crops whose box moves by at least this (pixels of a 112x112 crop).

    Raises:
      DetectorUnavailableError: the ``mtcnn`` package is not installed.
    """

    def __init__(self, crop_size=REFERENCE_SIDE, min_confidence=MIN_CONFIDENCE, fallback=DEFAULT_DETECTOR,
                 batch_size=BATCH_SIZE, refine=True, max_disagreement=MAX_PASS_DISAGREEMENT,
                 min_box_move=MIN_BOX_MOVE):
        _require_package("mtcnn", MTCNN_INSTALL)
        self.crop_size, self.min_confidence, self.batch_size = crop_size, min_confidence, batch_size
        self.fallback, self.refine = fallback, refine
        self.max_disagreement = max_disagreement * crop_size / REFERENCE_SIDE
        self.min_box_move = min_box_move * crop_size / REFERENCE_SIDE
        self.box = np.asarray(ONET_BOX, np.float64) * crop_size / REFERENCE_SIDE
        self.template = template_for(crop_size).astype(np.float64)
        self._predict = None

    def _network(self):
        """Builds (once) the compiled function (crops uint8 [B, S, S, 3], boxes float32 [B, 4]) -> (O-Net landmark
        outputs [B, 10], face probability [B]); boxes are y1, x1, y2, x2 as fractions (``tf.image.crop_and_resize``'s,
        which also measured faster on CPU than a constant resampling matrix product or XLA)."""
        if self._predict is None:
            import tensorflow as tf  # pylint: disable=import-outside-toplevel
            from mtcnn.network.onet import ONet  # pylint: disable=import-outside-toplevel
            from mtcnn.utils.tensorflow import load_weights  # pylint: disable=import-outside-toplevel

            onet = ONet()
            onet.build()
            onet.set_weights(load_weights(ONET_WEIGHTS))

            def predict(crops, boxes):
                # Outside the crop reads the mean pixel, i.e. 0 once normalised (normalising 48x48 patches is cheaper
                # than normalising whole crops).
                patches = tf.image.crop_and_resize(crops, boxes, tf.range(tf.shape(crops)[0]), (ONET_SIDE, ONET_SIDE),
                                                   extrapolation_value=_PIXEL_MEAN)
                _, landmarks, face = onet((patches - _PIXEL_MEAN) / _PIXEL_SCALE)
                return landmarks, face[:, 1]

            spec = [tf.TensorSpec([None, self.crop_size, self.crop_size, 3], tf.uint8), tf.TensorSpec([None, 4])]
            self._predict = tf.function(predict, input_signature=spec)   # one trace for every batch size
        return self._predict

    def _batched(self, function, *arrays):
        """Runs ``function`` over ``arrays`` (same length N) in batches of at most ``batch_size``; returns (outputs
        float32 [N, 10], face probability float32 [N])."""
        outputs, confidence = [np.zeros((0, 10), np.float32)], [np.zeros((0,), np.float32)]
        for start in range(0, len(arrays[0]), self.batch_size):
            landmarks, face = function(*[a[start:start + self.batch_size] for a in arrays])
            outputs.append(landmarks.numpy())
            confidence.append(face.numpy())
        return np.concatenate(outputs), np.concatenate(confidence)

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
        crops = self._check(crops)
        boxes = np.tile(self._boxes(np.ones(1), np.zeros((1, 2))), (len(crops), 1))
        outputs, confidence = self._batched(self._network(), crops, boxes)
        return self._to_crop(outputs).astype(np.float32), confidence

    def _fit(self, landmarks):
        """The translation and scale that best carry the template's points onto ``landmarks`` float [N, 5, 2]
        (least squares): (scale [N], shift [N, 2] (x, y) pixels)."""
        template = self.template - self.template.mean(axis=0)
        centred = landmarks - landmarks.mean(axis=1, keepdims=True)
        scale = (centred * template).sum(axis=(1, 2)) / (template ** 2).sum()
        return scale, landmarks.mean(axis=1) - scale[:, None] * self.template.mean(axis=0)

    def _boxes(self, scale, shift):
        """crop_and_resize boxes float32 [N, 4] reading fixed-box pixel p at ``scale * p + shift`` (a fraction f is
        read at pixel f * (S - 1))."""
        x1, y1, x2, y2 = self.box / self.crop_size
        offset = shift / (self.crop_size - 1)
        return np.stack([scale * y1 + offset[:, 1], scale * x1 + offset[:, 0],
                         scale * y2 + offset[:, 1], scale * x2 + offset[:, 0]], axis=1).astype(np.float32)

    def box_move(self, landmarks):
        """float [N]: how far (mean displacement of its corners, pixels) the refined pass would move the fixed box
        for first-pass ``landmarks`` float [N, 5, 2]."""
        scale, shift = self._fit(np.asarray(landmarks, np.float64))
        corners = self.box.reshape(2, 2)
        moved = scale[:, None, None] * corners + shift[:, None, :]
        return np.linalg.norm(moved - corners, axis=-1).mean(axis=-1)

    def refined(self, crops, landmarks):
        """O-Net's landmarks on the fixed box moved and scaled to each crop's face: the box is mapped by the
        translation and scale that best carry the template's points onto ``landmarks`` (least squares).

        Args:
          crops: uint8 [N, S, S, 3] RGB aligned faces.
          landmarks: float [N, 5, 2] a first estimate (pixels of the crops), e.g. ``onet``'s.

        Returns:
          (landmarks float32 [N, 5, 2] pixels of the crops, confidence float32 [N] in [0, 1]).
        """
        crops = self._check(crops)
        scale, shift = self._fit(np.asarray(landmarks, np.float64))
        outputs, confidence = self._batched(self._network(), crops, self._boxes(scale, shift))
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
        crops = self._check(crops)
        landmarks, confidence = self.onet(crops)
        disagreement = np.zeros(len(landmarks))
        moves = np.flatnonzero(self.box_move(landmarks) >= self.min_box_move) if self.refine else []
        if len(moves):
            first = landmarks[moves]
            landmarks[moves], confidence[moves] = self.refined(crops[moves], first)
            disagreement[moves] = np.linalg.norm(landmarks[moves] - first, axis=-1).mean(axis=-1)
        unsure = (confidence < self.min_confidence) | (disagreement > self.max_disagreement)
        if self.fallback is None:
            unsure[:] = False
        if unsure.any() and isinstance(self.fallback, str):
            self.fallback = make_detector(self.fallback)
        for index in np.flatnonzero(unsure):
            found = landmarks_on_aligned_crop(self.fallback, crops[index])
            landmarks[index] = np.nan if found is None else found
        return CropLandmarks(landmarks=landmarks, confidence=confidence, fallback=unsure)
