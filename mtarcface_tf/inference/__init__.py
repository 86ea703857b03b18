"""Inference: face detection (MTCNN, RetinaFace), 5-point alignment, recognition against a gallery."""
from mtarcface_tf._lazy import lazy_exports

_EXPORTS = {
    "Face": "detect",
    "Detector": "detect",
    "MTCNNDetector": "detect",
    "RetinaFaceDetector": "detect",
    "make_detector": "detect",
    "read_image_rgb": "detect",
    "ImageReadError": "detect",
    "DetectorUnavailableError": "detect",
    "ARCFACE_TEMPLATE": "align",
    "align_face": "align",
    "estimate_similarity": "align",
    "FaceRecognizer": "recognizer",
    "NoFaceError": "recognizer",
    "ModelLoadError": "recognizer",
    "Gallery": "gallery",
    "GalleryError": "gallery",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
