"""InceptionResNetV1, FaceNet's network (davidsandberg/facenet ``models/inception_resnet_v1.py``), in Keras layers.

Stem (conv 3x3/2, 3x3, 3x3, maxpool/2, conv 1x1, 3x3, 3x3/2) -> 5 x block35 (Inception-ResNet-A, residual scale
0.17) -> reduction-A -> 10 x block17 (Inception-ResNet-B, 0.10) -> reduction-B -> 5 x block8 (Inception-ResNet-C,
0.20) -> block8 without activation (scale 1) -> global average pool -> dropout. Every convolution is conv (no bias)
-> BN (scale=False, as slim's batch_norm) -> ReLU, except the 1x1 up-projection closing each residual block (bias,
no BN, no activation). FaceNet's bottleneck (Dense -> BN) is the shared embedding head of ``build.py``.
At 512-d the whole network has about 23.5M parameters. ``blocks`` and ``width`` give small variants for tests and demos.
"""
import keras
from keras import layers

BLOCKS = (5, 10, 5)            # block35, block17, block8 repeats
BLOCK_SCALES = (0.17, 0.10, 0.20)
MIN_INPUT_SIZE = 75            # smaller inputs vanish in the valid-padded reductions


class _Builder:
    """Creates the named conv-BN-ReLU layers of one network with shared settings."""

    def __init__(self, width, weight_decay, bn_momentum, bn_epsilon):
        self.width = width
        self.l2 = keras.regularizers.L2(weight_decay) if weight_decay else None
        self.bn_momentum = bn_momentum
        self.bn_epsilon = bn_epsilon

    def channels(self, filters):
        return max(1, int(round(filters * self.width)))

    def conv(self, x, filters, kernel_size, name, strides=1, padding="same"):
        """conv (no bias) -> BN(scale=False) -> ReLU; ``filters`` before the width multiplier."""
        x = layers.Conv2D(self.channels(filters), kernel_size, strides=strides, padding=padding, use_bias=False,
                          kernel_initializer="glorot_uniform", kernel_regularizer=self.l2, name=name)(x)
        x = layers.BatchNormalization(momentum=self.bn_momentum, epsilon=self.bn_epsilon, scale=False,
                                      name=name + "_bn")(x)
        return layers.ReLU(name=name + "_relu")(x)

    def residual(self, x, branches, scale, activation, name):
        """``x + scale * conv1x1(concat(branches))`` (up-projection with bias, no BN), then ReLU if ``activation``."""
        mixed = layers.Concatenate(name=name + "_concat")(branches)
        up = layers.Conv2D(x.shape[-1], 1, use_bias=True, kernel_initializer="glorot_uniform",
                           kernel_regularizer=self.l2, name=name + "_conv2d_1x1")(mixed)
        x = layers.Add(name=name + "_add")([x, layers.Rescaling(scale, name=name + "_scale")(up)])
        return layers.ReLU(name=name + "_relu")(x) if activation else x


def _stem(b, x):
    x = b.conv(x, 32, 3, "conv2d_1a_3x3", strides=2, padding="valid")
    x = b.conv(x, 32, 3, "conv2d_2a_3x3", padding="valid")
    x = b.conv(x, 64, 3, "conv2d_2b_3x3")
    x = layers.MaxPooling2D(3, strides=2, padding="valid", name="maxpool_3a_3x3")(x)
    x = b.conv(x, 80, 1, "conv2d_3b_1x1", padding="valid")
    x = b.conv(x, 192, 3, "conv2d_4a_3x3", padding="valid")
    return b.conv(x, 256, 3, "conv2d_4b_3x3", strides=2, padding="valid")


def _block35(b, x, scale, name, activation=True):
    branch0 = b.conv(x, 32, 1, name + "_b0_1x1")
    branch1 = b.conv(b.conv(x, 32, 1, name + "_b1_1x1"), 32, 3, name + "_b1_3x3")
    branch2 = b.conv(b.conv(b.conv(x, 32, 1, name + "_b2_1x1"), 32, 3, name + "_b2_3x3a"), 32, 3, name + "_b2_3x3b")
    return b.residual(x, [branch0, branch1, branch2], scale, activation, name)


def _block17(b, x, scale, name, activation=True):
    branch0 = b.conv(x, 128, 1, name + "_b0_1x1")
    branch1 = b.conv(x, 128, 1, name + "_b1_1x1")
    branch1 = b.conv(branch1, 128, (1, 7), name + "_b1_1x7")
    branch1 = b.conv(branch1, 128, (7, 1), name + "_b1_7x1")
    return b.residual(x, [branch0, branch1], scale, activation, name)


def _block8(b, x, scale, name, activation=True):
    branch0 = b.conv(x, 192, 1, name + "_b0_1x1")
    branch1 = b.conv(x, 192, 1, name + "_b1_1x1")
    branch1 = b.conv(branch1, 192, (1, 3), name + "_b1_1x3")
    branch1 = b.conv(branch1, 192, (3, 1), name + "_b1_3x1")
    return b.residual(x, [branch0, branch1], scale, activation, name)


def _reduction_a(b, x, name="mixed_6a"):
    branch0 = b.conv(x, 384, 3, name + "_b0_3x3", strides=2, padding="valid")
    branch1 = b.conv(b.conv(x, 192, 1, name + "_b1_1x1"), 192, 3, name + "_b1_3x3")
    branch1 = b.conv(branch1, 256, 3, name + "_b1_3x3s2", strides=2, padding="valid")
    branch2 = layers.MaxPooling2D(3, strides=2, padding="valid", name=name + "_b2_pool")(x)
    return layers.Concatenate(name=name)([branch0, branch1, branch2])


def _reduction_b(b, x, name="mixed_7a"):
    branch0 = b.conv(b.conv(x, 256, 1, name + "_b0_1x1"), 384, 3, name + "_b0_3x3", strides=2, padding="valid")
    branch1 = b.conv(b.conv(x, 256, 1, name + "_b1_1x1"), 256, 3, name + "_b1_3x3", strides=2, padding="valid")
    branch2 = b.conv(b.conv(x, 256, 1, name + "_b2_1x1"), 256, 3, name + "_b2_3x3a")
    branch2 = b.conv(branch2, 256, 3, name + "_b2_3x3b", strides=2, padding="valid")
    branch3 = layers.MaxPooling2D(3, strides=2, padding="valid", name=name + "_b3_pool")(x)
    return layers.Concatenate(name=name)([branch0, branch1, branch2, branch3])


def inception_resnet_v1_features(inputs, blocks=BLOCKS, width=1.0, dropout=0.2, weight_decay=5e-4,
                                 bn_momentum=0.995, bn_epsilon=1e-3, block_scales=BLOCK_SCALES):
    """Builds InceptionResNetV1 on ``inputs`` up to the dropout after the global average pool.

    Args:
      inputs: Keras tensor [B, S, S, 3], normalized images, S >= 75 (FaceNet: 160; 112 works too).
      blocks: repeats of block35, block17 and block8 (FaceNet: 5, 10, 5; the extra block8 without
        activation always follows).
      width: multiplier of every channel count (1.0 is FaceNet's network).
      dropout: rate of the final dropout (FaceNet: keep_prob 0.8 -> 0.2).
      weight_decay: L2 factor on the conv kernels (0 disables).
      bn_momentum, bn_epsilon: BatchNormalization settings (FaceNet: decay 0.995, epsilon 0.001).
      block_scales: residual scales of block35, block17 and block8.
    Returns:
      Keras tensor [B, 1792 * width] (the features the heads read).
    """
    size = min(inputs.shape[1], inputs.shape[2])
    if size < MIN_INPUT_SIZE:
        raise ValueError(f"InceptionResNetV1 needs input_size >= {MIN_INPUT_SIZE} (got {size}); "
                         f"set config.model.input_size to 112 or 160")
    if len(blocks) != 3:
        raise ValueError(f"InceptionResNetV1 blocks must be 3 repeats (block35, block17, block8), got {blocks}")
    b = _Builder(width, weight_decay, bn_momentum, bn_epsilon)
    x = _stem(b, inputs)
    for i in range(blocks[0]):
        x = _block35(b, x, block_scales[0], f"block35_{i + 1}")
    x = _reduction_a(b, x)
    for i in range(blocks[1]):
        x = _block17(b, x, block_scales[1], f"block17_{i + 1}")
    x = _reduction_b(b, x)
    for i in range(blocks[2]):
        x = _block8(b, x, block_scales[2], f"block8_{i + 1}")
    x = _block8(b, x, 1.0, "block8_final", activation=False)
    x = layers.GlobalAveragePooling2D(name="avgpool_1a")(x)
    return layers.Dropout(dropout, name="dropout")(x)
