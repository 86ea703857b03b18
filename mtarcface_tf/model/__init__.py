"""Model: LResNet backbones, heads, ArcFace logits and the losses (keras.ops only), and reading a training workdir.

``workdir`` (``load_model``, ``ModelLoadError``) reads tf.train checkpoints and is not imported here, so this package
still loads under the JAX backend on a machine without TensorFlow: import ``mtarcface_tf.model.workdir`` for it.
"""
from mtarcface_tf.model.arcface import arcface_logits
from mtarcface_tf.model.build import build_backbone, build_mtarcface
from mtarcface_tf.model.inception_resnet_v1 import inception_resnet_v1_features
from mtarcface_tf.model.losses import focal_cross_entropy, mtarcface_loss, triplet_loss
from mtarcface_tf.model.lresnet import build_lresnet, build_lresnet50

__all__ = ["arcface_logits", "build_backbone", "build_lresnet", "build_lresnet50", "build_mtarcface",
           "focal_cross_entropy", "inception_resnet_v1_features", "mtarcface_loss", "triplet_loss"]
