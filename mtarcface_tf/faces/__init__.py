"""Face geometry, below data/ and inference/: detection (MTCNN, RetinaFace) and five-point alignment onto the
ArcFace template (the template's one home is ``align.ARCFACE_TEMPLATE``)."""
from mtarcface_tf.faces.align import ARCFACE_TEMPLATE, AlignmentError, align_face, estimate_similarity, template_for
from mtarcface_tf.faces.detect import (Detector, DetectorUnavailableError, Face, ImageReadError, InvalidImageError,
                                       MTCNNDetector, RetinaFaceDetector, largest_face, make_detector, read_image_rgb)

__all__ = ["ARCFACE_TEMPLATE", "AlignmentError", "Detector", "DetectorUnavailableError", "Face", "ImageReadError",
           "InvalidImageError", "MTCNNDetector", "RetinaFaceDetector", "align_face", "estimate_similarity",
           "largest_face", "make_detector", "read_image_rgb", "template_for"]
