"""Batched embedding extraction: Keras and SavedModel sources, the flip test, resizing."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from mtarcface_tf.eval import embeddings as emb
from mtarcface_tf.export import export_saved_model
from mtarcface_tf.export.embedder import make_embed_fn
from mtarcface_tf.model import workdir
from mtarcface_tf.model.workdir import ModelLoadError

SIZE = 16


def _tiny_model(mask_head=True, size=SIZE):
    inputs = keras.Input((size, size, 3))
    features = keras.layers.Flatten()(keras.layers.AveragePooling2D(4)(inputs))
    outputs = {"embedding": keras.layers.Dense(8, name="embedding")(features)}
    if mask_head:
        outputs["mask_logits"] = keras.layers.Dense(2, name="mask")(features)
    return keras.Model(inputs, outputs)


def _images(count, size=SIZE, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _raw(model, images):
    return model((images.astype(np.float32) - 127.5) * 0.0078125, training=False)


def test_extract_flip_and_mask_prob():
    model = _tiny_model()
    images = _images(10)
    out = emb.extract(make_embed_fn(model), images, batch_size=4, flip=True)
    raw = _raw(model, images)
    raw_mirror = _raw(model, images[:, :, ::-1])
    np.testing.assert_allclose(out["embedding"], _unit(np.asarray(raw["embedding"])), atol=1e-5)
    expected_flip = _unit(np.asarray(raw["embedding"]) + np.asarray(raw_mirror["embedding"]))
    np.testing.assert_allclose(out["embedding_flip"], expected_flip, atol=1e-5)
    assert not np.allclose(out["embedding_flip"], out["embedding"], atol=1e-3)
    np.testing.assert_allclose(out["mask_prob"], tf.nn.softmax(raw["mask_logits"]).numpy(), atol=1e-5)
    assert out["mask_prob"].shape == (10, 2) and out["embedding"].dtype == np.float32


def test_extract_without_flip_or_mask_head():
    model = _tiny_model(mask_head=False)
    out = emb.extract(make_embed_fn(model), _images(5), batch_size=2, flip=False)
    assert out["embedding"].shape == (5, 8)
    assert out["embedding_flip"] is None and out["mask_prob"] is None


def test_extract_resizes_to_model_input(caplog):
    embed_fn = make_embed_fn(_tiny_model())
    assert embed_fn.input_size == SIZE
    with caplog.at_level("WARNING"):
        out = emb.extract(embed_fn, _images(3, size=2 * SIZE), batch_size=8)
        emb.extract(embed_fn, _images(2, size=2 * SIZE), batch_size=8)
    assert out["embedding"].shape == (3, 8)
    assert sum("resizing" in r.getMessage() for r in caplog.records) == 1


def test_saved_model_source(tmp_path):
    model = _tiny_model()

    export_saved_model(model, str(tmp_path / "sm"))
    embed_fn = make_embed_fn(str(tmp_path / "sm"))
    images = _images(6)
    got = emb.extract(embed_fn, images, batch_size=4, flip=False)
    want = emb.extract(make_embed_fn(model), images, batch_size=4, flip=False)
    assert embed_fn.input_size == SIZE
    np.testing.assert_allclose(got["embedding"], want["embedding"], atol=1e-5)
    np.testing.assert_allclose(got["mask_prob"], want["mask_prob"], atol=1e-5)


def test_bad_sources_and_images(tmp_path):
    with pytest.raises(ModelLoadError, match="nowhere"):
        make_embed_fn(str(tmp_path / "nowhere"))
    with pytest.raises(ModelLoadError):
        make_embed_fn(42)
    with pytest.raises(ValueError, match="uint8"):
        emb.extract(make_embed_fn(_tiny_model()), np.zeros((2, SIZE, SIZE, 3), np.float32))


def test_training_workdir_source(tmp_path):
    from mtarcface_tf.configs import tiny
    from mtarcface_tf.model import build_mtarcface
    from mtarcface_tf.train import checkpoints

    config = tiny.get_config()
    config.num_classes = 3
    config.model.input_size = 32
    config.model.embedding_size = 16
    config.model.width = 0.125
    model = build_mtarcface(config.num_classes, config)
    checkpoints.check_and_save_config(config, str(tmp_path))
    tf.train.Checkpoint(model=model).save(str(tmp_path / workdir.CHECKPOINT_DIR / "ckpt"))
    embed_fn = make_embed_fn(str(tmp_path))
    assert embed_fn.input_size == 32
    images = _images(4, size=32)
    got = emb.extract(embed_fn, images, batch_size=4, flip=False)
    want = emb.extract(make_embed_fn(model), images, batch_size=4, flip=False)
    np.testing.assert_allclose(got["embedding"], want["embedding"], atol=1e-5)
    assert got["mask_prob"].shape == (4, 2)

    config.model.embedding_size = 8         # another architecture than the saved weights
    with open(tmp_path / workdir.CONFIG_FILE, "w") as f:
        f.write(workdir.config_to_json(config))
    with pytest.raises(ValueError, match="does not fit"):
        make_embed_fn(str(tmp_path))


def test_embed_with_flip_adds_the_mirror_embedding_and_keeps_the_unflipped_mask_probs():
    from mtarcface_tf.eval.embeddings import embed_with_flip

    def first_and_last_column(batch):   # an "embedding" that tells the mirror apart: [B, 2]
        batch = np.asarray(batch, np.float32)
        columns = batch[:, :, [0, -1], 0].mean(axis=1)
        return columns, np.stack([columns[:, 0], -columns[:, 0]], axis=1)

    faces = np.random.default_rng(0).integers(0, 256, (3, 4, 5, 3), dtype=np.uint8)
    expected = faces[:, :, [0, -1], 0].astype(np.float32).mean(axis=1)
    plain, flip_sum, probs = embed_with_flip(first_and_last_column, faces, flip=True)
    np.testing.assert_allclose(plain, expected, rtol=1e-6)
    np.testing.assert_allclose(flip_sum, expected + expected[:, ::-1], rtol=1e-6)
    np.testing.assert_allclose(probs[:, 0], expected[:, 0], rtol=1e-6)
    plain, flip_sum, _ = embed_with_flip(first_and_last_column, faces, flip=False)
    assert flip_sum is None and plain.shape == (3, 2)
