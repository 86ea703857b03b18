"""insightface verification ``.bin`` files (LFW, CFP-FP, AgeDB-30, ...): a pickle of ``(bins, issame_list)``.

``bins`` holds 2N encoded JPEG/PNG images (``bytes``, or uint8 numpy arrays when the file was made from
``cv2.imencode`` output), ``issame_list`` N booleans: pair i is images 2i and 2i+1. Files pickled under Python 2
are read with ``encoding='bytes'``, as insightface does. The unpickler accepts only the few classes such a file
holds, so a malicious pickle raises UnsafeFileError before any object is built and runs no code.
A ``.bin`` may have its images' five landmarks beside it (``NAME.bin.landmarks.npy``, see ``save_landmarks``):
masked variants then fit each mask to its face.
"""
import io
import logging
import os
import pickle

import cv2
import numpy as np

from mtarcface_tf.atomic import atomic_open
from mtarcface_tf.faces.align import from_fractions, to_fractions
from mtarcface_tf.images import decode_image_rgb, encode_image

DEFAULT_IMAGE_SIZE = 112
_PICKLE_PROTOCOL = 4

# (module, name) pairs a verification .bin may reference. Python 2 names (__builtin__, copy_reg) are mapped to
# Python 3 ones by pickle itself before find_class is called.
_ALLOWED = {
    ("builtins", "list"), ("builtins", "tuple"), ("builtins", "bytes"), ("builtins", "bytearray"),
    ("builtins", "bool"), ("builtins", "int"),
    ("_codecs", "encode"),  # how protocol-2 pickles store bytes; it only encodes a str
    ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy", "bool_"),
}
_NUMPY_RECONSTRUCT = {"_reconstruct", "scalar"}
_NUMPY_MULTIARRAY = ("numpy.core.multiarray", "numpy._core.multiarray")

log = logging.getLogger(__name__)


class UnsafeFileError(Exception):
    """A pickle references something a verification ``.bin`` never holds (it may try to run code)."""


class BinFormatError(ValueError):
    """A file is not a verification ``.bin`` or its content is inconsistent (the message names the file)."""


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the builtins and numpy array machinery a verification ``.bin`` uses."""

    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        if module in _NUMPY_MULTIARRAY and name in _NUMPY_RECONSTRUCT:
            from numpy._core import multiarray  # numpy >= 2; older pickles name numpy.core.multiarray
            return getattr(multiarray, name)
        raise UnsafeFileError(f"{module}.{name}")


def _unpickle(path):
    """Returns the object pickled in ``path`` through the restricted unpickler."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        return _RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except UnsafeFileError as err:
        raise UnsafeFileError(f"{path}: refused to unpickle, it references {err} which a verification .bin never "
                              f"holds (the file may be malicious; get it from a trusted source)") from None
    except Exception as err:  # pickle raises many types on garbage input
        raise BinFormatError(f"{path}: not a verification .bin (pickle of (bins, issame_list)): "
                             f"{type(err).__name__}: {err}") from None


def read_bin_raw(path):
    """Returns ``(bins, issame)`` of the ``.bin`` at ``path``: a list of 2N encoded images (bytes), bool [N].

    Raises FileNotFoundError, UnsafeFileError, or BinFormatError (a ValueError) naming ``path``.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: verification .bin not found")
    obj = _unpickle(path)
    if not (isinstance(obj, (tuple, list)) and len(obj) == 2):
        raise BinFormatError(f"{path}: expected a pickled pair (bins, issame_list), got {type(obj).__name__}")
    bins, issame = obj
    if not all(isinstance(b, (bytes, bytearray, np.ndarray)) for b in bins):
        raise BinFormatError(f"{path}: bins must be encoded images (bytes or uint8 arrays)")
    bins = [np.asarray(b, np.uint8).tobytes() if isinstance(b, np.ndarray) else bytes(b) for b in bins]
    issame = np.asarray(list(issame), dtype=bool)
    if len(bins) % 2:
        raise BinFormatError(f"{path}: holds an odd number of images ({len(bins)}); pairs need 2 per entry")
    if len(bins) != 2 * len(issame):
        raise BinFormatError(f"{path}: {len(bins)} images but {len(issame)} issame entries (expected "
                             f"{len(bins) // 2})")
    return bins, issame


def load_bin(path, image_size=None):
    """Loads an insightface verification ``.bin``.

    Args:
      path: the ``.bin`` file.
      image_size: side of the returned square images; None means 112. Images of another size are resized
        (bilinear, as insightface does) with one warning naming the file.

    Returns:
      ``(images, issame)``: uint8 [2N, S, S, 3] RGB and bool [N].
    Raises FileNotFoundError, UnsafeFileError, or BinFormatError (a ValueError) naming ``path``.
    """
    size = image_size or DEFAULT_IMAGE_SIZE
    bins, issame = read_bin_raw(path)
    images = np.empty((len(bins), size, size, 3), np.uint8)
    resized = 0
    for i, encoded in enumerate(bins):
        image = decode_image_rgb(encoded)
        if image is None:
            raise BinFormatError(f"{path}: image {i} cannot be decoded (not a JPEG/PNG); the file is corrupt")
        if image.shape[:2] != (size, size):
            image = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
            resized += 1
        images[i] = image
    if resized:
        log.warning("%s: resized %d of %d images to %dx%d", path, resized, len(bins), size, size)
    return images, issame


def save_bin(path, images, issame, ext=".png"):
    """Writes a verification ``.bin`` insightface can read: protocol-4 pickle of ``(list of bytes, list of bool)``.

    Args:
      path: output file; written under a temporary name and renamed when complete.
      images: uint8 [2N, H, W, 3] RGB.
      issame: bool [N]; pair i is images 2i and 2i+1.
      ext: ".png" (lossless) or ".jpg".
    """
    images = np.asarray(images)
    issame = [bool(x) for x in np.asarray(issame).ravel()]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be uint8 [2N, H, W, 3], got {images.dtype} {images.shape}")
    if len(images) != 2 * len(issame):
        raise ValueError(f"{len(images)} images need {len(images) // 2} issame entries, got {len(issame)}")
    if ext not in (".png", ".jpg"):
        raise ValueError(f"ext must be '.png' or '.jpg', got {ext!r}")
    bins = [encode_image(image, ext) for image in images]
    with atomic_open(path, "wb") as f:
        pickle.dump((bins, issame), f, protocol=_PICKLE_PROTOCOL)


LANDMARKS_SUFFIX = ".landmarks.npy"    # beside a .bin: its images' landmarks as fractions of the side


def landmarks_path(bin_path):
    """Returns the path of the landmarks file that goes with the verification ``.bin`` at ``bin_path``."""
    return bin_path + LANDMARKS_SUFFIX


def save_landmarks(bin_path, landmarks, image_size):
    """Writes the landmarks [2P, 5, 2] (pixels of the .bin's ``image_size`` images) beside ``bin_path`` as
    fractions of the side (so they hold at any resize), through a temporary name."""
    path = landmarks_path(bin_path)
    with atomic_open(path, "wb") as f:
        np.save(f, to_fractions(np.asarray(landmarks, np.float64), image_size).astype(np.float32))


def load_landmarks(bin_path, count, image_size):
    """Returns the float32 [count, 5, 2] landmarks stored beside ``bin_path`` in pixels of ``image_size`` images,
    or None when there are none (or not for ``count`` images)."""
    path = landmarks_path(bin_path)
    if not os.path.isfile(path):
        return None
    fractions = np.load(path, allow_pickle=False)
    if fractions.shape != (count, 5, 2):
        return None
    return from_fractions(fractions, image_size).astype(np.float32)
