"""Tests of SynthFaces: determinism, split independence, landmarks, identity in both face halves, the data set."""
import os

import numpy as np
import pytest

from mtarcface_tf.data import synthetic
from mtarcface_tf.faces.align import ARCFACE_TEMPLATE as TEMPLATE


def _face(seed, identity, image, size=64):
    params = synthetic.identity_params(seed, identity)
    return synthetic.render_face(params, synthetic.image_rng(seed, identity, image), size)


def test_same_seed_same_bytes_and_other_seed_differs():
    image, landmarks = _face(7, 3, 2)
    again, landmarks_again = _face(7, 3, 2)
    assert image.dtype == np.uint8 and image.shape == (64, 64, 3)
    assert image.tobytes() == again.tobytes()
    np.testing.assert_array_equal(landmarks, landmarks_again)
    assert image.tobytes() != _face(8, 3, 2)[0].tobytes()
    assert image.tobytes() != _face(7, 3, 1)[0].tobytes()
    assert synthetic.identity_params(7, 3)["face_w_jaw"] != synthetic.identity_params(8, 3)["face_w_jaw"]


def test_render_faces_is_independent_of_the_split():
    images, labels = synthetic.render_faces(7, 3, image_size=48, seed=5)
    alone, alone_labels = synthetic.render_faces(1, 3, image_size=48, seed=5, first_identity=5)
    assert images.shape == (21, 48, 48, 3) and labels.dtype == np.int64
    np.testing.assert_array_equal(labels, np.repeat(np.arange(7), 3))
    np.testing.assert_array_equal(images[labels == 5], alone)
    np.testing.assert_array_equal(alone_labels, [0, 0, 0])


@pytest.mark.parametrize("size", [112, 64])
def test_landmarks_near_the_template_and_inside_a_similarity(size):
    ratio = size / 112
    template = (TEMPLATE + 0.5) * ratio - 0.5
    for identity in range(6):
        _, landmarks = _face(1, identity, identity, size)
        assert landmarks.shape == (5, 2) and landmarks.dtype == np.float32
        assert np.abs(landmarks - template).max() < 11 * ratio
        # the pose is a similarity: after the best similarity back onto the template, only identity/expression
        # offsets (a few pixels) remain
        x, y = landmarks[:, 0], landmarks[:, 1]
        one, zero = np.ones(5), np.zeros(5)
        design = np.concatenate([np.stack([x, -y, one, zero], 1), np.stack([y, x, zero, one], 1)])
        (a, b, tx, ty), *_ = np.linalg.lstsq(design, np.concatenate([template[:, 0], template[:, 1]]), rcond=None)
        aligned = np.stack([a * x - b * y + tx, b * x + a * y + ty], 1)
        assert np.abs(aligned - template).max() < 5 * ratio


def _mean_distances(features, labels):
    d = np.linalg.norm(features[:, None] - features[None], axis=-1)
    same = labels[:, None] == labels[None]
    off_diagonal = ~np.eye(len(labels), dtype=bool)
    return d[same & off_diagonal].mean(), d[~same].mean()


def test_both_face_halves_carry_identity():
    images, labels = synthetic.render_faces(10, 5, image_size=64, seed=2)
    faces = images[:, :, 14:50].astype(np.float32)  # face columns, not the background
    for rows in (slice(4, 34), slice(38, 60)):       # upper face (to below the eyes), lower face (nose to chin)
        half = faces[:, rows]
        feats = half.reshape(len(half), -1)
        feats = feats - feats.mean(axis=1, keepdims=True)  # brightness changes are not identity
        same, different = _mean_distances(feats, labels)
        assert same < 0.9 * different, (rows, same, different)


def test_generate_dataset_writes_readable_records_and_bin_then_reuses_them(tmp_path):
    import tensorflow as tf
    from mtarcface_tf.data import bin_pairs, records
    out = str(tmp_path / "synth")
    result = synthetic.generate_dataset(out, identities=6, images_per_identity=4, eval_identities=5, eval_pairs=20,
                                        image_size=48, seed=3, num_shards=2, workers=1, progress=False)
    assert not result["cached"]
    shards = records.list_shards(result["train"])
    assert len(shards) == 2 and records.read_manifest(result["manifest"])["images"] == 24
    labels = []
    for serialized in tf.data.TFRecordDataset(shards):
        encoded, label = records.parse_example(serialized)
        assert tf.io.decode_jpeg(encoded).shape == (48, 48, 3)
        labels.append(int(label))
    assert sorted(labels) == sorted(list(range(6)) * 4)
    images, issame = bin_pairs.load_bin(result["bins"]["synth"], image_size=48)
    assert images.shape == (40, 48, 48, 3) and issame.sum() == 10
    items, _ = synthetic.eval_pair_plan(3, 6, 5, 20)
    assert min(i for i, _ in items) >= 6  # evaluation identities are disjoint from the training ones

    files = shards + [result["bins"]["synth"], result["manifest"]]
    mtimes = [os.stat(f).st_mtime_ns for f in files]
    again = synthetic.generate_dataset(out, identities=6, images_per_identity=4, eval_identities=5, eval_pairs=20,
                                       image_size=48, seed=3, num_shards=2, workers=1, progress=False)
    assert again["cached"] and again["train"] == result["train"]
    assert [os.stat(f).st_mtime_ns for f in files] == mtimes
    with pytest.raises(synthetic.SyntheticDataError, match="other settings"):
        synthetic.generate_dataset(out, identities=7, images_per_identity=4, eval_identities=5, eval_pairs=20,
                                   image_size=48, seed=3, num_shards=2, workers=1, progress=False)


def test_generate_dataset_output_does_not_depend_on_workers(tmp_path):
    kwargs = dict(identities=4, images_per_identity=3, eval_identities=3, eval_pairs=6, image_size=32, seed=1,
                  num_shards=1, progress=False)
    one = synthetic.generate_dataset(str(tmp_path / "one"), workers=1, **kwargs)
    two = synthetic.generate_dataset(str(tmp_path / "two"), workers=2, **kwargs)
    for a, b in [(one["train"] + "/train-00000-of-00001.tfrecord", two["train"] + "/train-00000-of-00001.tfrecord"),
                 (one["bins"]["synth"], two["bins"]["synth"])]:
        with open(a, "rb") as fa, open(b, "rb") as fb:
            assert fa.read() == fb.read()


def test_bad_arguments_raise_one_clear_error(tmp_path):
    with pytest.raises(synthetic.SyntheticDataError, match="eval_identities >= 2"):
        synthetic.generate_dataset(str(tmp_path), identities=2, images_per_identity=1, eval_identities=1,
                                   eval_pairs=4, progress=False)
    with pytest.raises(ValueError, match="image_size"):
        synthetic.render_face(synthetic.identity_params(0, 0), np.random.default_rng(0), image_size=200)


def test_yaw_turns_points_on_a_cylinder():
    centre, radius = 56.0, synthetic.YAW_RADIUS
    yaw = np.deg2rad(20.0)
    np.testing.assert_allclose(synthetic.yaw_x(np.array([centre]), yaw), [centre + radius * np.sin(yaw)])
    # a point at angle 30 degrees on the cylinder moves to 50 degrees
    x = centre + radius * np.sin(np.deg2rad(30.0))
    np.testing.assert_allclose(synthetic.yaw_x(np.array([x]), yaw), [centre + radius * np.sin(np.deg2rad(50.0))])
    np.testing.assert_allclose(synthetic.yaw_x(synthetic.yaw_x(np.array([40.0, 70.0]), yaw), -yaw), [40.0, 70.0])


def test_records_and_pairs_carry_the_rendered_landmarks(tmp_path):
    import tensorflow as tf
    from mtarcface_tf.data import bin_pairs, records
    pose = dict(rotation=20.0, scale=0.1, shift=5.0, yaw=20.0)
    result = synthetic.generate_dataset(str(tmp_path / "s"), identities=2, images_per_identity=3, eval_identities=2,
                                        eval_pairs=2, image_size=48, seed=4, num_shards=1, workers=1, progress=False,
                                        pose=pose, spread=0.5)
    stored = {}
    for serialized in tf.data.TFRecordDataset(records.list_shards(result["train"])):
        _, label, landmarks = records.parse_example_with_landmarks(serialized)
        stored.setdefault(int(label), []).append(landmarks.numpy())
    for identity in range(2):
        _, expected = synthetic.render_identity(4, identity, range(3), 48, pose, 0.5)
        np.testing.assert_allclose(np.array(stored[identity]), expected, atol=1e-4)
    loaded = bin_pairs.load_landmarks(result["bins"]["synth"], 4, 96)     # at twice the size
    items, _ = synthetic.eval_pair_plan(4, 2, 2, 2)
    first = synthetic.render_face(synthetic.identity_params(4, items[0][0], 0.5),
                                  synthetic.image_rng(4, *items[0]), 48, pose)[1]
    np.testing.assert_allclose(loaded[0], (first + 0.5) * 2 - 0.5, atol=1e-3)


def test_spread_narrows_identities_towards_the_middle_of_each_range():
    wide = [synthetic.identity_params(0, i)["face_w_jaw"] for i in range(30)]
    narrow = [synthetic.identity_params(0, i, spread=0.5)["face_w_jaw"] for i in range(30)]
    np.testing.assert_allclose(np.array(narrow) - 28.0, 0.5 * (np.array(wide) - 28.0))   # range (21, 35)
