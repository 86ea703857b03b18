"""Face recognition with an exported MTArcFace model: embed, verify, identify against a gallery, mask status.

``FaceRecognizer`` runs a SavedModel written by ``export_saved_model`` (or a training workdir / checkpoint), loaded
through ``mtarcface_tf.export.embedder.make_embed_fn``. Ordinary photos go through detection (RetinaFace by default,
see ``detect.choose_detector``, or MTCNN) and five-point alignment; already aligned faces (``aligned=True``, e.g.
SynthFaces) skip both.

Decisions use the cosine similarity of L2-normalized embeddings. The threshold comes, in order, from the caller,
from the export's ``assets.extra/mtarcface.json`` (``recommended_threshold``, calibrated by the evaluation report),
or ``DEFAULT_COSINE_THRESHOLD``. Identification is mask-aware: where the report gave a threshold per condition
(``recommended_threshold.by_condition``: clean pairs for a clean probe, mixed pairs, masked probe against clean
gallery, for a masked one), the probe's mask status picks it, and each result says which threshold it applied and
why. A model without a mask head reports mask status "unknown" (the clean threshold applies).
"""
import dataclasses
import hashlib
import logging
import os

import cv2
import numpy as np
from mtarcface_tf.progress import progress_bar

from mtarcface_tf.export.embedder import l2_normalize, make_embed_fn
from mtarcface_tf.faces import align, detect
from mtarcface_tf.inference.gallery import EmptyGalleryError, Gallery, GalleryError

# Cosine 0.3 = squared distance 1.4, about where insightface's 10-fold protocol puts the best LFW threshold of
# ArcFace LResNet-50 models; use the threshold an evaluation report recommends whenever there is one.
DEFAULT_COSINE_THRESHOLD = 0.3
MASK_DECISION = 0.5          # mask_prob[:, 1] above this = "mask"
UNKNOWN = "unknown"
CONDITIONS = ("clean", "masked")
HASH_CHUNK = 1 << 20


class NoFaceError(ValueError):
    """No face was found in an image (the message names the image)."""


@dataclasses.dataclass
class FaceCrop:
    """An aligned face ready for the network: ``crop`` uint8 [S, S, 3]; ``box`` float32 [4] (x1, y1, x2, y2) in the
    source image; ``note`` a remark for the user (e.g. "3 faces found; used the largest") or ""."""

    crop: np.ndarray
    box: np.ndarray
    note: str = ""
    score: float = None    # the detector's confidence (None for aligned input)


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


def condition_thresholds(metadata, threshold=None):
    """The cosine threshold per probe condition and why it applies.

    Args:
      metadata: export metadata (``recommended_threshold`` with optional ``by_condition``: {"clean" | "masked":
        {"cosine_similarity", "far", "pairs"}} from an evaluation report).
      threshold: the caller's threshold (float) or None.

    Returns:
      dict {"clean": (float, reason str), "masked": (float, reason str)}.
    """
    if threshold is not None:
        return {condition: (float(threshold), "the threshold given by the caller (--threshold)")
                for condition in CONDITIONS}
    by_condition = ((metadata or {}).get("recommended_threshold") or {}).get("by_condition") or {}
    single = threshold_from_metadata(metadata)
    result = {}
    for condition, pairs in zip(CONDITIONS, ("clean", "mixed (masked probe, clean gallery)")):
        entry = by_condition.get(condition) or {}
        if entry.get("cosine_similarity") is not None:
            reason = (f"{condition} probe: the evaluation report's threshold of {pairs} pairs at "
                      f"FAR={entry.get('far_target', entry.get('far'))}")
            result[condition] = (float(entry["cosine_similarity"]), reason)
        elif single is not None:
            reason = (f"{condition} probe: the export's recommended threshold (one for every condition; its report "
                      "had no per-condition thresholds)")
            result[condition] = (single, reason)
        else:
            reason = f"{condition} probe: the default threshold (the model has no evaluation report)"
            result[condition] = (DEFAULT_COSINE_THRESHOLD, reason)
    return result


def model_fingerprint(model_path, metadata):
    """A str identifying the model's weights: SHA-256 of a SavedModel's ``variables/variables.index`` (its
    tensors' checksums) or of the checkpoint's index, else of the metadata; galleries refuse another model's."""
    digest = hashlib.sha256()
    path = os.fspath(model_path) if isinstance(model_path, (str, os.PathLike)) else ""
    candidates = [os.path.join(path, "variables", "variables.index"), path + ".index"]
    found = next((candidate for candidate in candidates if path and os.path.isfile(candidate)), None)
    if found:
        with open(found, "rb") as handle:
            for chunk in iter(lambda: handle.read(HASH_CHUNK), b""):
                digest.update(chunk)
    else:
        digest.update(repr(sorted((metadata or {}).items())).encode())
    return digest.hexdigest()


def file_sha256(path):
    """SHA-256 hex digest (str) of a file's bytes: how the gallery recognizes an image enrolled twice."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def training_data_warning(metadata, model_path):
    """Returns a one-line warning (str) when the metadata says the model was trained on SynthFaces only, else ""."""
    if not ((metadata or {}).get("training_data") or {}).get("synthfaces"):
        return ""
    return (f"warning: {model_path} was trained on SynthFaces (procedural faces) only: it shows the pipeline, but on "
            "real photos its identities and mask calls are unreliable; use a model trained on real faces.")


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

    def __init__(self, model_path, gallery=None, threshold=None, detector=None, batch_size=32):
        """Args:
          model_path: a SavedModel dir, a TF Serving base dir (newest numeric version), a training workdir or a
            checkpoint prefix (see ``mtarcface_tf.export.embedder.make_embed_fn``).
          gallery: a ``Gallery`` (or a path to a saved one) for ``identify``; None starts an empty one.
          threshold: cosine similarity threshold; None = the export's recommended one or ``DEFAULT_COSINE_THRESHOLD``.
          detector: "mtcnn", "retinaface", None (``detect.choose_detector()``: RetinaFace, else MTCNN with a
            logged note), all built on first use, or a Detector instance.
          batch_size: images per network call.

        Raises:
          ModelLoadError (mtarcface_tf.model.workdir), GalleryError: the model or gallery path is not usable.
        """
        self._embed = make_embed_fn(model_path)
        self.input_size, self.metadata = self._embed.input_size, self._embed.metadata
        self.fingerprint = model_fingerprint(model_path, self.metadata)
        self.thresholds = condition_thresholds(self.metadata, threshold)
        if isinstance(gallery, (str, os.PathLike)):
            gallery = Gallery.open(gallery, fingerprint=self.fingerprint)
        self.gallery = Gallery() if gallery is None else gallery  # an empty Gallery is falsy: keep its use_svm
        self._detector = detector
        self.batch_size = batch_size

    @property
    def threshold(self):
        """The clean-probe cosine threshold (float); setting it sets one threshold for every condition."""
        return self.thresholds["clean"][0]

    @threshold.setter
    def threshold(self, value):
        self.thresholds = condition_thresholds(None, value)

    @property
    def detector(self):
        """The face detector (built on first use)."""
        if self._detector is None or isinstance(self._detector, str):
            self._detector = detect.make_detector(self._detector)
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
        embeddings = l2_normalize(np.concatenate([part[0] for part in parts]))
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
          ImageReadError: unreadable path. NoFaceError: no face detected, or none whose landmarks can be aligned
            (the message names the image); faces that cannot be aligned are skipped and noted.
        """
        source = os.fspath(image) if isinstance(image, (str, os.PathLike)) else "the image"
        image = detect.read_image_rgb(image) if isinstance(image, (str, os.PathLike)) else detect.to_rgb(image)
        height, width = image.shape[:2]
        if aligned:
            crop = image if (height, width) == (self.input_size,) * 2 else cv2.resize(
                image, (self.input_size, self.input_size), interpolation=cv2.INTER_AREA)
            return [FaceCrop(crop, np.array([0, 0, width, height], np.float32))]
        found = detect.by_size(self.detector.detect(image))
        if not found:
            raise NoFaceError(f"{source}: no face found; use a clearer photo, another --detector, or --aligned for "
                              "pre-aligned faces.")
        crops, unaligned = [], []
        for face in found:
            try:
                crops.append(FaceCrop(align.align_face(image, face.landmarks, self.input_size), face.box,
                                      score=float(face.score)))
            except align.AlignmentError as error:
                unaligned.append(str(error))
                continue
            if not all_faces:
                break
        if not crops:
            raise NoFaceError(f"{source}: {len(found)} face(s) found but none can be aligned ({unaligned[0]}); use a "
                              "clearer photo or another --detector.")
        notes = []
        if len(found) > 1 and not all_faces:
            notes.append(f"{len(found)} faces found; used the largest that aligns (all_faces for every face)")
        if unaligned:
            notes.append(f"{len(unaligned)} detected face(s) skipped: landmarks cannot be aligned")
        for crop in crops:
            crop.note = "; ".join(notes)
        if notes:
            logging.warning("%s: %s", source, "; ".join(notes))
        return crops

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
          ``{"name", "similarity"}``), ``mask`` (``mask_status`` entry or None), ``threshold`` (float: the one
          applied, by the probe's mask status), ``threshold_reason`` (str), ``svm`` (``{"name", "probability"}``
          when the gallery has an SVM, else None), ``note``.

        Raises:
          EmptyGalleryError: nobody enrolled. NoFaceError / ImageReadError: as ``faces``.
        """
        if not len(self.gallery):
            raise EmptyGalleryError("the gallery is empty; enroll people first (tools/recognize.py enroll).")
        crops = self.faces(image, aligned, all_faces)
        embeddings, mask_prob = self.embed(np.stack([crop.crop for crop in crops]))
        return self.identify_embeddings(embeddings, mask_prob, top_k, crops)

    def identify_embeddings(self, embeddings, mask_prob=None, top_k=5, crops=None):
        """Identifies a batch of embeddings (one gallery search for all of them); see ``identify``.

        Args:
          embeddings: float32 [B, D]. mask_prob: float32 [B, 2] or None. crops: list[FaceCrop] [B] or None.

        Returns:
          list [B] of ``identify``'s dicts (box [] and note "" without crops).
        """
        names, similarities = self.gallery.lookup(embeddings, top_k)
        svm = self.gallery.svm_predict(embeddings)
        masks = mask_status(mask_prob)
        results = []
        for row in range(len(embeddings)):
            best = float(similarities[row, 0])
            mask = masks[row] if masks else None
            threshold, reason = self.thresholds["masked" if mask and mask["status"] == "mask" else "clean"]
            if mask and mask["status"] == "mask":
                reason += f" (P(mask) = {mask['probability']:.2f})"
            crop = crops[row] if crops else None
            results.append({
                "box": [float(value) for value in crop.box] if crop else [],
                "identity": names[row][0] if best >= threshold else UNKNOWN,
                "similarity": best,
                "candidates": [{"name": name, "similarity": float(score)}
                               for name, score in zip(names[row], similarities[row])],
                "mask": mask,
                "threshold": threshold,
                "threshold_reason": reason,
                "svm": {"name": svm[row][0], "probability": svm[row][1]} if svm else None,
                "note": crop.note if crop else "",
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
        crops, failures, sources, hashes = [], [], [], []
        for index, image in enumerate(images):
            is_path = isinstance(image, (str, os.PathLike))
            label = os.fspath(image) if is_path else f"{name}[{index}]"
            try:
                crops.append(self.faces(image, aligned)[0])
            except (NoFaceError, detect.InvalidImageError) as error:
                failures.append((label, str(error)))
                continue
            sources.append(label if is_path else None)
            hashes.append(file_sha256(image) if is_path else None)
        if not crops:
            raise GalleryError(f"{name}: none of the {len(failures)} images gave a face; nothing enrolled.")
        embeddings, mask_prob = self.embed(np.stack([crop.crop for crop in crops]))
        masks = mask_status(mask_prob)
        result = self.gallery.add(name, embeddings, sources=sources, hashes=hashes,
                                  masked=[mask["status"] == "mask" for mask in masks] if masks else None,
                                  mask_probability=[mask["probability"] for mask in masks] if masks else None,
                                  detection_scores=[crop.score for crop in crops])
        failures += [(source, f"{source}: already enrolled (as {owner}); skipped") for source, owner
                     in result["duplicates"]]
        return result["added"], failures

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
        for person in progress_bar(people, desc="enrolling", unit="person", disable=not progress):
            folder = os.path.join(images_dir, person)
            try:
                count, failures = self.enroll(person, list_files(folder), aligned)
                if count:     # 0: every image was enrolled before (recognized by its hash)
                    summary["enrolled"][person] = count
                summary["failed"].extend(failures)
            except GalleryError as error:
                summary["failed"].append((folder, str(error)))
        return summary


def list_files(folder):
    """Returns the sorted paths (list[str]) of the non-hidden files in ``folder``; non-images among them fail
    later with a clear message and are counted, rather than being skipped silently."""
    return sorted(os.path.join(folder, name) for name in os.listdir(folder)
                  if not name.startswith(".") and os.path.isfile(os.path.join(folder, name)))

