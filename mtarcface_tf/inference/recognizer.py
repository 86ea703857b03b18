"""Face recognition with an exported MTArcFace model: embed, verify, identify against a gallery, mask status.

``FaceRecognizer`` runs a SavedModel written by ``export_saved_model`` (or a training workdir / checkpoint through
``mtarcface_tf.train.checkpoints.load_model``). Ordinary photos go through detection (MTCNN or RetinaFace) and
five-point alignment; already aligned faces (``aligned=True``, e.g. SynthFaces) skip both.

Decisions use the cosine similarity of L2-normalized embeddings. The threshold comes, in order, from the caller,
from the export's ``assets.extra/mtarcface.json`` (``recommended_threshold``, calibrated by the evaluation report),
or ``DEFAULT_COSINE_THRESHOLD``. A model without a mask head reports mask status "unknown".
"""
import dataclasses
import json
import logging
import os

import cv2
import numpy as np
from tqdm import tqdm

from mtarcface_tf.inference.gallery import EmptyGalleryError, Gallery, GalleryError

# Cosine 0.3 = squared distance 1.4, about where insightface's 10-fold protocol puts the best LFW threshold of
# ArcFace LResNet-50 models; use the threshold an evaluation report recommends whenever there is one.
DEFAULT_COSINE_THRESHOLD = 0.3
MASK_DECISION = 0.5          # mask_prob[:, 1] above this = "mask"
UNKNOWN = "unknown"


class ModelLoadError(ValueError):
    """A model path that is neither a SavedModel nor a training checkpoint (the message names the path)."""


class NoFaceError(ValueError):
    """No face was found in an image (the message names the image)."""


@dataclasses.dataclass
class FaceCrop:
    """An aligned face ready for the network: ``crop`` uint8 [S, S, 3]; ``box`` float32 [4] (x1, y1, x2, y2) in the
    source image; ``note`` a remark for the user (e.g. "3 faces found; used the largest") or ""."""

    crop: np.ndarray
    box: np.ndarray
    note: str = ""


def _saved_model_embedder(saved_model_dir):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from mtarcface_tf.export.saved_model import SERVING_SIGNATURE, read_metadata  # pylint: disable=import-outside-toplevel

    signature = tf.saved_model.load(saved_model_dir).signatures[SERVING_SIGNATURE]
    metadata = read_metadata(saved_model_dir)
    input_size = metadata.get("input_size") or signature.structured_input_signature[1]["images"].shape[1]

    def embed(images):
        outputs = signature(images=tf.constant(images, tf.uint8))
        mask_prob = outputs.get("mask_prob")
        return outputs["embedding"].numpy(), None if mask_prob is None else mask_prob.numpy()

    return embed, int(input_size), metadata


def _keras_embedder(path):
    from mtarcface_tf.export.tflite import keras_reference  # pylint: disable=import-outside-toplevel
    from mtarcface_tf.train.checkpoints import load_model  # pylint: disable=import-outside-toplevel

    model, _ = load_model(path)
    backbone = getattr(model, "backbone", model)

    def embed(images):
        outputs = keras_reference(backbone, images)
        return outputs["embedding"], outputs.get("mask_prob")

    metadata = {}
    report = os.path.join(path, "report.json") if os.path.isdir(path) else ""
    if os.path.isfile(report):
        with open(report, encoding="utf-8") as handle:
            metadata["recommended_threshold"] = json.load(handle).get("recommended_threshold")
    return embed, int(backbone.input.shape[1]), metadata


def load_embedder(path):
    """Loads a model for embedding.

    Args:
      path: a SavedModel dir, a TF Serving base dir (newest numeric version), a training workdir or a checkpoint prefix.

    Returns:
      (embed, input_size, metadata): ``embed(uint8 [B, S, S, 3]) -> (float32 [B, D] L2-normalized, float32 [B, 2]
      mask probabilities or None)``, S (int), and the export's metadata dict ({} when none).

    Raises:
      ModelLoadError: ``path`` is none of these.
    """
    from mtarcface_tf.export.saved_model import find_saved_model  # pylint: disable=import-outside-toplevel

    path = os.fspath(path)
    saved_model_dir = find_saved_model(path)
    if saved_model_dir:
        return _saved_model_embedder(saved_model_dir)
    if os.path.isdir(path) or os.path.isfile(path + ".index"):
        from mtarcface_tf.train.checkpoints import CheckpointError  # pylint: disable=import-outside-toplevel

        try:
            return _keras_embedder(path)
        except CheckpointError as error:
            raise ModelLoadError(f"{path}: not a SavedModel (no saved_model.pb) nor a usable training checkpoint "
                                 f"({error}); export one with tools/export.py and pass its --export_dir.") from error
    raise ModelLoadError(f"{path}: not a SavedModel (no saved_model.pb) nor a training checkpoint; export one "
                         "with tools/export.py --workdir=RUN --export_dir=OUT and pass OUT.")


def threshold_from_metadata(metadata):
    """Returns the cosine threshold (float) recommended in export metadata, or None.

    Uses ``recommended_threshold.cosine_similarity``, else converts ``squared_distance`` d of unit vectors: 1 - d/2.
    """
    recommended = (metadata or {}).get("recommended_threshold") or {}
    if recommended.get("cosine_similarity") is not None:
        return float(recommended["cosine_similarity"])
    if recommended.get("squared_distance") is not None:
        return 1.0 - float(recommended["squared_distance"]) / 2.0
    return None


def mask_status(mask_prob):
    """Mask status per face from float [B, 2] probabilities (None: no mask head).

    Returns:
      list of dicts ``{"status": "mask"|"no_mask"|"unknown", "probability": P(mask) float or None}``.
    """
    if mask_prob is None:
        return None
    return [{"status": "mask" if prob[1] > MASK_DECISION else "no_mask", "probability": float(prob[1])}
            for prob in np.asarray(mask_prob)]


class FaceRecognizer:
    """Embeds, verifies and identifies faces (with or without masks) with an exported model."""

    def __init__(self, model_path, gallery=None, threshold=None, detector="mtcnn", batch_size=32):
        """Args:
          model_path: see ``load_embedder``.
          gallery: a ``Gallery`` (or a path to a saved one) for ``identify``; None starts an empty one.
          threshold: cosine similarity threshold; None = the export's recommended one or ``DEFAULT_COSINE_THRESHOLD``.
          detector: "mtcnn" or "retinaface" (loaded on first use), or a Detector instance.
          batch_size: images per network call.

        Raises:
          ModelLoadError, GalleryError: the model or gallery path is not usable.
        """
        self._embed, self.input_size, self.metadata = load_embedder(model_path)
        if threshold is None:
            threshold = threshold_from_metadata(self.metadata)
        self.threshold = DEFAULT_COSINE_THRESHOLD if threshold is None else float(threshold)
        self.gallery = Gallery.load(gallery) if isinstance(gallery, (str, os.PathLike)) else (gallery or Gallery())
        self._detector = detector
        self.batch_size = batch_size

    @property
    def detector(self):
        """The face detector (built on first use)."""
        if isinstance(self._detector, str):
            from mtarcface_tf.inference.detect import make_detector  # pylint: disable=import-outside-toplevel

            self._detector = make_detector(self._detector)
        return self._detector

    def embed(self, images):
        """Embeds aligned faces.

        Args:
          images: uint8 [B, S, S, 3] RGB faces aligned to the ArcFace template (S = ``input_size``).

        Returns:
          (embeddings float32 [B, D] L2-normalized, mask_prob float32 [B, 2] (index 1 = mask) or None for a
          model without a mask head).
        """
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[1:] != (self.input_size, self.input_size, 3) or images.dtype != np.uint8:
            raise ValueError(f"embed takes uint8 [B, {self.input_size}, {self.input_size}, 3] aligned faces, got "
                             f"{images.dtype} {images.shape}; pass aligned=False to detect and align photos.")
        parts = [self._embed(images[start:start + self.batch_size])
                 for start in range(0, len(images), self.batch_size)]
        embeddings = np.concatenate([part[0] for part in parts]).astype(np.float32)
        mask = None if parts[0][1] is None else np.concatenate([part[1] for part in parts]).astype(np.float32)
        return embeddings, mask

    def faces(self, image, aligned=False, all_faces=False):
        """Finds and aligns the faces of one image.

        Args:
          image: uint8 [H, W, 3] RGB array, or an image file path.
          aligned: the image already is an aligned face (resized to S×S if needed; no detection).
          all_faces: return every detected face instead of the largest.

        Returns:
          list[FaceCrop] (at least one).

        Raises:
          ImageReadError: unreadable path. NoFaceError: no face detected (the message names the image).
        """
        from mtarcface_tf.inference import align, detect  # pylint: disable=import-outside-toplevel

        source = os.fspath(image) if isinstance(image, (str, os.PathLike)) else "the image"
        image = detect.read_image_rgb(image) if isinstance(image, (str, os.PathLike)) else detect.to_rgb(image)
        height, width = image.shape[:2]
        if aligned:
            crop = image if (height, width) == (self.input_size,) * 2 else cv2.resize(
                image, (self.input_size, self.input_size), interpolation=cv2.INTER_AREA)
            return [FaceCrop(crop, np.array([0, 0, width, height], np.float32))]
        found = sorted(self.detector.detect(image), key=lambda face: face.area, reverse=True)
        if not found:
            raise NoFaceError(f"{source}: no face found; use a clearer photo, another --detector, or --aligned for "
                              "pre-aligned faces.")
        note = ""
        if len(found) > 1 and not all_faces:
            note = f"{len(found)} faces found; used the largest (all_faces for every face)"
            logging.warning("%s: %s", source, note)
            found = found[:1]
        return [FaceCrop(align.align_face(image, face.landmarks, self.input_size), face.box, note) for face in found]

    def verify(self, image_a, image_b, aligned=False):
        """Decides whether two images show the same person.

        Args:
          image_a, image_b: uint8 [H, W, 3] RGB arrays or file paths (the largest face of each is used).
          aligned: inputs are already aligned faces.

        Returns:
          dict: ``similarity`` (cosine, float), ``same`` (bool, similarity >= threshold), ``threshold``,
          ``mask_a`` / ``mask_b`` (see ``mask_status``; None without a mask head), ``notes`` (list[str]).
        """
        crops = [self.faces(image, aligned)[0] for image in (image_a, image_b)]
        embeddings, mask_prob = self.embed(np.stack([crop.crop for crop in crops]))
        similarity = float(np.dot(embeddings[0], embeddings[1]))
        masks = mask_status(mask_prob) or [None, None]
        return {"similarity": similarity, "same": bool(similarity >= self.threshold), "threshold": self.threshold,
                "mask_a": masks[0], "mask_b": masks[1], "notes": [crop.note for crop in crops if crop.note]}

    def identify(self, image, top_k=5, aligned=False, all_faces=False):
        """Identifies the face(s) of an image against the gallery.

        Args:
          image: uint8 [H, W, 3] RGB array or file path.
          top_k: candidates listed per face.
          aligned: the image is an aligned face. all_faces: every detected face, not only the largest.

        Returns:
          list (one per face) of dicts: ``box`` (list of 4 floats), ``identity`` (best name, or "unknown" when its
          similarity is under the threshold), ``similarity`` (float), ``candidates`` (top-k list of
          ``{"name", "similarity"}``), ``mask`` (``mask_status`` entry or None), ``svm`` (``{"name",
          "probability"}`` when the gallery has an SVM, else None), ``note``.

        Raises:
          EmptyGalleryError: nobody enrolled. NoFaceError / ImageReadError: as ``faces``.
        """
        if not len(self.gallery):
            raise EmptyGalleryError("the gallery is empty; enroll people first (tools/recognize.py enroll).")
        crops = self.faces(image, aligned, all_faces)
        embeddings, mask_prob = self.embed(np.stack([crop.crop for crop in crops]))
        indices, similarities = self.gallery.search(embeddings, top_k)
        svm = self.gallery.svm_predict(embeddings)
        masks = mask_status(mask_prob)
        names = self.gallery.names
        results = []
        for row, crop in enumerate(crops):
            best = float(similarities[row, 0])
            results.append({
                "box": [float(value) for value in crop.box],
                "identity": names[indices[row, 0]] if best >= self.threshold else UNKNOWN,
                "similarity": best,
                "candidates": [{"name": names[index], "similarity": float(score)}
                               for index, score in zip(indices[row], similarities[row])],
                "mask": masks[row] if masks else None,
                "svm": {"name": svm[row][0], "probability": svm[row][1]} if svm else None,
                "note": crop.note,
            })
        return results

    def enroll(self, name, images, aligned=False):
        """Adds a person from several images (largest face of each) to the gallery.

        Args:
          name: the person's name. images: iterable of RGB arrays or file paths.
          aligned: the images are aligned faces.

        Returns:
          (enrolled count int, failures list of (image label, reason str)); images without a usable face are
          skipped and listed, never silently.

        Raises:
          GalleryError: none of the images gave a face.
        """
        from mtarcface_tf.inference.detect import InvalidImageError  # pylint: disable=import-outside-toplevel

        crops, failures = [], []
        for index, image in enumerate(images):
            label = os.fspath(image) if isinstance(image, (str, os.PathLike)) else f"{name}[{index}]"
            try:
                crops.append(self.faces(image, aligned)[0].crop)
            except (NoFaceError, InvalidImageError) as error:
                failures.append((label, str(error)))
        if not crops:
            raise GalleryError(f"{name}: none of the {len(failures)} images gave a face; nothing enrolled.")
        embeddings, _ = self.embed(np.stack(crops))
        self.gallery.add(name, embeddings)
        return len(crops), failures

    def enroll_folder(self, images_dir, aligned=False, progress=True):
        """Enrolls every sub-folder of ``images_dir`` as one person (folder name = person name).

        Returns:
          dict ``{"enrolled": {name: image count}, "failed": [(path, reason), ...]}``.

        Raises:
          GalleryError: ``images_dir`` is missing or has no sub-folder with images.
        """
        images_dir = os.fspath(images_dir)
        if not os.path.isdir(images_dir):
            raise GalleryError(f"{images_dir}: no such folder; --images needs one sub-folder of photos per person.")
        people = sorted(entry for entry in os.listdir(images_dir) if os.path.isdir(os.path.join(images_dir, entry)))
        if not people:
            raise GalleryError(f"{images_dir}: no sub-folders; put each person's photos in IMAGES/NAME/.")
        summary = {"enrolled": {}, "failed": []}
        for person in tqdm(people, desc="enrolling", unit="person", disable=not progress):
            folder = os.path.join(images_dir, person)
            try:
                count, failures = self.enroll(person, list_files(folder), aligned)
                summary["enrolled"][person] = count
                summary["failed"].extend(failures)
            except GalleryError as error:
                summary["failed"].append((folder, str(error)))
        return summary


def annotate(image_rgb, results):
    """Draws identify results on a copy of an image.

    Args:
      image_rgb: uint8 [H, W, 3] RGB.
      results: list of dicts from ``FaceRecognizer.identify``.

    Returns:
      uint8 [H, W, 3] RGB with a box per face (green = known, red = unknown) and "name score mask" text.
    """
    canvas = np.ascontiguousarray(image_rgb).copy()
    scale = max(canvas.shape[:2]) / 500.0
    for result in results:
        x1, y1, x2, y2 = (int(round(value)) for value in result["box"])
        color = (0, 200, 0) if result["identity"] != UNKNOWN else (220, 0, 0)
        mask = result.get("mask")
        text = f"{result['identity']} {result['similarity']:.2f}" + (
            f" {mask['status']}" if mask else "")
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, max(1, int(2 * scale)))
        cv2.putText(canvas, text, (x1, max(y1 - 4, 12)), cv2.FONT_HERSHEY_SIMPLEX, max(0.35, 0.5 * scale), color,
                    max(1, int(scale)), cv2.LINE_AA)
    return canvas


def list_files(folder):
    """Returns the sorted paths (list[str]) of the non-hidden files in ``folder``; non-images among them fail
    later with a clear message and are counted, rather than being skipped silently."""
    return sorted(os.path.join(folder, name) for name in os.listdir(folder)
                  if not name.startswith(".") and os.path.isfile(os.path.join(folder, name)))

