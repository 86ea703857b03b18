"""Five-point face alignment onto the ArcFace 112×112 template (insightface's ``norm_crop``).

The transform is the least-squares similarity of Umeyama (1991), numerically the same as
``skimage.transform.SimilarityTransform.estimate``, which insightface uses. Robust estimators
(``cv2.estimateAffinePartial2D`` with RANSAC or LMEDS) are deliberately not used: they move the points by up to
~3 px on real photos, so faces would be aligned differently from the training faces.
"""
import cv2
import numpy as np

TEMPLATE_SIZE = 112
# Left eye, right eye, nose tip, left mouth corner, right mouth corner ("left" = image-left), in 112×112 pixels.
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float32,
)


class AlignmentError(ValueError):
    """Landmarks that cannot define a similarity transform (wrong shape, non-finite or all at one point)."""


def rescale_points(points, ratio):
    """Moves pixel positions to an image resized by ``ratio`` (new side / old side): the one pixel convention.

    Pixel centres sit at integers, so pixel ``i`` covers ``[i - 0.5, i + 0.5]`` and the image's edges (``-0.5`` and
    ``side - 0.5``) land on the new image's edges: ``(points + 0.5) * ratio - 0.5``, the mapping ``cv2.resize``
    uses. Landmarks in records, the ArcFace template at any size and the mask anchors all follow it.

    Args:
      points: (x, y) positions in pixels, any shape ``[..., 2]``: numpy array, TF tensor or float.
      ratio: float > 0.

    Returns:
      the rescaled positions, same type and dtype as ``points``.
    """
    return (points + 0.5) * ratio - 0.5


def to_fractions(points, side):
    """Returns pixel positions as fractions of the image ``side`` (``(points + 0.5) / side``: 0 and 1 are the
    edges), which hold at any resize; the inverse of ``from_fractions``. Same type as ``points``."""
    return (points + 0.5) / side


def from_fractions(fractions, side):
    """Returns fractions of the side (``to_fractions``) as pixel positions in an image of ``side`` pixels."""
    return fractions * side - 0.5


def template_for(image_size=TEMPLATE_SIZE):
    """Returns the ArcFace template for a square crop of ``image_size`` pixels.

    Args:
      image_size: side of the aligned crop in pixels (int > 0); 112 gives ``ARCFACE_TEMPLATE`` itself.

    Returns:
      float32 [5, 2] (x, y) pixel positions: the template rescaled by ``image_size / 112`` (``rescale_points``: the
      same pixel convention as the landmarks and the mask template).
    """
    if image_size <= 0:
        raise AlignmentError(f"image_size must be positive, got {image_size}.")
    return rescale_points(ARCFACE_TEMPLATE.astype(np.float64), image_size / TEMPLATE_SIZE).astype(np.float32)


def _as_points(points, name):
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2 or points.shape[0] < 2:
        raise AlignmentError(f"{name} must be an [N, 2] array of (x, y) points with N >= 2, got shape {points.shape}.")
    if not np.all(np.isfinite(points)):
        raise AlignmentError(f"{name} contains NaN or infinite coordinates.")
    return points


def estimate_similarity(src, dst):
    """Least-squares similarity transform (rotation, uniform scale, translation) mapping ``src`` onto ``dst``.

    Umeyama's closed form, equal to ``skimage.transform.SimilarityTransform.estimate(src, dst)``.

    Args:
      src: [N, 2] source (x, y) points (e.g. detected landmarks), any float dtype.
      dst: [N, 2] destination points (e.g. ``template_for(112)``), same N.

    Returns:
      float64 [2, 3] matrix ``M`` with ``dst ≈ M @ [x, y, 1]``, ready for ``cv2.warpAffine``.

    Raises:
      AlignmentError: shapes differ or are not [N, 2], coordinates are not finite, or ``src`` collapses to one point.
    """
    src = _as_points(src, "src")
    dst = _as_points(dst, "dst")
    if src.shape != dst.shape:
        raise AlignmentError(f"src and dst must have the same shape, got {src.shape} and {dst.shape}.")
    num, dim = src.shape
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_demean, dst_demean = src - src_mean, dst - dst_mean

    covariance = dst_demean.T @ src_demean / num
    signs = np.ones(dim)
    if np.linalg.det(covariance) < 0:
        signs[-1] = -1
    u, singular, vt = np.linalg.svd(covariance)
    # The same rank test as numpy's matrix_rank (and scikit-image).
    tolerance = singular.max() * dim * np.finfo(float).eps
    rank = np.count_nonzero(singular > tolerance)
    if rank == 0:
        raise AlignmentError("landmarks are all at one point (or dst is); cannot estimate a similarity transform.")
    rotation_signs = signs.copy()
    if rank == dim - 1:
        # Collinear points: the reflection is decided by U and V, not by det(covariance) (Umeyama, Eq. 43).
        rotation_signs[-1] = 1 if np.linalg.det(u) * np.linalg.det(vt) > 0 else -1
    rotation = u @ np.diag(rotation_signs) @ vt

    scale = 1.0 / src_demean.var(axis=0).sum() * (singular @ signs)
    matrix = np.empty((dim, dim + 1))
    matrix[:, :dim] = scale * rotation
    matrix[:, dim] = dst_mean - scale * (rotation @ src_mean)
    return matrix


def align_face(image_rgb, landmarks, image_size=TEMPLATE_SIZE):
    """Warps a face so that its five landmarks land on the ArcFace template.

    Args:
      image_rgb: uint8 [H, W, 3] RGB image.
      landmarks: [5, 2] (x, y) pixel positions in ``image_rgb``, template order (left eye, right eye, nose,
        left mouth corner, right mouth corner; "left" = image-left).
      image_size: side of the output crop in pixels (the template is scaled by ``image_size / 112``).

    Returns:
      uint8 [image_size, image_size, 3] aligned RGB crop (bilinear, black outside the image).

    Raises:
      AlignmentError: ``landmarks`` is not [5, 2] or is degenerate; ``image_rgb`` is not [H, W, 3].
    """
    return align_face_and_landmarks(image_rgb, landmarks, image_size)[0]


def align_face_and_landmarks(image_rgb, landmarks, image_size=TEMPLATE_SIZE):
    """``align_face``, also returning the landmarks mapped through the same warp.

    Returns ``(crop uint8 [S, S, 3], landmarks float32 [5, 2])``: the landmarks in pixels of the crop (near the
    template, off it by what a similarity cannot absorb, e.g. a turned head). Raises as ``align_face``.
    """
    image_rgb = np.asarray(image_rgb)
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        raise AlignmentError(f"image_rgb must be [H, W, 3] RGB, got shape {image_rgb.shape}.")
    landmarks = np.asarray(landmarks)
    if landmarks.shape != ARCFACE_TEMPLATE.shape:
        raise AlignmentError(f"landmarks must be [5, 2] (x, y) points, got shape {landmarks.shape}.")
    matrix = estimate_similarity(landmarks, template_for(image_size))
    crop = cv2.warpAffine(image_rgb, matrix, (image_size, image_size), flags=cv2.INTER_LINEAR, borderValue=0.0)
    return crop, (landmarks @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32)
