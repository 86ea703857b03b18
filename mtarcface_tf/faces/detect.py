"""Face detection behind one interface: MTCNN (``mtcnn`` package) and RetinaFace (``retinaface`` 1.1.1 frozen graph).

RetinaFace is the default: on real photos with masks painted on it finds far more faces than MTCNN
(``bench/detect_realfaces.py``, docs/results/detect_realfaces.json). Where its weights are not installed the default
falls back to MTCNN, with a one-line note.

Every detector returns ``Face`` records in original-image pixels with five landmarks in ArcFace template order
(left eye, right eye, nose, left mouth corner, right mouth corner; "left" = image-left), ready for
``mtarcface_tf.faces.align.align_face``.
"""
import abc
import dataclasses
import importlib.util
import logging
import os

import cv2
import numpy as np
from mtarcface_tf.faces.align import rescale_points
from mtarcface_tf.images import ImageReadError, InvalidImageError, read_image_rgb, to_rgb  # noqa: F401 (re-exported)
from mtarcface_tf.progress import progress_bar

DEFAULT_DETECTOR = "retinaface"
FALLBACK_DETECTOR = "mtcnn"
RETINAFACE_INSTALL = "pip install --no-deps retinaface==1.1.1"
MTCNN_INSTALL = "pip install mtcnn==1.0.0"
# RetinaFace's feature pyramid needs input sides that are multiples of its largest stride.
RETINAFACE_STRIDE = 32


class DetectorUnavailableError(RuntimeError):
    """The package a detector needs is not installed (the message says how to install it)."""


@dataclasses.dataclass
class Face:
    """One detected face.

    Attributes:
      box: float32 [4] x1, y1, x2, y2 in original-image pixels.
      score: detector confidence in [0, 1].
      landmarks: float32 [5, 2] (x, y) pixels: left eye, right eye, nose, left mouth corner, right mouth corner
        ("left" = image-left, as in the ArcFace template).
    """

    box: np.ndarray
    score: float
    landmarks: np.ndarray

    @property
    def area(self):
        """Box area in square pixels (float)."""
        return float(max(self.box[2] - self.box[0], 0.0) * max(self.box[3] - self.box[1], 0.0))


def by_size(faces):
    """Returns the ``Face``s sorted by box area, largest first (ties keep their order)."""
    return sorted(faces, key=lambda face: face.area, reverse=True)


def largest_face(faces):
    """Returns the ``Face`` with the largest box, or None for no faces."""
    return by_size(faces)[0] if faces else None


class Detector(abc.ABC):
    """A face detector; subclasses implement ``_detect_rgb`` and load their model lazily, once."""

    @abc.abstractmethod
    def _detect_rgb(self, image_rgb):
        """Returns the faces (any order) found in a uint8 [H, W, 3] RGB image."""

    def detect(self, image_rgb):
        """Detects all faces.

        Args:
          image_rgb: uint8 [H, W, 3] RGB (grayscale [H, W] / [H, W, 1] and RGBA [H, W, 4] are converted).

        Returns:
          list[Face], highest score first (empty when no face is found).

        Raises:
          InvalidImageError: the array is not an image ``to_rgb`` accepts.
        """
        faces = self._detect_rgb(to_rgb(image_rgb))
        return sorted(faces, key=lambda face: face.score, reverse=True)

    def detect_largest(self, image_rgb):
        """Returns the face with the largest box (a Face), or None when there is none. Input as ``detect``."""
        return largest_face(self.detect(image_rgb))

    def detect_batch(self, images, largest_only=True, progress=True):
        """Detects faces in many images, with a progress bar.

        Args:
          images: iterable of images (arrays as ``detect`` takes) or image file paths.
          largest_only: return the largest face per image (Face or None) instead of all faces (list[Face]).
          progress: show progress (a bar on a terminal, plain lines in a log).

        Returns:
          list with one entry per input, in input order: Face | None if ``largest_only`` else list[Face].
          Unreadable files and invalid arrays are skipped (None / []), each logged, and counted in a final warning.
        """
        results, skipped = [], 0
        for item in progress_bar(images, desc="detecting faces", unit="img", disable=not progress):
            try:
                image = read_image_rgb(item) if isinstance(item, (str, os.PathLike)) else item
                results.append(self.detect_largest(image) if largest_only else self.detect(image))
            except InvalidImageError as error:
                logging.warning("skipped: %s", error)
                skipped += 1
                results.append(None if largest_only else [])
        if skipped:
            logging.warning("detect_batch skipped %d of %d images (unreadable or invalid).", skipped, len(results))
        return results


def _require_package(name, install_command):
    if importlib.util.find_spec(name) is None:
        raise DetectorUnavailableError(f"the '{name}' package is not installed; run: {install_command}")


class MTCNNDetector(Detector):
    """MTCNN (Zhang et al. 2016) from the ``mtcnn`` 1.0 package, which ships its own weights."""

    def __init__(self, min_face_size=20, thresholds=(0.6, 0.7, 0.8), scale_factor=0.709, device="CPU:0"):
        """Args:
          min_face_size: smallest face side in pixels searched by the image pyramid.
          thresholds: score thresholds of the P-, R- and O-Net stages (the package's defaults).
          scale_factor: pyramid scale step.
          device: TensorFlow device the networks run on, e.g. "CPU:0" or "GPU:0".

        Raises:
          DetectorUnavailableError: the ``mtcnn`` package is not installed.
        """
        _require_package("mtcnn", MTCNN_INSTALL)
        if len(thresholds) != 3:
            raise ValueError(f"thresholds must be three numbers (P-Net, R-Net, O-Net), got {thresholds!r}.")
        self._options = dict(
            min_face_size=min_face_size,
            scale_factor=scale_factor,
            threshold_pnet=thresholds[0],
            threshold_rnet=thresholds[1],
            threshold_onet=thresholds[2],
        )
        self._device = device
        self._model = None

    def _network(self):
        if self._model is None:
            from mtcnn import MTCNN  # pylint: disable=import-outside-toplevel

            self._model = MTCNN(device=self._device)
        return self._model

    def _detect_rgb(self, image_rgb):
        rows = self._network().detect_faces(image_rgb, box_format="xyxy", output_type="numpy", **self._options)
        # Row layout of mtcnn 1.0: image id, x1, y1, x2, y2, score, then the five x's, then the five y's,
        # each in the order left eye, right eye, nose, mouth left, mouth right (image-left first).
        return [
            Face(
                box=np.asarray(row[1:5], dtype=np.float32),
                score=float(row[5]),
                landmarks=np.stack([row[6:11], row[11:16]], axis=1).astype(np.float32),
            )
            for row in np.asarray(rows).reshape(-1, 16)
        ]


class RetinaFaceDetector(Detector):
    """RetinaFace from the frozen graph that ships with the ``retinaface`` 1.1.1 package.

    Only ``retinaface/src/frozen_graph.pb`` is used; the package's Python wrapper is never imported (it pins
    TensorFlow 2.5 and uses ``np.int``). The graph maps a float32 RGB 0..255 image [1, H, W, 3] (H, W multiples
    of 32) to rows [N, 16]: box x1, y1, x2, y2 and the five landmarks (x, y) as fractions of the padded width and
    height, a landmark-validity flag, and the score.
    """

    def __init__(self, max_side=640, score_threshold=0.9, upscale=False):
        """Args:
          max_side: images whose longer side exceeds this are shrunk to it before detection (None: never resize).
          score_threshold: faces scoring below this are dropped.
          upscale: also enlarge smaller images to ``max_side`` (finds smaller faces, costs time).

        Raises:
          DetectorUnavailableError: the ``retinaface`` package (or its frozen graph) is not installed.
        """
        self._graph_path = self.graph_path()
        self.max_side = max_side
        self.score_threshold = score_threshold
        self.upscale = upscale
        self._model = None

    @staticmethod
    def graph_path():
        """Returns the path (str) of the installed ``retinaface`` package's frozen_graph.pb.

        Raises:
          DetectorUnavailableError: the package or the file is missing.
        """
        _require_package("retinaface", RETINAFACE_INSTALL)
        spec = importlib.util.find_spec("retinaface")
        for folder in spec.submodule_search_locations or ():
            path = os.path.join(folder, "src", "frozen_graph.pb")
            if os.path.isfile(path):
                return path
        raise DetectorUnavailableError(
            f"the 'retinaface' package has no src/frozen_graph.pb; run: {RETINAFACE_INSTALL}")

    def _network(self):
        if self._model is None:
            import tensorflow as tf  # pylint: disable=import-outside-toplevel

            graph_def = tf.compat.v1.GraphDef()
            with open(self._graph_path, "rb") as graph_file:
                graph_def.ParseFromString(graph_file.read())
            wrapped = tf.compat.v1.wrap_function(lambda: tf.compat.v1.import_graph_def(graph_def, name=""), [])
            graph = wrapped.graph
            pruned = wrapped.prune(graph.as_graph_element("x:0"), graph.as_graph_element("Identity:0"))
            self._model = lambda images: pruned(tf.convert_to_tensor(images, dtype=tf.float32)).numpy()
        return self._model

    def _resize_scale(self, height, width):
        long_side = max(height, width)
        if self.max_side is None or (long_side <= self.max_side and not self.upscale):
            return 1.0
        return self.max_side / long_side

    def _detect_rgb(self, image_rgb):
        height, width = image_rgb.shape[:2]
        scale = self._resize_scale(height, width)
        resized = image_rgb
        if scale != 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            resized = cv2.resize(image_rgb, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        rows = self._run(resized)
        # Fractions of the padded input -> resized pixels -> original pixels (per-axis, as the resize rounds).
        padded_h, padded_w = _padded(resized.shape[0]), _padded(resized.shape[1])
        to_original = np.array(
            [padded_w * width / resized.shape[1], padded_h * height / resized.shape[0]], dtype=np.float64
        )
        faces = []
        for row in rows[rows[:, 15] >= self.score_threshold]:
            points = row[:14].reshape(7, 2) * to_original
            box = np.clip(points[:2].reshape(4), 0, [width - 1, height - 1, width - 1, height - 1])
            faces.append(Face(box=box.astype(np.float32), score=float(row[15]),
                              landmarks=points[2:].astype(np.float32)))
        return faces

    def _run(self, image_rgb):
        """Pads a uint8 [h, w, 3] image to multiples of 32 and returns the graph's float64 [N, 16] rows."""
        height, width = image_rgb.shape[:2]
        padded = np.zeros((1, _padded(height), _padded(width), 3), dtype=np.float32)
        padded[0, :height, :width] = image_rgb
        return np.asarray(self._network()(padded), dtype=np.float64).reshape(-1, 16)


def _padded(side):
    return -(-side // RETINAFACE_STRIDE) * RETINAFACE_STRIDE


DETECTORS = {"mtcnn": MTCNNDetector, "retinaface": RetinaFaceDetector}


def choose_detector(name=None):
    """Resolves a detector choice: a given name as it is; None = RetinaFace where its weights are installed, else MTCNN.

    Returns:
      (name, note): the detector name (str) and "" or, on the fallback, a one-line note (str) saying why.
    """
    if name is not None:
        return name, ""
    try:
        RetinaFaceDetector.graph_path()
    except DetectorUnavailableError as error:
        return FALLBACK_DETECTOR, (f"note: using MTCNN, which misses more masked faces, because RetinaFace is not "
                                   f"available ({error})")
    return DEFAULT_DETECTOR, ""


def make_detector(name=None, **kwargs):
    """Builds a detector by name.

    Args:
      name: "mtcnn", "retinaface", or None for ``choose_detector()``'s default (its fallback note is logged).
      **kwargs: passed to the detector's constructor (see ``MTCNNDetector`` / ``RetinaFaceDetector``).

    Returns:
      a Detector (the model loads on first use).

    Raises:
      ValueError: unknown name (the message lists the choices).
      DetectorUnavailableError: the detector named explicitly is not installed.
    """
    name, note = choose_detector(name)
    if note:
        logging.warning("%s", note)
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; choose one of: {', '.join(sorted(DETECTORS))}.")
    return DETECTORS[name](**kwargs)


# Detectors look for faces with some context around them: an aligned crop (the face fills it) is padded by this
# fraction of its side on every side (edge pixels repeated) and scaled by this factor before detection.
CROP_PADDING = 0.5
CROP_UPSCALE = 2.0


def landmarks_on_aligned_crop(detector, crop_rgb, padding=CROP_PADDING, upscale=CROP_UPSCALE):
    """Detects the five landmarks of the face in an aligned crop (e.g. a 112x112 record of MS1MV2).

    Args:
      detector: a Detector.
      crop_rgb: uint8 [S, S, 3] RGB aligned face.
      padding: fraction of S added on every side (edge replicated) before detection.
      upscale: factor the padded crop is resized by before detection.

    Returns:
      float32 [5, 2] (x, y) landmarks in pixels of ``crop_rgb`` (template order), or None when no face is found.
      Of several faces, the one whose landmarks' centre is nearest the crop centre is taken.
    """
    size = crop_rgb.shape[0]
    border = int(round(padding * size))
    padded = cv2.copyMakeBorder(np.ascontiguousarray(crop_rgb), border, border, border, border, cv2.BORDER_REPLICATE)
    side = int(round(padded.shape[0] * upscale))
    faces = detector.detect(cv2.resize(padded, (side, side), interpolation=cv2.INTER_CUBIC))
    if not faces:
        return None
    ratio = padded.shape[0] / side
    candidates = [rescale_points(np.asarray(f.landmarks, np.float32), ratio) - border for f in faces]
    centre = (size - 1) / 2
    return min(candidates, key=lambda points: float(np.sum((points.mean(axis=0) - centre) ** 2)))
