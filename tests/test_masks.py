"""Tests of mtarcface_tf.data.masks: placement, labels, probability, determinism, graph use, dtypes and sizes."""
import cv2
import numpy as np
import pytest
import tensorflow as tf

from mtarcface_tf.data import masks


def noise_faces(count, size, seed=0):
    """uint8 [count, size, size, 3] uniform noise: a painted pixel almost never equals the original."""
    return np.random.default_rng(seed).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


def changed(before, after):
    """bool [B,S,S]: pixels where any channel differs."""
    return np.any(np.asarray(before) != np.asarray(after), axis=-1)


def mouth_box(size):
    """Rows/cols around the nose tip and mouth (template 48..64 x 76..92 scaled), always under a mask."""
    scale = size / 112.0
    return slice(int(76 * scale), int(92 * scale)), slice(int(48 * scale), int(64 * scale))


def eye_box(size):
    """Rows/cols of both eyes (template 30..82 x 40..56 scaled)."""
    scale = size / 112.0
    return slice(int(40 * scale), int(56 * scale)), slice(int(30 * scale), int(82 * scale))


@pytest.mark.parametrize("size", [64, 112])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_placement_covers_nose_and_mouth_never_eyes(size, dtype):
    faces = noise_faces(16, size).astype(dtype)
    out, labels = masks.MaskAugmenter(probability=1.0, seed=3)(tf.constant(faces))
    out = out.numpy()
    assert out.dtype == dtype and out.shape == faces.shape
    assert labels.numpy().tolist() == [1] * 16
    diff = changed(faces, out)
    rows, cols = mouth_box(size)
    assert diff[:, rows, cols].mean(axis=(1, 2)).min() > 0.95
    first = masks.first_mask_row(size)
    assert not diff[:, :first].any()
    rows, cols = eye_box(size)
    assert not diff[:, rows, cols].any()
    assert out.min() >= 0 and out.max() <= 255


def test_label_zero_images_are_bit_identical():
    faces = noise_faces(64, 32)
    out, labels = masks.MaskAugmenter(probability=0.5, seed=1)(tf.constant(faces))
    out, labels = out.numpy(), labels.numpy()
    assert labels.dtype == np.int32 and set(labels.tolist()) == {0, 1}
    np.testing.assert_array_equal(out[labels == 0], faces[labels == 0])
    assert changed(faces[labels == 1], out[labels == 1]).any(axis=(1, 2)).all()


@pytest.mark.parametrize("probability", [0.0, 0.3, 1.0])
def test_probability_is_respected(probability):
    faces = np.zeros((2000, 16, 16, 3), np.uint8)
    _, labels = masks.MaskAugmenter(probability=probability, seed=5)(tf.constant(faces))
    assert abs(labels.numpy().mean() - probability) < 0.04


def test_deterministic_under_a_seed_and_varies_with_call_seed():
    faces = tf.constant(noise_faces(8, 48))
    augmenter = masks.MaskAugmenter(probability=0.5, seed=7)
    first, labels1 = augmenter(faces, seed=[3, 1])
    again, labels2 = masks.MaskAugmenter(probability=0.5, seed=7)(faces, seed=[3, 1])
    np.testing.assert_array_equal(first.numpy(), again.numpy())
    np.testing.assert_array_equal(labels1.numpy(), labels2.numpy())
    other, _ = augmenter(faces, seed=[4, 1])
    assert not np.array_equal(first.numpy(), other.numpy())
    fixed1, _ = augmenter(faces)
    fixed2, _ = augmenter(faces)
    np.testing.assert_array_equal(fixed1.numpy(), fixed2.numpy())


def test_runs_in_tf_data_map_and_tf_function():
    faces = noise_faces(12, 40)
    augmenter = masks.MaskAugmenter(probability=1.0, seed=0)
    dataset = tf.data.Dataset.from_tensor_slices(faces).batch(4, drop_remainder=True).enumerate()
    dataset = dataset.map(lambda index, images: augmenter(images, seed=tf.stack([tf.cast(index, tf.int32), 0])))
    batches = [(images.numpy(), labels.numpy()) for images, labels in dataset]
    assert len(batches) == 3 and all(images.shape == (4, 40, 40, 3) for images, _ in batches)
    assert all(labels.tolist() == [1, 1, 1, 1] for _, labels in batches)
    graph_fn = tf.function(lambda images: augmenter(images, seed=tf.constant([0, 0])))
    eager, _ = augmenter(tf.constant(faces[:4]), seed=[0, 0])
    np.testing.assert_array_equal(graph_fn(tf.constant(faces[:4]))[0].numpy(), eager.numpy())
    np.testing.assert_array_equal(batches[0][0], eager.numpy())


def test_empty_selection_and_empty_batch():
    faces = noise_faces(4, 32)
    out, labels = masks.MaskAugmenter(probability=0.0, seed=0)(tf.constant(faces))
    np.testing.assert_array_equal(out.numpy(), faces)
    assert labels.numpy().sum() == 0
    out, labels = masks.MaskAugmenter(probability=1.0, seed=0)(tf.zeros([0, 32, 32, 3], tf.uint8))
    assert out.shape == (0, 32, 32, 3) and labels.shape == (0,)


def test_mask_types_have_distinct_outlines():
    size = 112
    faces = tf.constant(noise_faces(len(masks.MASK_TYPES), size))
    draws = np.full((len(masks.MASK_TYPES), 25), 0.5, np.float32)
    draws[:, 1] = (np.arange(len(masks.MASK_TYPES)) + 0.5) / len(masks.MASK_TYPES)
    out = masks.paint_masks(faces, tf.constant(draws)).numpy()
    areas = changed(faces.numpy(), out)
    for i in range(len(areas)):
        for j in range(i + 1, len(areas)):
            assert (areas[i] != areas[j]).sum() > 100, (masks.MASK_TYPES[i], masks.MASK_TYPES[j])


def test_anchors_lie_between_template_points():
    anchors = masks.template_anchors(112)
    eyes_y, nose_y, mouth_y = 51.6, 71.7, 92.3
    assert eyes_y < anchors["eye_line"] < anchors["nose_bridge"][1] < nose_y
    assert anchors["chin"][1] > mouth_y + 5
    assert anchors["left_cheek"][0] < 38.3 and anchors["right_cheek"][0] > 73.5
    half = masks.template_anchors(56)
    np.testing.assert_allclose(half["chin"], (anchors["chin"] + 0.5) / 2 - 0.5, atol=1e-4)


def test_bad_input_raises_clear_errors():
    augmenter = masks.MaskAugmenter(probability=0.5, seed=0)
    with pytest.raises(ValueError, match="S, S, 3"):
        augmenter(tf.zeros([2, 32, 24, 3], tf.uint8))
    with pytest.raises(ValueError, match="uint8 or float32"):
        augmenter(tf.zeros([2, 32, 32, 3], tf.int32))
    with pytest.raises(ValueError, match="probability"):
        masks.MaskAugmenter(probability=1.5)


@pytest.mark.parametrize("size,degrees,scale,shift", [(64, 0.0, 1.0, (0.0, 0.0)), (112, 0.0, 1.0, (0.0, 0.0)),
                                                     (112, 25.0, 0.9, (4.0, -3.0))])
def test_coarse_distance_field_matches_exact_edges(size, degrees, scale, shift):
    # Reference: cv2.pointPolygonTest's exact Euclidean distance to each outline, moved by the similarity.
    count = 6
    draws = tf.random.stateless_uniform([count, 25], [1, 2]).numpy().copy()
    draws[:, 1] = np.array([0.1, 0.5, 0.7, 0.1, 0.5, 0.7])       # surgical, kn95, cloth: no discs
    draws = tf.constant(draws)
    moved, matrix = _rotated(masks.template_points(size), degrees, scale, np.array(shift), size)
    landmarks = tf.constant(np.repeat(moved[None], count, axis=0).astype(np.float32))
    frame = masks._image_frame(draws, size, landmarks)
    pixels = tf.range(size, dtype=tf.float32)
    field = masks._coarse_fields(tf.zeros([count, size, size, 3]), frame, pixels, pixels, size)["mask"].numpy()
    approx = (0.5 - field) * masks._softness(size) * scale         # image pixels, negative inside
    outlines = masks._mask_geometry(draws, size)["vertices"].numpy() @ matrix[:, :2].T + matrix[:, 2]
    eye_line = masks.template_anchors(size)["eye_line"]
    ys, xs = np.mgrid[0:size, 0:size]
    canonical_y = ((np.stack([xs, ys], -1) - matrix[:, 2]) @ matrix[:, :2])[..., 1] / scale ** 2
    for image, outline in enumerate(outlines):
        contour = outline.astype(np.float32).reshape(-1, 1, 2)
        exact = -np.array([[cv2.pointPolygonTest(contour, (float(x), float(y)), True) for x in range(size)]
                           for y in range(size)])
        edge = (np.abs(exact) < 2.0) & (canonical_y > eye_line + 3.0 * size / 112)
        error = np.abs(approx[image] - exact)[edge]
        assert edge.sum() > 50 and np.median(error) < 0.1, np.median(error)
        assert (error > 0.6).mean() < 0.05                        # only near corners
        assert (field[image][canonical_y <= eye_line] <= 1e-5).all()  # alpha 0 on and above the eye line


def _rotated(points, degrees, scale, shift, size):
    """Returns (points [..., 2] under the similarity about the image centre, its 2x3 matrix for cv2)."""
    matrix = cv2.getRotationMatrix2D(((size - 1) / 2, (size - 1) / 2), degrees, scale)
    matrix[:, 2] += shift
    return points @ matrix[:, :2].T + matrix[:, 2], matrix


@pytest.mark.parametrize("degrees,scale,shift", [(25.0, 0.9, (4.0, -3.0)), (-30.0, 1.1, (-5.0, 2.0))])
def test_landmark_masks_follow_a_known_similarity(degrees, scale, shift):
    # Reference: the template-placed mask warped by cv2 with the same similarity that moved the landmarks.
    size = 112
    draws = tf.random.stateless_uniform([6, 25], [4, 2])
    faces = tf.constant(noise_faces(6, size))
    template = masks.template_points(size)
    reference = masks.mask_alpha(faces, draws).numpy()
    moved, matrix = _rotated(template, degrees, scale, np.array(shift), size)
    landmarks = tf.constant(np.repeat(moved[None], 6, axis=0).astype(np.float32))
    alpha = masks.mask_alpha(faces, draws, landmarks).numpy()
    for placed, expected in zip(alpha, reference):
        warped = cv2.warpAffine(expected, matrix, (size, size), flags=cv2.INTER_LINEAR)
        inside, expected_inside = placed > 0.5, warped > 0.5
        iou = (inside & expected_inside).sum() / (inside | expected_inside).sum()
        assert iou > 0.95, iou


def test_rows_without_landmarks_fall_back_to_the_template():
    size = 64
    faces = tf.constant(noise_faces(4, size))
    draws = tf.random.stateless_uniform([4, 25], [5, 1])
    landmarks = np.full((4, 5, 2), np.nan, np.float32)
    fallback = masks.mask_alpha(faces, draws, tf.constant(landmarks)).numpy()
    template = masks.mask_alpha(faces, draws).numpy()
    # The same mask, computed over the whole image instead of the template's window: only the coarse grid's
    # alignment differs, which rounds the corners a little differently.
    for placed, expected in zip(fallback > 0.5, template > 0.5):
        assert (placed & expected).sum() / (placed | expected).sum() > 0.96


def test_masks_fit_faces_in_large_poses_where_template_masks_miss():
    # SynthFaces' landmarks are exact (the generator places nose, mouth and eyes there).
    from mtarcface_tf.data import synthetic
    pose = dict(rotation=30.0, scale=0.15, shift=8.0, yaw=30.0)
    faces, _, landmarks = synthetic.render_faces(60, 1, image_size=112, seed=11, pose=pose, with_landmarks=True)
    draws = tf.random.stateless_uniform([60, 25], [6, 0])
    right = {}
    for name, marks in (("template", None), ("landmarks", tf.constant(landmarks))):
        alpha = masks.mask_alpha(tf.constant(faces), draws, marks).numpy()
        right[name] = masks.placement_checks(alpha, landmarks).all(axis=1).mean()
    assert right["landmarks"] >= 0.95, right
    assert right["template"] <= 0.8, right


def test_painted_landmark_masks_change_only_where_alpha_is_positive():
    size = 64
    faces = noise_faces(8, size)
    template = masks.template_points(size)
    moved, _ = _rotated(template, 20.0, 1.0, np.zeros(2), size)
    landmarks = tf.constant(np.repeat(moved[None], 8, axis=0).astype(np.float32))
    draws = tf.random.stateless_uniform([8, 25], [7, 0])
    out = masks.paint_masks(tf.constant(faces), draws, landmarks).numpy()
    alpha = masks.mask_alpha(tf.constant(faces), draws, landmarks).numpy()
    diff = changed(faces, out)
    assert not diff[alpha == 0].any()
    assert diff[alpha > 0.5].mean() > 0.95


def test_yaw_shown_by_landmarks_makes_the_mask_wider_on_the_near_side():
    # A turned head: nose and mouth 6 px image-right of where the eyes put them. The near (image-left) side of
    # the face shows more cheek, so the mask reaches further left of the nose than right of it; a similarity
    # alone would only move a symmetric mask.
    size = 112
    faces = tf.constant(noise_faces(8, size))
    draws = tf.random.stateless_uniform([8, 25], [8, 0])
    turned = masks.template_points(size).copy()
    turned[2:, 0] += 6.0
    alpha = masks.mask_alpha(faces, draws, tf.constant(np.repeat(turned[None], 8, axis=0))).numpy()
    frontal = masks.mask_alpha(faces, draws).numpy()
    row = int(round(turned[3:, 1].mean()))                       # the mouth's row

    def sides(a, nose_x):
        covered = np.flatnonzero(a[row] > 0.5)
        return nose_x - covered[0], covered[-1] - nose_x

    for placed, straight in zip(alpha, frontal):
        left, right = sides(placed, turned[2, 0])
        straight_left, straight_right = sides(straight, masks.template_points(size)[2, 0])
        assert (left - right) - (straight_left - straight_right) > 3, (left, right, straight_left, straight_right)


def _flat_faces(count, size, value=128):
    return np.full((count, size, size, 3), value, np.uint8)


@pytest.mark.parametrize("pose_draw", [0.5, 0.0, 1.0])
def test_frontal_mask_spans_the_cheek_anchors(pose_draw):
    # Surgical outline (u = ±1.05 between v = 0.35 and 0.65), no jitter: at v = 0.5 the mask spans 1.05 times the
    # distance from the centre line to each cheek anchor (read off template_anchors), the left side times
    # (1 + pose) and the right side times (1 - pose), pose = (2 * draw - 1) * POSE_RANGE.
    size = 112
    draws = np.full((2, 25), 0.5, np.float32)
    draws[:, 1] = 0.1
    draws[:, 10] = pose_draw
    pose = (2 * pose_draw - 1) * masks.POSE_RANGE
    alpha = masks.mask_alpha(tf.constant(_flat_faces(2, size)), tf.constant(draws)).numpy()
    anchors = masks.template_anchors(size)
    centre = (anchors["nose_bridge"][0] + anchors["chin"][0]) / 2
    row = int(round((anchors["nose_bridge"][1] + anchors["chin"][1]) / 2))
    covered = np.flatnonzero(alpha[0, row] > 0.5)
    assert covered[0] == pytest.approx(centre - 1.05 * (centre - anchors["left_cheek"][0]) * (1 + pose), abs=1.0)
    assert covered[-1] == pytest.approx(centre + 1.05 * (anchors["right_cheek"][0] - centre) * (1 - pose), abs=1.0)


@pytest.mark.parametrize("colour", range(4))
def test_plain_masks_on_a_flat_face_have_their_palette_colour(colour):
    # On a flat face the shading is uniform (1 - 0.7 / 129 of the colour); cloth and KN95 masks carry only a thin
    # seam, so the median covered pixel is the palette colour.
    draws = np.full((2, 25), 0.5, np.float32)
    draws[:, 1] = [0.5, 0.7]                                   # kn95, cloth
    draws[:, 2] = (colour + 0.5) / len(masks.COLOURS)
    draws[:, 3] = 0.9                                          # plain
    faces = _flat_faces(2, 112)
    out = masks.paint_masks(tf.constant(faces), tf.constant(draws)).numpy()
    alpha = masks.mask_alpha(tf.constant(faces), tf.constant(draws)).numpy()
    for image, coverage in zip(out, alpha):
        median = np.median(image[coverage > 0.99], axis=0)
        np.testing.assert_allclose(median, masks.PALETTE[colour] * (1 - 0.7 / 129), atol=1.5)


@pytest.mark.parametrize("textured", [True, False])
@pytest.mark.parametrize("degrees,scale,shift", [(25.0, 0.9, (4.0, -3.0)), (-30.0, 1.1, (-5.0, 2.0))])
def test_painted_masks_follow_a_known_similarity_texture_and_details_included(degrees, scale, shift, textured):
    # Reference: the template-placed painting (masks of every type on a flat face) warped by cv2. Textures are
    # checked in bulk (their sharp edges differ after cv2's interpolation); plain masks pixel by pixel, which
    # catches a seam or pleat left in the wrong place.
    size, count = 112, len(masks.MASK_TYPES)
    draws = tf.random.stateless_uniform([count, 25], [9, 3]).numpy().copy()
    draws[:, 1] = (np.arange(count) + 0.5) / count
    draws[:, 3] = 0.1 if textured else 0.9
    faces = tf.constant(_flat_faces(count, size))
    reference = masks.paint_masks(faces, tf.constant(draws)).numpy()
    moved, matrix = _rotated(masks.template_points(size), degrees, scale, np.array(shift), size)
    landmarks = tf.constant(np.repeat(moved[None], count, axis=0).astype(np.float32))
    placed = masks.paint_masks(faces, tf.constant(draws), landmarks).numpy().astype(np.float32)
    alpha = masks.mask_alpha(faces, tf.constant(draws), landmarks).numpy()
    for image, expected, coverage in zip(placed, reference, alpha):
        warped = cv2.warpAffine(expected.astype(np.float32), matrix, (size, size), flags=cv2.INTER_LINEAR)
        inside = cv2.erode((coverage > 0.99).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        error = np.abs(image - warped)[inside]
        if textured:
            assert np.median(error) < 3.0 and np.percentile(error, 90) < 20.0, np.percentile(error, [50, 90])
        else:
            assert np.percentile(error, 99) < 25.0, np.percentile(error, 99)


@pytest.mark.parametrize("size", [64, 112])
def test_template_window_holds_the_widest_masks(size):
    # Template masks are computed in a static window; the same masks computed over the whole image (rows without
    # landmarks) must not reach further. Widest settings: surgical and gas types, full pose both ways, the
    # width jitter at its extremes.
    draws = np.full((4, 25), 0.5, np.float32)
    draws[:, 1] = [0.1, 0.9, 0.1, 0.9]
    draws[:, 10] = [0.0, 0.0, 1.0, 1.0]
    draws[:, 11] = [0.0, 1.0, 0.0, 1.0]                        # centre jitter
    draws[:, 14:16] = 1.0                                      # both widths at their largest
    faces = tf.constant(_flat_faces(4, size))
    windowed = masks.mask_alpha(faces, tf.constant(draws)).numpy() > 0.5
    whole = masks.mask_alpha(faces, tf.constant(draws), tf.constant(np.full((4, 5, 2), np.nan, np.float32)))
    whole = whole.numpy() > 0.5
    for inside, reference in zip(windowed, whole):
        # The extreme columns lie on straight or gently curved edges, where the coarse grid's alignment (which
        # differs between the two) moves nothing by more than a pixel; a window too narrow would cut them.
        inside, reference = np.flatnonzero(inside.any(axis=0)), np.flatnonzero(reference.any(axis=0))
        assert abs(inside[0] - reference[0]) <= 1 and abs(inside[-1] - reference[-1]) <= 1, (inside, reference)
