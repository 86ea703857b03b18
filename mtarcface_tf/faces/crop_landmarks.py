"""Five landmarks of aligned face crops without detection: MTCNN's O-Net on one fixed box, a detector as fallback.

An aligned crop (a 112x112 record of MS1MV2, say) holds its face where the ArcFace template puts it, so the face
box need not be searched for. O-Net, the last stage of MTCNN (its weights ship with the ``mtcnn`` package), is run
batched on the same square box of every crop; crops where O-Net's face confidence is below ``min_confidence`` get
their landmarks from a detector instead (``detect.landmarks_on_aligned_crop``, RetinaFace by default). Speed and
agreement with RetinaFace: bench/crop_landmarks.py, docs/landmarks.md. TensorFlow is imported on first use only.
"""
import dataclasses

import numpy as np

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
    """Finds the five landmarks of aligned crops in batches: O-Net on a fixed box, a detector where it is unsure.

    Args:
      crop_size: side S of the square crops (the box scales with S / 112).
      min_confidence: crops whose O-Net confidence is below this go to ``fallback``.
      fallback: a detector name (``make_detector``, built on first need), a Detector instance, or None to keep
        O-Net's landmarks everywhere.
      batch_size: crops per O-Net call.
      jit_compile: compile O-Net with XLA (on CPU it is about as fast as TensorFlow's graph: bench/crop_landmarks.py).

    Raises:
      DetectorUnavailableError: the ``mtcnn`` package is not installed.
    """

    def __init__(self, crop_size=REFERENCE_SIDE, min_confidence=MIN_CONFIDENCE, fallback=DEFAULT_DETECTOR,
                 batch_size=BATCH_SIZE, jit_compile=False):
        _require_package("mtcnn", MTCNN_INSTALL)
        self.crop_size, self.min_confidence, self.batch_size = crop_size, min_confidence, batch_size
        self.fallback, self.jit_compile = fallback, jit_compile
        self.box = np.asarray(ONET_BOX, np.float64) * crop_size / REFERENCE_SIDE
        self._predict = None

    def _network(self):
        """Builds (once) the compiled function uint8 [B, S, S, 3] -> (O-Net landmark outputs [B, 10], face prob [B])."""
        if self._predict is None:
            import tensorflow as tf  # pylint: disable=import-outside-toplevel
            from mtcnn.network.onet import ONet  # pylint: disable=import-outside-toplevel
            from mtcnn.utils.tensorflow import load_weights  # pylint: disable=import-outside-toplevel

            onet = ONet()
            onet.build()
            onet.set_weights(load_weights(ONET_WEIGHTS))
            x1, y1, x2, y2 = self.box / self.crop_size
            rows = tf.constant(resample_matrix(y1, y2, self.crop_size, ONET_SIDE))
            cols = tf.constant(resample_matrix(x1, x2, self.crop_size, ONET_SIDE))

            def predict(crops):
                normalised = (tf.cast(crops, tf.float32) - _PIXEL_MEAN) / _PIXEL_SCALE
                patches = tf.einsum("ij,bjkc,lk->bilc", rows, normalised, cols)  # the fixed box, resized to 48x48
                _, landmarks, face = onet(patches)
                return landmarks, face[:, 1]

            self._predict = tf.function(predict, jit_compile=self.jit_compile)
        return self._predict

    def onet(self, crops):
        """O-Net's landmarks on the fixed box, no fallback.

        Args:
          crops: uint8 [N, S, S, 3] RGB aligned faces, S = ``crop_size``.

        Returns:
          (landmarks float32 [N, 5, 2] pixels of the crops, confidence float32 [N] in [0, 1]).
        """
        crops = np.asarray(crops)
        if crops.ndim != 4 or crops.shape[1:] != (self.crop_size, self.crop_size, 3) or crops.dtype != np.uint8:
            raise ValueError(f"crops must be uint8 [N, {self.crop_size}, {self.crop_size}, 3], got {crops.dtype} "
                             f"{crops.shape}.")
        outputs, confidence = [], []
        for start in range(0, len(crops), self.batch_size):
            batch = crops[start:start + self.batch_size]
            if len(batch) < self.batch_size:   # one traced shape: pad the last batch
                batch = np.concatenate([batch, np.zeros((self.batch_size - len(batch),) + batch.shape[1:], np.uint8)])
            landmarks, face = self._network()(batch)
            outputs.append(landmarks.numpy())
            confidence.append(face.numpy())
        outputs = np.concatenate(outputs)[:len(crops)] if outputs else np.zeros((0, 10), np.float32)
        confidence = np.concatenate(confidence)[:len(crops)] if confidence else np.zeros((0,), np.float32)
        # O-Net gives fractions of its box: x = (x2 - x1 + 1) * fraction + x1 - 1, as the mtcnn package maps them.
        x1, y1, x2, y2 = self.box
        xs = (x2 - x1 + 1) * outputs[:, :5] + x1 - 1
        ys = (y2 - y1 + 1) * outputs[:, 5:] + y1 - 1
        return np.stack([xs, ys], axis=-1).astype(np.float32), confidence.astype(np.float32)

    def __call__(self, crops):
        """Landmarks of aligned crops: O-Net's, or the fallback detector's where O-Net's confidence is low.

        Args:
          crops: uint8 [N, S, S, 3] RGB aligned faces, S = ``crop_size``.

        Returns:
          CropLandmarks (NaN landmarks where the fallback detector found no face).
        """
        landmarks, confidence = self.onet(crops)
        unsure = confidence < self.min_confidence if self.fallback is not None else np.zeros(len(crops), bool)
        if unsure.any() and isinstance(self.fallback, str):
            self.fallback = make_detector(self.fallback)
        for index in np.flatnonzero(unsure):
            found = landmarks_on_aligned_crop(self.fallback, crops[index])
            landmarks[index] = np.nan if found is None else found
        return CropLandmarks(landmarks=landmarks, confidence=confidence, fallback=unsure)
