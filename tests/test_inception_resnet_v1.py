"""InceptionResNetV1 as a registered feature builder: shapes at 112 and 160, FaceNet's structure and size."""
import numpy as np
import pytest

from mtarcface_tf.configs import common
from mtarcface_tf.model import build_mtarcface
from mtarcface_tf.model.build import FEATURE_BUILDERS, build_backbone


def _config(input_size, units=(1, 1, 1), width=0.125, embedding_size=32):
    config = common.base_config().model
    config.backbone = "inception_resnet_v1"
    config.input_size = input_size
    config.units = units
    config.width = width
    config.embedding_size = embedding_size
    return config


def _count(weights):
    return sum(int(np.prod(w.shape)) for w in weights)


def test_registered():
    assert "inception_resnet_v1" in FEATURE_BUILDERS


@pytest.mark.parametrize("input_size", [112, 160])
def test_small_variant_outputs(input_size):
    model = build_mtarcface(7, _config(input_size))
    images = np.random.default_rng(0).uniform(-1, 1, (2, input_size, input_size, 3)).astype(np.float32)
    outputs = model(images, training=False)
    assert outputs["embedding"].shape == (2, 32)
    assert outputs["mask_logits"].shape == (2, 2)
    assert np.all(np.isfinite(outputs["embedding"].numpy()))
    features = model.backbone.get_layer("avgpool_1a").output
    assert features.shape[-1] == round(1792 * 0.125)


def test_full_network_is_facenets():
    config = _config(160, units=(), width=1.0, embedding_size=512)
    config.mask_head = False
    model = build_backbone(config)
    names = [layer.name for layer in model.layers]
    assert sum(n.startswith("block35_") and n.endswith("_add") for n in names) == 5
    assert sum(n.startswith("block17_") and n.endswith("_add") for n in names) == 10
    assert sum(n.startswith("block8_") and n.endswith("_add") for n in names) == 6   # 5 + the final one
    assert "block8_final_relu" not in names                                      # last block8: no activation
    shapes = {n: model.get_layer(n).output.shape[1:] for n in ("conv2d_4b_3x3_relu", "mixed_6a", "mixed_7a")}
    assert shapes == {"conv2d_4b_3x3_relu": (17, 17, 256), "mixed_6a": (8, 8, 896), "mixed_7a": (3, 3, 1792)}
    scales = {model.get_layer(n).scale for n in ("block35_1_scale", "block17_1_scale", "block8_1_scale",
                                                   "block8_final_scale")}
    assert scales == {0.17, 0.10, 0.20, 1.0}
    total = _count(model.weights)   # FaceNet's network with a 512-d bottleneck: ~23.5M
    assert 23.0e6 < total < 24.0e6
    assert total == 23_497_936


# FaceNet's InceptionResNetV1 with its 128-d bottleneck, as ported to Keras to load davidsandberg/facenet's
# 20170512-110547 checkpoint (structure of nyoki-mtl/keras-facenet, code/inception_resnet_v1.py: convolutions
# without bias, BatchNorm without gamma, Dense bottleneck without bias): "Total params: 22,808,144, Trainable
# params: 22,779,312" (the model summary noted in a public copy of that port, read through the code search index).
FACENET_128_TOTAL, FACENET_128_TRAINABLE = 22_808_144, 22_779_312


def test_parameter_count_is_facenets_plus_the_bottleneck_bias():
    config = _config(160, units=(), width=1.0, embedding_size=128)
    config.mask_head = False
    model = build_backbone(config)
    # The one difference: this project's bottleneck Dense has a bias (128 values), FaceNet's has none.
    assert _count(model.weights) == FACENET_128_TOTAL + 128
    assert _count(model.trainable_weights) == FACENET_128_TRAINABLE + 128


def test_too_small_input_is_refused():
    with pytest.raises(ValueError, match="input_size"):
        build_backbone(_config(64))
