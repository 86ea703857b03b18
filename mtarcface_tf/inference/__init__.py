"""Inference: the recognition application: FaceRecognizer (embed, verify, identify with mask status), the gallery,
and the media commands (folders, videos, camera; annotated output and result rows)."""
from mtarcface_tf.inference.gallery import EmptyGalleryError, Gallery, GalleryError
from mtarcface_tf.inference.media import UsageError, annotate, run_command
from mtarcface_tf.inference.recognizer import FaceRecognizer, NoFaceError

__all__ = ["EmptyGalleryError", "FaceRecognizer", "Gallery", "GalleryError", "NoFaceError", "UsageError", "annotate",
           "run_command"]
