"""Shared by the training tests: a tiny learnable TFRecord set and a tiny config (not a test module)."""
import cv2
import numpy as np

from mtarcface_tf.configs import common
from mtarcface_tf.data.shards import ShardedRecordWriter


def write_tiny_records(output_dir, classes=4, per_class=16, size=32, seed=0, shards=2):
    """Writes ``classes * per_class`` JPEGs (each class a distinct colour pattern plus noise); returns the dir."""
    rng = np.random.default_rng(seed)
    patterns = rng.integers(0, 256, size=(classes, 4, 4, 3)).astype(np.float32)
    with ShardedRecordWriter(str(output_dir), "train", num_shards=shards) as writer:
        for label in range(classes):
            base = cv2.resize(patterns[label], (size, size), interpolation=cv2.INTER_NEAREST)
            for _ in range(per_class):
                image = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
                ok, jpeg = cv2.imencode(".jpg", image[..., ::-1])
                assert ok
                writer.write(jpeg.tobytes(), label)
        writer.close(source="test")
    return str(output_dir)


def tiny_config(data_dir, classes=4, steps=4, batch_size=8):
    """Returns a config with a tiny LResNet on 32x32 images of ``data_dir``: one device, no evaluation."""
    config = common.base_config()
    config.num_classes = classes
    config.batch_size = batch_size
    config.num_steps = steps
    config.strategy = "default"
    config.jit_compile = False
    config.model.units = (1, 1, 1, 1)
    config.model.width = 0.125
    config.model.input_size = 32
    config.model.embedding_size = 16
    config.model.dropout = 0.0
    config.loss.arcface_scale = 16.0
    config.loss.arcface_margin = 0.2
    config.data.train = str(data_dir)
    config.data.shuffle_buffer = 64
    config.data.mask_probability = 0.5
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 2e-3
    config.optimizer.schedule = "constant"
    config.log_every_secs = 0.0
    config.checkpoint_every = 2
    return config
