"""Reading, decoding and encoding images: the one place that turns files and bytes into RGB arrays and back.

The ground floor (cv2 and numpy only, no TensorFlow): used by the detectors, the record writers in TensorFlow-free
worker processes, the verification ``.bin`` files and the IJB reader. OpenCV works in BGR; everything outside this
module sees uint8 RGB.
"""
import os

import cv2
import numpy as np


class InvalidImageError(ValueError):
    """An image array a detector cannot use (wrong rank, channel count, dtype or an empty side)."""


class ImageReadError(InvalidImageError):
    """A file that is missing or cannot be decoded as an image."""


def to_rgb(image):
    """Converts a grayscale, RGB or RGBA uint8 array to RGB.

    Args:
      image: uint8 [H, W], [H, W, 1], [H, W, 3] (RGB) or [H, W, 4] (RGBA; alpha dropped).

    Returns:
      uint8 [H, W, 3] RGB (C-contiguous).

    Raises:
      InvalidImageError: any other rank, channel count or dtype, or an empty side.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise InvalidImageError(f"image must be uint8 (0..255), got dtype {image.dtype}; convert it first.")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise InvalidImageError(f"image must be [H, W], [H, W, 1], [H, W, 3] or [H, W, 4], got shape {image.shape}.")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InvalidImageError(f"image has an empty side: shape {image.shape}.")
    return np.ascontiguousarray(image[:, :, :3])


def read_image_rgb(path):
    """Reads an image file as RGB.

    Args:
      path: image file path (anything OpenCV decodes: JPEG, PNG, BMP, ...; 8- or 16-bit; gray, BGR or BGRA).

    Returns:
      uint8 [H, W, 3] RGB.

    Raises:
      ImageReadError: the file is missing or is not a decodable image.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ImageReadError(f"{path}: no such file; check the path.")
    image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise ImageReadError(f"{path}: cannot be decoded as an image; use a JPEG, PNG or BMP file.")
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    if image.dtype != np.uint8:
        raise ImageReadError(f"{path}: unsupported pixel type {image.dtype}; save it as an 8-bit JPEG or PNG.")
    if image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    elif image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return to_rgb(image)


def decode_image_rgb(data):
    """Decodes encoded image bytes (JPEG, PNG, BMP, ...) as colour.

    Args:
      data: bytes (may be empty).

    Returns:
      uint8 [H, W, 3] RGB (C-contiguous), or None when ``data`` is empty or not a decodable image.
    """
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    return None if image is None else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)   # 4x faster than a reversed copy


def encode_image(image_rgb, ext, quality=None):
    """Returns the bytes of a uint8 [H, W, 3] RGB image encoded as ``ext`` (".jpg", ".png", ...).

    ``quality`` (1..100) sets the JPEG quality; None keeps OpenCV's default. Raises ValueError if cv2 cannot encode.
    """
    params = [] if quality is None else [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    ok, encoded = cv2.imencode(ext, np.ascontiguousarray(np.asarray(image_rgb)[..., ::-1]), params)
    if not ok:
        raise ValueError(f"cv2 could not encode a {np.shape(image_rgb)} image as {ext}")
    return encoded.tobytes()


def encode_jpeg(image_rgb, quality):
    """Returns JPEG bytes of a uint8 [H, W, 3] RGB image at ``quality`` (1..100); raises ValueError if cv2 cannot."""
    return encode_image(image_rgb, ".jpg", quality)
