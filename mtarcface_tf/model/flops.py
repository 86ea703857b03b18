"""Analytic cost of a network per example from its layer shapes: FLOPs (MFU figures in benchmarks) and the values
a training step keeps for its backward pass (GPU memory estimates)."""
import math

from keras import layers

from mtarcface_tf.model.heads import ArcFaceHead

# A training step is the forward pass plus a backward pass of about twice its cost (input and weight gradients).
TRAIN_STEP_FORWARD_MULTIPLE = 3


def _conv_flops(layer):
    kernel_h, kernel_w, in_channels, out_channels = layer.kernel.shape
    _, out_h, out_w, _ = layer.output.shape
    return 2 * out_h * out_w * kernel_h * kernel_w * (in_channels // layer.groups) * out_channels


def _dense_flops(layer):
    positions = math.prod(layer.output.shape[1:-1])
    return 2 * positions * math.prod(layer.kernel.shape)


def forward_flops(model):
    """Returns the forward FLOPs per example of a functional Keras ``model`` (multiply and add counted as 2).

    Counts every ``Conv2D`` (2 * output pixels * kernel volume * output channels), ``Dense`` and ``ArcFaceHead``
    (2 * embedding size * classes) layer, recursing into nested models; batch norm, activations and additions are
    left out (well under 1% for LResNet). LResNet-50 at 112x112: about 12.6e9, plus 2 * 512 * classes for the head.
    """
    total = 0
    for layer in model.layers:
        if isinstance(layer, layers.Conv2D):
            total += _conv_flops(layer)
        elif isinstance(layer, layers.Dense):
            total += _dense_flops(layer)
        elif isinstance(layer, ArcFaceHead):
            total += 2 * math.prod(layer.kernel.shape)
        elif hasattr(layer, "layers"):
            total += forward_flops(layer)
    return int(total)


def activation_elements(model):
    """Returns the number of values per example that the layers of a functional Keras ``model`` output (recursing
    into nested models; input layers left out; an ``ArcFaceHead`` counts its logits, one per class).

    Each intermediate tensor is counted once, as a training step without recomputation keeps it for the backward
    pass (convolutions, batch norm and PReLU need their inputs): an upper bound of the activation memory, in values.
    LResNet-50 at 112x112 with the paper's 85,742-class head: about 2.6e7.
    """
    total = 0
    for layer in model.layers:
        if isinstance(layer, layers.InputLayer):
            continue
        if isinstance(layer, ArcFaceHead):
            total += layer.kernel.shape[-1]
        elif hasattr(layer, "layers"):
            total += activation_elements(layer)
        else:
            total += math.prod(layer.output.shape[1:])
    return int(total)
