"""mtarcface_tf.images: bytes and files <-> uint8 RGB, checked against Pillow (an independent codec)."""
import io

import cv2
import numpy as np
import pytest
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


def test_read_image_rgb_handles_gray_bgra_and_16_bit(tmp_path):
    rgb = np.zeros((8, 10, 3), np.uint8)
    rgb[..., 0] = 200  # red
    rgb[..., 2] = 30
    cv2.imwrite(str(tmp_path / "color.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    np.testing.assert_array_equal(images.read_image_rgb(tmp_path / "color.png"), rgb)

    bgra = np.dstack([cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), np.full((8, 10), 7, np.uint8)])
    cv2.imwrite(str(tmp_path / "alpha.png"), bgra)
    np.testing.assert_array_equal(images.read_image_rgb(tmp_path / "alpha.png"), rgb)

    cv2.imwrite(str(tmp_path / "gray.png"), np.full((8, 10), 99, np.uint8))
    gray = images.read_image_rgb(tmp_path / "gray.png")
    assert gray.shape == (8, 10, 3) and gray.dtype == np.uint8 and np.all(gray == 99)

    cv2.imwrite(str(tmp_path / "deep.png"), np.full((8, 10), 256 * 150, np.uint16))
    assert np.all(images.read_image_rgb(tmp_path / "deep.png") == 150)


def test_unreadable_and_missing_files_raise_image_read_error(tmp_path):
    bad = tmp_path / "not_an_image.jpg"
    bad.write_bytes(b"this is not a JPEG")
    with pytest.raises(images.ImageReadError, match="not_an_image.jpg"):
        images.read_image_rgb(bad)
    with pytest.raises(images.ImageReadError, match="missing.png"):
        images.read_image_rgb(tmp_path / "missing.png")


@pytest.mark.parametrize("image, match", [
    (np.zeros((4, 4, 3), np.float32), "uint8"),
    (np.zeros((4, 4, 2), np.uint8), "shape"),
    (np.zeros((4,), np.uint8), "shape"),
    (np.zeros((0, 4, 3), np.uint8), "empty"),
])
def test_to_rgb_rejects_what_a_detector_cannot_use(image, match):
    with pytest.raises(images.InvalidImageError, match=match):
        images.to_rgb(image)


def test_to_rgb_spreads_gray_and_drops_alpha():
    gray = np.arange(6, dtype=np.uint8).reshape(2, 3)
    np.testing.assert_array_equal(images.to_rgb(gray), np.stack([gray] * 3, axis=-1))
    np.testing.assert_array_equal(images.to_rgb(gray[..., None]), np.stack([gray] * 3, axis=-1))
    rgba = np.random.default_rng(2).integers(0, 256, (2, 3, 4), dtype=np.uint8)
    np.testing.assert_array_equal(images.to_rgb(rgba), rgba[..., :3])
