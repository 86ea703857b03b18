"""LResNet (insightface's ResNet for 112x112 faces), layer for layer the paper's TF2 reference.

The reference is ``resnet.py`` (plain BN) / ``resnet_batchRenorm.py`` (batch renorm, ``norm="batch_renorm"``; see
``normalization``) of dmonterom/face_recognition_TF2: a 3x3 stem (conv0, bn0, prelu0), four stages of
``residual_unit_v3`` (BN -> conv3x3 -> BN -> PReLU -> conv3x3(stride) -> BN, plus an identity or conv1x1+BN
shortcut; the first unit of every stage strides by 2 and uses the conv shortcut), then the output block
BN -> Dropout -> flatten -> Dense -> BN(scale=False). Layer names are the reference's, and layers are created in
the reference's order, so its positional checkpoints (``layer_with_weights-K``) map one to one.
"""
import keras
from keras import layers

from mtarcface_tf.model.normalization import DEFAULT_NORM, RENORM_MOMENTUM, norm_layer

UNITS_BY_DEPTH = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 14, 3), 100: (3, 13, 30, 3)}
FILTERS = (64, 64, 128, 256, 512)   # stem, then stages 1..4


def _l2(weight_decay):
    return keras.regularizers.L2(weight_decay) if weight_decay else None


def _conv(filters, kernel_size, strides, name, weight_decay):
    return layers.Conv2D(filters, kernel_size, strides=strides, padding="valid", use_bias=False,
                         kernel_initializer="glorot_normal", kernel_regularizer=_l2(weight_decay), name=name)


def _prelu(name, weight_decay):
    # Per-element alphas (shared_axes=None), zero-initialised: the reference's Keras default.
    return layers.PReLU(alpha_regularizer=_l2(weight_decay), name=name)


def residual_unit_v3(x, filters, stride, dim_match, name, bn_args):
    """One ``residual_unit_v3``: returns ``bn3(conv2(prelu(bn2(conv1(bn1(x)))))) + shortcut(x)``.

    Args:
      x: feature map [B, H, W, C].
      filters: output channels.
      stride: 1 or 2 (applied by conv2 and the shortcut conv).
      dim_match: True for an identity shortcut, False for conv1x1(stride) + BN.
      name: layer-name prefix, e.g. ``"stage1_unit1"``.
      bn_args: keyword arguments of ``normalization.norm_layer`` (``norm``, ``momentum``, ``epsilon``,
        ``weight_decay``, ``renorm_clipping``, ``renorm_momentum``).
    """
    decay = bn_args["weight_decay"]
    y = norm_layer(name + "_bn1", **bn_args)(x)
    y = layers.ZeroPadding2D(1, name=name + "_conv1_pad")(y)
    y = _conv(filters, 3, 1, name + "_conv1", decay)(y)
    y = norm_layer(name + "_bn2", **bn_args)(y)
    y = _prelu(name + "_relu1", decay)(y)
    y = layers.ZeroPadding2D(1, name=name + "_conv2_pad")(y)
    y = _conv(filters, 3, stride, name + "_conv2", decay)(y)
    y = norm_layer(name + "_bn3", **bn_args)(y)
    if dim_match:
        shortcut = x
    else:
        shortcut = _conv(filters, 1, stride, name + "_conv1sc", decay)(x)
        shortcut = norm_layer(name + "_sc", **bn_args)(shortcut)
    return layers.Add(name=name + "_add")([y, shortcut])


def stage_units(depth=50, units=None):
    """Returns the units per stage: ``units`` when given, else the standard ones of ``depth`` (18/34/50/100)."""
    if units:
        return tuple(int(u) for u in units)
    if depth not in UNITS_BY_DEPTH:
        raise ValueError(f"depth must be one of {sorted(UNITS_BY_DEPTH)} (or give units=...), got {depth}")
    return UNITS_BY_DEPTH[depth]


def _bn_args(weight_decay, bn_momentum, bn_epsilon, norm, renorm_clipping, renorm_momentum):
    return {"norm": norm, "momentum": bn_momentum, "epsilon": bn_epsilon, "weight_decay": weight_decay,
            "renorm_clipping": renorm_clipping, "renorm_momentum": renorm_momentum}


def lresnet_features(inputs, depth=50, width=1.0, units=None, dropout=0.4, weight_decay=5e-4,
                     bn_momentum=0.9, bn_epsilon=2e-5, norm=DEFAULT_NORM, renorm_clipping=None,
                     renorm_momentum=RENORM_MOMENTUM):
    """Builds the LResNet body on ``inputs`` up to the flattened dropout output of the output block.

    Args:
      inputs: Keras tensor [B, H, W, 3], normalized images ((pixel - 127.5) * 0.0078125).
      depth, units: stage sizes (see ``stage_units``).
      width: multiplier of the filters (64, 64, 128, 256, 512); 1.0 is the reference.
      dropout: rate of the output block's dropout.
      weight_decay: L2 factor on conv kernels, BN gammas (and betas with renorm) and PReLU alphas (0 disables).
      bn_momentum, bn_epsilon: BatchNormalization settings (reference: 0.9, 2e-5).
      norm, renorm_clipping, renorm_momentum: ``"batch_norm"`` (resnet.py) or ``"batch_renorm"``
        (resnet_batchRenorm.py) and the renorm settings (see ``normalization.norm_layer``).
    Returns:
      Keras tensor [B, H/16 * W/16 * C4], the features both heads read.
    """
    bn_args = _bn_args(weight_decay, bn_momentum, bn_epsilon, norm, renorm_clipping, renorm_momentum)
    filters = [max(1, int(round(f * width))) for f in FILTERS]
    x = layers.ZeroPadding2D(1, name="conv0_pad")(inputs)
    x = _conv(filters[0], 3, 1, "conv0", weight_decay)(x)
    x = norm_layer("bn0", **bn_args)(x)
    x = _prelu("prelu0", weight_decay)(x)
    for stage, count in enumerate(stage_units(depth, units), start=1):
        for unit in range(1, count + 1):
            x = residual_unit_v3(x, filters[stage], 2 if unit == 1 else 1, unit != 1,
                                 f"stage{stage}_unit{unit}", bn_args)
    x = norm_layer("bn1", **bn_args)(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    return layers.Flatten(name="reshapelayer")(x)


def embedding_head(features, embedding_size=512, weight_decay=5e-4, bn_momentum=0.9, bn_epsilon=2e-5,
                   norm=DEFAULT_NORM, renorm_clipping=None, renorm_momentum=RENORM_MOMENTUM):
    """Dense(embedding_size) ``E_DenseLayer`` -> BN(scale=False) ``fc1``: returns the embedding [B, embedding_size].

    ``norm``, ``renorm_*``: as ``lresnet_features`` (with renorm, fc1's beta carries the L2 like the reference's).
    """
    x = layers.Dense(embedding_size, kernel_initializer="glorot_normal", kernel_regularizer=_l2(weight_decay),
                     bias_regularizer=_l2(weight_decay), name="E_DenseLayer")(features)
    bn_args = _bn_args(weight_decay, bn_momentum, bn_epsilon, norm, renorm_clipping, renorm_momentum)
    return norm_layer("fc1", scale=False, **bn_args)(x)


def build_lresnet(depth=50, width=1.0, units=None, input_shape=(112, 112, 3), embedding_size=512, dropout=0.4,
                  weight_decay=5e-4, bn_momentum=0.9, bn_epsilon=2e-5, name=None, norm=DEFAULT_NORM):
    """Returns a Keras model: normalized image [B, H, W, 3] float -> embedding [B, embedding_size] (not L2-normalized).

    ``norm``: ``"batch_norm"`` (the reference's resnet.py) or ``"batch_renorm"`` (its resnet_batchRenorm.py).
    """
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    features = lresnet_features(inputs, depth, width, units, dropout, weight_decay, bn_momentum, bn_epsilon, norm)
    embedding = embedding_head(features, embedding_size, weight_decay, bn_momentum, bn_epsilon, norm)
    return keras.Model(inputs, embedding, name=name or f"lresnet{depth}")


def build_lresnet50(input_shape=(112, 112, 3), embedding_size=512, dropout=0.4, weight_decay=5e-4, norm=DEFAULT_NORM):
    """Returns the reference LResNet-50 (47,297,472 trainable parameters at 112x112): image -> 512-d embedding.

    ``norm="batch_renorm"`` gives the network of the reference's training scripts (resnet_batchRenorm.py).
    """
    return build_lresnet(50, 1.0, None, input_shape, embedding_size, dropout, weight_decay, name="resnet50", norm=norm)
