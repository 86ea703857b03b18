"""mtarcface_tf.images: bytes and files <-> uint8 RGB, checked against Pillow (an independent codec)."""
import io

import numpy as np
from PIL import Image

from mtarcface_tf import images


def _rgb(seed=0, shape=(6, 5, 3)):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_encode_png_is_rgb_as_pillow_reads_it():
    rgb = _rgb()
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(images.encode_image(rgb, ".png")))), rgb)


def test_decode_reads_rgb_as_pillow_wrote_it():
    rgb = _rgb(1)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    np.testing.assert_array_equal(images.decode_image_rgb(buffer.getvalue()), rgb)


def test_decode_gives_none_for_empty_or_broken_bytes():
    assert images.decode_image_rgb(b"") is None
    assert images.decode_image_rgb(b"not an image") is None


def test_jpeg_quality_is_applied_and_round_trips_closely():
    rgb = np.full((16, 16, 3), (200, 40, 10), np.uint8)
    low, high = images.encode_jpeg(rgb, 10), images.encode_jpeg(rgb, 95)
    assert len(low) < len(high)
    decoded = np.asarray(Image.open(io.BytesIO(high)).convert("RGB")).astype(int)
    assert np.abs(decoded - rgb).max() <= 3
