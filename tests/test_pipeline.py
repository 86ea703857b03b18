"""Tests of mtarcface_tf.data.pipeline: outputs, corrupt records, P x K batches, sharding, eval batches."""
import cv2
import numpy as np
import pytest
import tensorflow as tf

from mtarcface_tf.data import masks, pipeline
from mtarcface_tf.data.shards import ShardedRecordWriter

IDENTITIES = 12
PER_IDENTITY = 8
STORED_SIZE = 40


def _jpeg(rng, size):
    image = cv2.resize(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8), (size, size))
    return cv2.imencode(".jpg", image)[1].tobytes()


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Two shards: 12 identities x 8 images (40x40 JPEG, one PNG), plus 2 corrupt records (label 99)."""
    directory = str(tmp_path_factory.mktemp("records"))
    rng = np.random.default_rng(0)
    with ShardedRecordWriter(directory, "train", num_shards=2) as writer:
        for i in range(IDENTITIES * PER_IDENTITY):
            data = _jpeg(rng, STORED_SIZE)
            if i == 3:
                image = rng.integers(0, 256, (STORED_SIZE, STORED_SIZE, 3), dtype=np.uint8)
                data = cv2.imencode(".png", image)[1].tobytes()
            writer.write(data, i // PER_IDENTITY)
        writer.write(_jpeg(rng, STORED_SIZE)[:300], 99)   # truncated JPEG
        writer.write(b"not an image at all, just text", 99)
        writer.close()
    return directory


def test_normalize_range():
    values = pipeline.normalize(tf.constant([0, 127.5, 255], tf.float32)).numpy()
    np.testing.assert_allclose(values, [-0.99609375, 0.0, 0.99609375])  # 127.5 * 0.0078125
    assert pipeline.normalize(tf.constant([0, 255], tf.uint8)).dtype == tf.float32


def test_train_batches_shapes_dtypes_range_and_corrupt_records_counted(shards):
    counter = pipeline.CorruptRecordCounter()
    dataset = pipeline.make_train_dataset(shards, 8, image_size=32, repeat=False, shuffle_buffer=50,
                                          corrupt_counter=counter)
    seen, identities = 0, []
    for images, targets in dataset:
        assert images.shape == (8, 32, 32, 3) and images.dtype == tf.float32
        assert targets["identity"].dtype == tf.int32 and targets["mask"].dtype == tf.int32
        assert -1.0 <= images.numpy().min() and images.numpy().max() <= 1.0
        assert set(targets["mask"].numpy().tolist()) <= {0, 1}
        identities += targets["identity"].numpy().tolist()
        seen += 8
    assert seen == IDENTITIES * PER_IDENTITY
    assert counter.count == 2
    assert 99 not in identities and sorted(set(identities)) == list(range(IDENTITIES))


def test_mask_probability_one_and_zero(shards):
    masked = pipeline.make_train_dataset(shards, 16, image_size=STORED_SIZE, mask_probability=1.0, flip=False)
    _, targets = next(iter(masked))
    assert targets["mask"].numpy().tolist() == [1] * 16
    clean = pipeline.make_train_dataset(shards, 16, image_size=STORED_SIZE, mask_probability=0.0)
    _, targets = next(iter(clean))
    assert targets["mask"].numpy().sum() == 0


def test_identity_balanced_batches(shards):
    identities, per_identity = 4, 4
    dataset = pipeline.make_train_dataset(shards, identities * per_identity, image_size=32, shuffle_buffer=100,
                                          identities_per_batch=identities)
    for images, targets in dataset.take(6):
        assert images.shape == (16, 32, 32, 3)
        labels, counts = np.unique(targets["identity"].numpy(), return_counts=True)
        assert len(labels) == identities and counts.tolist() == [per_identity] * identities
        assert 99 not in labels
    with pytest.raises(ValueError, match="divisible"):
        pipeline.make_train_dataset(shards, 10, identities_per_batch=4)


def test_input_context_shards_the_records(shards):
    total = 0
    for pipeline_id in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline_id,
                                             num_replicas_in_sync=2)
        dataset = pipeline.make_train_dataset(shards, 2, image_size=32, repeat=False, input_context=context)
        total += sum(int(images.shape[0]) for images, _ in dataset)
    assert total == IDENTITIES * PER_IDENTITY


def test_missing_path_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="no TFRecord files"):
        pipeline.make_train_dataset(str(tmp_path / "nothing"), 8)


def test_eval_images_dataset_in_order_normalized_and_resized():
    images = np.random.default_rng(1).integers(0, 256, (10, 48, 48, 3), dtype=np.uint8)
    batches = list(pipeline.make_eval_images_dataset(images, 4))
    assert [b.shape[0] for b in batches] == [4, 4, 2]
    np.testing.assert_allclose(np.concatenate(batches), (images - 127.5) / 128.0, atol=1e-6)
    resized = list(pipeline.make_eval_images_dataset(images, 4, image_size=24))
    assert resized[0].shape == (4, 24, 24, 3) and resized[0].dtype == tf.float32


def test_looks_complete_detects_truncated_and_garbage():
    rng = np.random.default_rng(2)
    jpeg = _jpeg(rng, 32)
    png = cv2.imencode(".png", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))[1].tobytes()
    checks = [pipeline.looks_complete(tf.constant(b)).numpy() for b in (jpeg, png, jpeg[:-10], png[:-20], b"", b"xyz")]
    assert checks == [True, True, False, False, False, False]
    assert masks.first_mask_row(32) > 0


def test_flip_landmarks_mirrors_and_swaps_sides():
    landmarks = tf.constant([[[10.0, 20.0], [30.0, 21.0], [22.0, 30.0], [12.0, 40.0], [28.0, 41.0]]])
    flipped = pipeline.flip_landmarks(landmarks, 40).numpy()[0]
    np.testing.assert_allclose(flipped, [[9.0, 21.0], [29.0, 20.0], [17.0, 30.0], [11.0, 41.0], [27.0, 40.0]])


def test_landmarks_follow_the_resize():
    image = cv2.imencode(".png", np.zeros((40, 40, 3), np.uint8))[1].tobytes()
    landmarks = tf.constant([[0.0, 0.0], [39.0, 39.0], [19.5, 19.5], [9.5, 29.5], [29.5, 9.5]])
    _, resized, ok = pipeline._decode_with_landmarks(tf.constant(image), landmarks, 20, None)
    assert bool(ok)
    np.testing.assert_allclose(resized.numpy(), [[-0.25, -0.25], [19.25, 19.25], [9.5, 9.5], [4.5, 14.5],
                                                 [14.5, 4.5]])


@pytest.fixture(scope="module")
def turned_shards(tmp_path_factory):
    """Grey 64x64 faces whose landmarks are the template rotated by 30 degrees (the mouth moves image-right)."""
    directory = str(tmp_path_factory.mktemp("turned"))
    size = 64
    matrix = cv2.getRotationMatrix2D(((size - 1) / 2, (size - 1) / 2), 30.0, 1.0)
    landmarks = masks.template_points(size) @ matrix[:, :2].T + matrix[:, 2]
    image = cv2.imencode(".png", np.full((size, size, 3), 128, np.uint8))[1].tobytes()
    with ShardedRecordWriter(directory, "train") as writer:
        for i in range(32):
            writer.write(image, i % 4, landmarks)
        writer.close()
    return directory, landmarks


def _mask_centres_x(dataset):
    images, targets = next(iter(dataset))
    changed = np.abs(images.numpy() - images.numpy()[:, :1, :1]).max(axis=-1) > 0.02
    assert targets["mask"].numpy().all() and changed.any(axis=(1, 2)).all()
    columns = np.arange(changed.shape[2])
    return (changed.sum(axis=1) * columns).sum(axis=1) / changed.sum(axis=(1, 2))


def test_pipeline_fits_masks_to_record_landmarks_and_flips_them(turned_shards):
    path, landmarks = turned_shards
    kwargs = dict(image_size=64, mask_probability=1.0, shuffle_buffer=1)
    template = _mask_centres_x(pipeline.make_train_dataset(path, 16, flip=False, mask_placement="template", **kwargs))
    fitted = _mask_centres_x(pipeline.make_train_dataset(path, 16, flip=False, **kwargs))
    mouth_shift = (landmarks[3:, 0].mean() - masks.template_points(64)[3:, 0].mean())
    assert mouth_shift > 5 and (fitted - template > 0.4 * mouth_shift).all(), (fitted, template)
    flipped = _mask_centres_x(pipeline.make_train_dataset(path, 16, flip=True, **kwargs))
    # a grey image looks the same flipped; its mask must move to the mirrored side with its landmarks
    assert (flipped < 31.5).any() and (flipped > 31.5).any()
    with pytest.raises(ValueError, match="mask_placement"):
        pipeline.make_train_dataset(path, 16, mask_placement="nose")
