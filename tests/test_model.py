"""The LResNet backbone, the heads and the assembled MTArcFace network."""
import numpy as np
import pytest

from mtarcface_tf.configs import tiny
from mtarcface_tf.model import build_lresnet, build_lresnet50, build_mtarcface
from mtarcface_tf.model.lresnet import stage_units


def _trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def _tiny_model_config(mask_head=True):
    config = tiny.get_config().model
    config.width = 0.125
    config.input_size = 32
    config.mask_head = mask_head
    return config


@pytest.fixture(scope="module")
def lresnet50():
    return build_lresnet50()


def test_lresnet50_has_the_reference_size(lresnet50):
    assert _trainable(lresnet50) == 47_297_472


def test_lresnet50_weight_layers_follow_the_reference_checkpoint(lresnet50):
    # ../shared/reference/checkpoint_layout.md: 158 layers own weights, in this order.
    owners = [layer for layer in lresnet50.layers if layer.weights]
    assert len(owners) == 158
    assert [layer.name for layer in owners[:11]] == [
        "conv0", "bn0", "prelu0", "stage1_unit1_bn1", "stage1_unit1_conv1", "stage1_unit1_bn2",
        "stage1_unit1_relu1", "stage1_unit1_conv2", "stage1_unit1_conv1sc", "stage1_unit1_bn3", "stage1_unit1_sc"]
    assert [layer.name for layer in owners[-3:]] == ["bn1", "E_DenseLayer", "fc1"]
    shapes = {layer.name: [tuple(w.shape) for w in layer.weights] for layer in owners}
    assert shapes["prelu0"] == [(112, 112, 64)]
    assert shapes["stage1_unit2_relu1"] == [(56, 56, 64)]
    assert shapes["stage4_unit3_relu1"] == [(7, 7, 512)]
    assert shapes["E_DenseLayer"] == [(25088, 512), (512,)]
    assert shapes["fc1"] == [(512,), (512,), (512,)]   # no gamma: scale=False
    assert shapes["stage3_unit1_conv1sc"] == [(1, 1, 128, 256)]


def test_regularization_where_the_reference_puts_it(lresnet50):
    regularized = {(layer.name, attr) for layer in lresnet50.layers
                   for attr in ("kernel_regularizer", "bias_regularizer", "gamma_regularizer", "alpha_regularizer")
                   if getattr(layer, attr, None) is not None}
    assert ("conv0", "kernel_regularizer") in regularized
    assert ("bn0", "gamma_regularizer") in regularized
    assert ("prelu0", "alpha_regularizer") in regularized
    assert ("E_DenseLayer", "bias_regularizer") in regularized
    assert not any(name == "fc1" for name, _ in regularized)
    # One loss per regularized variable: conv kernels, BN gammas (not fc1), PReLU alphas, dense kernel and bias.
    assert len(lresnet50.losses) == len(regularized)


@pytest.mark.parametrize("depth,units", [(18, (2, 2, 2, 2)), (34, (3, 4, 6, 3)), (50, (3, 4, 14, 3)),
                                         (100, (3, 13, 30, 3))])
def test_depths(depth, units):
    assert stage_units(depth) == units


def test_unknown_depth_is_a_clear_error():
    with pytest.raises(ValueError, match="depth must be one of"):
        stage_units(42)


def test_small_lresnet_output_shape():
    model = build_lresnet(units=(1, 1, 1, 1), width=0.125, input_shape=(32, 32, 3), embedding_size=16)
    out = model(np.random.default_rng(0).normal(size=(3, 32, 32, 3)).astype("float32"))
    assert tuple(out.shape) == (3, 16)


def test_mtarcface_outputs_and_heads():
    model = build_mtarcface(7, _tiny_model_config())
    images = np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype("float32")
    out = model(images, training=False)
    assert set(out) == {"embedding", "mask_logits"}
    assert tuple(out["embedding"].shape) == (4, 128)
    assert tuple(out["mask_logits"].shape) == (4, 2)
    assert model.has_mask_head
    assert tuple(model.arcface.kernel.shape) == (128, 7)
    logits = model.arcface(out["embedding"], np.array([0, 1, 2, 6]), s=32.0, m=0.5)
    assert tuple(logits.shape) == (4, 7)
    # The centres are regularized and are not part of the exported backbone.
    assert any(w is model.arcface.kernel for w in model.trainable_weights)
    assert not any(w is model.arcface.kernel for w in model.backbone.weights)
    assert len(model.losses) == len(model.backbone.losses) + 1


def test_mask_head_reads_the_dropout_features():
    model = build_mtarcface(3, _tiny_model_config())
    mask_layer = model.backbone.get_layer("mask_logits")
    assert mask_layer.input.shape == model.backbone.get_layer("E_DenseLayer").input.shape
    assert model.backbone.get_layer("reshapelayer").output is mask_layer.input


def test_arcface_baseline_has_no_mask_head():
    model = build_mtarcface(3, _tiny_model_config(mask_head=False))
    out = model(np.zeros((2, 32, 32, 3), "float32"))
    assert set(out) == {"embedding"}
    assert not model.has_mask_head


def test_unknown_backbone_is_a_clear_error():
    config = _tiny_model_config()
    config.backbone = "vgg"
    with pytest.raises(ValueError, match="config.model.backbone"):
        build_mtarcface(3, config)
