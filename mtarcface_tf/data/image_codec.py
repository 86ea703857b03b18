"""Image encoding shared by the writers of records (cv2 and numpy only: safe in TensorFlow-free workers)."""
import cv2
import numpy as np


def encode_jpeg(image_rgb, quality):
    """Returns JPEG bytes of a uint8 [H, W, 3] RGB image at ``quality`` (1..100); raises ValueError if cv2 cannot."""
    ok, encoded = cv2.imencode(".jpg", np.ascontiguousarray(image_rgb[..., ::-1]),
                               [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"cv2 could not encode a {np.shape(image_rgb)} image as JPEG")
    return encoded.tobytes()
