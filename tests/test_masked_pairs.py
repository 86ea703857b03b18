"""Tests of mtarcface_tf.data.masked_pairs: variant shapes, which images are masked, labels, determinism."""
import numpy as np
import pytest

from mtarcface_tf.data import masked_pairs, masks

PAIRS = 5
SIZE = 48


@pytest.fixture(scope="module")
def pairs():
    images = np.random.default_rng(0).integers(0, 256, (2 * PAIRS, SIZE, SIZE, 3), dtype=np.uint8)
    issame = np.array([True, False, True, True, False])
    return images, issame


@pytest.fixture(scope="module")
def variants(pairs):
    return masked_pairs.masked_variants(*pairs, seed=3)


def _masked(before, after):
    """bool [N]: images with any pixel changed."""
    return np.any(before != after, axis=(1, 2, 3))


def test_shapes_and_issame(variants, pairs):
    images, issame = pairs
    assert set(variants) == set(masked_pairs.VARIANTS)
    for name in ("clean", "masked", "mixed"):
        out, same = variants[name]
        assert out.shape == images.shape and out.dtype == np.uint8
        np.testing.assert_array_equal(same, issame)
    combined, same = variants["combined"]
    assert combined.shape == (6 * PAIRS, SIZE, SIZE, 3)
    np.testing.assert_array_equal(same, np.concatenate([issame] * 3))


def test_which_images_are_masked(variants, pairs):
    images, _ = pairs
    clean, masked, mixed = (variants[name][0] for name in ("clean", "masked", "mixed"))
    np.testing.assert_array_equal(clean, images)
    assert _masked(images, masked).all()
    top = masks.first_mask_row(SIZE)
    np.testing.assert_array_equal(masked[:, :top], images[:, :top])
    np.testing.assert_array_equal(mixed[0::2], masked[0::2])
    np.testing.assert_array_equal(mixed[1::2], images[1::2])
    np.testing.assert_array_equal(variants["combined"][0], np.concatenate([clean, masked, mixed]))
    for name in masked_pairs.VARIANTS:
        labels = masked_pairs.mask_labels_for(name, PAIRS)
        reference = np.tile(images, (3, 1, 1, 1)) if name == "combined" else images
        np.testing.assert_array_equal(labels, _masked(reference, variants[name][0]).astype(np.int32))


def test_deterministic_and_seeded(variants, pairs):
    again = masked_pairs.masked_variants(*pairs, seed=3)
    np.testing.assert_array_equal(again["masked"][0], variants["masked"][0])
    other = masked_pairs.masked_variants(*pairs, seed=4)
    assert not np.array_equal(other["masked"][0], variants["masked"][0])
    # A mask depends on the image's position only, not on the length of the set.
    prefix = masked_pairs.masked_variants(pairs[0][:4], pairs[1][:2], seed=3)
    np.testing.assert_array_equal(prefix["masked"][0], variants["masked"][0][:4])


def test_resize_and_bad_input(pairs):
    images, issame = pairs
    small = masked_pairs.masked_variants(images, issame, seed=0, image_size=32)
    assert small["masked"][0].shape == (2 * PAIRS, 32, 32, 3)
    with pytest.raises(ValueError, match="2 images per pair"):
        masked_pairs.masked_variants(images[:-1], issame)
    with pytest.raises(ValueError, match="uint8"):
        masked_pairs.masked_variants(images.astype(np.float32), issame)
    with pytest.raises(ValueError, match="unknown variant"):
        masked_pairs.mask_labels_for("sideways", PAIRS)
