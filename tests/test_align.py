"""Tests of mtarcface_tf.faces.align: template, Umeyama similarity (== scikit-image) and the warp."""
import cv2
import numpy as np
import pytest

from mtarcface_tf.faces import align

transform = pytest.importorskip("skimage.transform")


def skimage_similarity(src, dst):
    """scikit-image's estimate (what insightface's norm_crop uses), as a [2, 3] matrix."""
    if hasattr(transform.SimilarityTransform, "from_estimate"):
        tform = transform.SimilarityTransform.from_estimate(src, dst)
    else:
        tform = transform.SimilarityTransform()
        tform.estimate(src, dst)
    return tform.params[:2]


def similarity_matrix(angle_degrees, scale, shift):
    angle = np.deg2rad(angle_degrees)
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return np.hstack([rotation, np.asarray(shift, dtype=np.float64)[:, None]])


def apply(matrix, points):
    return points @ matrix[:, :2].T + matrix[:, 2]


def test_template_values_and_scaling():
    assert align.ARCFACE_TEMPLATE.dtype == np.float32
    assert align.ARCFACE_TEMPLATE.shape == (5, 2)
    np.testing.assert_allclose(align.ARCFACE_TEMPLATE[0], [38.2946, 51.6963], atol=1e-4)
    np.testing.assert_allclose(align.ARCFACE_TEMPLATE[4], [70.7299, 92.2041], atol=1e-4)
    np.testing.assert_allclose(align.template_for(112), align.ARCFACE_TEMPLATE)
    # Pixel centres at integers: doubling the side maps x to 2x + 0.5 (cv2.resize's convention).
    np.testing.assert_allclose(align.template_for(224), 2 * align.ARCFACE_TEMPLATE + 0.5, rtol=1e-6)
    with pytest.raises(align.AlignmentError):
        align.template_for(0)


def test_template_onto_itself_is_identity():
    matrix = align.estimate_similarity(align.ARCFACE_TEMPLATE, align.ARCFACE_TEMPLATE)
    np.testing.assert_allclose(matrix, [[1, 0, 0], [0, 1, 0]], atol=1e-4)


def test_recovers_a_known_similarity():
    known = similarity_matrix(-23.0, 2.7, [150.0, 40.0])
    src = apply(known, align.ARCFACE_TEMPLATE.astype(np.float64))
    matrix = align.estimate_similarity(src, align.ARCFACE_TEMPLATE)
    np.testing.assert_allclose(apply(matrix, src), align.ARCFACE_TEMPLATE, atol=1e-4)


@pytest.mark.parametrize("seed", range(6))
def test_equals_skimage_on_noisy_points(seed):
    rng = np.random.default_rng(seed)
    known = similarity_matrix(rng.uniform(-40, 40), rng.uniform(0.3, 4.0), rng.uniform(-200, 400, size=2))
    src = apply(known, align.ARCFACE_TEMPLATE.astype(np.float64)) + rng.normal(0, 3.0, size=(5, 2))
    if seed % 2:
        src[:, 0] = -src[:, 0]  # mirrored landmarks: the least-squares fit must still be a proper rotation
    template = align.ARCFACE_TEMPLATE.astype(np.float64)
    np.testing.assert_allclose(align.estimate_similarity(src, template), skimage_similarity(src, template), rtol=1e-12)
    # With the float32 template (as insightface passes it) scikit-image averages in float32: equal to ~1e-7.
    np.testing.assert_allclose(
        align.estimate_similarity(src, align.ARCFACE_TEMPLATE), skimage_similarity(src, align.ARCFACE_TEMPLATE),
        rtol=1e-6)


def test_equals_skimage_on_collinear_points():
    src = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0], [5.0, 5.0]])
    np.testing.assert_allclose(
        align.estimate_similarity(src, align.ARCFACE_TEMPLATE), skimage_similarity(src, align.ARCFACE_TEMPLATE),
        atol=1e-9)


@pytest.mark.parametrize(
    "src",
    [np.zeros((5, 2)), np.ones((5, 3)), np.full((5, 2), np.nan), np.ones((4, 2))],
    ids=["one-point", "wrong-width", "nan", "count-mismatch"],
)
def test_bad_landmarks_raise_alignment_error(src):
    with pytest.raises(align.AlignmentError):
        align.estimate_similarity(src, align.ARCFACE_TEMPLATE)


def render_blobs(points, shape, sigma=2.0):
    """uint8 grayscale-as-RGB image with a Gaussian blob at each (x, y) point."""
    ys, xs = np.mgrid[: shape[0], : shape[1]]
    image = np.zeros(shape, dtype=np.float64)
    for x, y in points:
        image += np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2))
    image = np.clip(255 * image, 0, 255).astype(np.uint8)
    return np.repeat(image[:, :, None], 3, axis=2)


def blob_centre(image, point, radius=6):
    x0, y0 = int(round(point[0])), int(round(point[1]))
    window = image[y0 - radius : y0 + radius + 1, x0 - radius : x0 + radius + 1, 0].astype(np.float64)
    ys, xs = np.mgrid[y0 - radius : y0 + radius + 1, x0 - radius : x0 + radius + 1]
    return np.array([(window * xs).sum(), (window * ys).sum()]) / window.sum()


@pytest.mark.parametrize("image_size", [112, 128])
def test_warp_brings_a_transformed_face_back_onto_the_template(image_size):
    # A "face" whose landmarks are the template rotated by 17°, scaled by 2.2 and shifted.
    known = similarity_matrix(17.0, 2.2, [90.0, 30.0])
    landmarks = apply(known, align.ARCFACE_TEMPLATE.astype(np.float64))
    image = render_blobs(landmarks, (360, 400), sigma=2.0 * 2.2)
    aligned = align.align_face(image, landmarks.astype(np.float32), image_size=image_size)
    assert aligned.shape == (image_size, image_size, 3) and aligned.dtype == np.uint8
    for target in align.template_for(image_size):
        assert np.linalg.norm(blob_centre(aligned, target) - target) < 1.0


def test_rescale_points_follows_the_pixel_centre_convention():
    # The image's edges -0.5 and side - 0.5 stay the edges; a centre pixel of an odd side stays the centre.
    np.testing.assert_allclose(align.rescale_points(np.array([-0.5, 99.5, 49.5]), 0.25), [-0.5, 24.5, 12.0])
    points = np.array([[3.0, 7.5]])
    np.testing.assert_allclose(align.to_fractions(points, 10), [[0.35, 0.8]])
    np.testing.assert_allclose(align.from_fractions(align.to_fractions(points, 10), 40),
                               align.rescale_points(points, 4.0))


@pytest.mark.parametrize("image_size", [96, 224])
def test_alignment_and_mask_templates_agree_at_any_size(image_size):
    from mtarcface_tf.data import masks
    known = similarity_matrix(17.0, 2.2, [90.0, 30.0])
    landmarks = apply(known, align.ARCFACE_TEMPLATE.astype(np.float64))
    for size in (112, image_size):
        _, aligned = align.align_face_and_landmarks(np.zeros((360, 400, 3), np.uint8), landmarks, size)
        np.testing.assert_allclose(aligned, masks.template_points(size), atol=1e-3)
    # Aligning at another size equals aligning at 112 and resizing (cv2.resize: an independent convention).
    image = render_blobs(landmarks, (360, 400), sigma=2.0 * 2.2)
    resized = cv2.resize(align.align_face(image, landmarks, 112), (image_size, image_size),
                         interpolation=cv2.INTER_LINEAR)
    direct = align.align_face(image, landmarks, image_size)
    for target in align.template_for(image_size)[:3]:
        assert np.linalg.norm(blob_centre(direct, target) - blob_centre(resized, target)) < 0.1


def test_align_face_rejects_wrong_shapes():
    image = np.zeros((50, 50, 3), np.uint8)
    with pytest.raises(align.AlignmentError, match="landmarks"):
        align.align_face(image, np.zeros((4, 2)))
    with pytest.raises(align.AlignmentError, match="image_rgb"):
        align.align_face(np.zeros((50, 50), np.uint8), align.ARCFACE_TEMPLATE)
