"""Heads on the backbone features: the mask-usage classifier and the ArcFace class centres."""
import keras
from keras import layers

from mtarcface_tf.model.arcface import arcface_logits


def mask_head(features, weight_decay=5e-4):
    """Dense(2) ``mask_logits`` on the dropout features [B, F]: returns mask / no-mask logits [B, 2]
    (class 1 = mask)."""
    l2 = keras.regularizers.L2(weight_decay) if weight_decay else None
    return layers.Dense(2, kernel_initializer="glorot_normal", kernel_regularizer=l2, bias_regularizer=l2,
                        name="mask_logits")(features)


class ArcFaceHead(layers.Layer):
    """Owns the ArcFace class centres ``kernel`` [embedding_size, num_classes] (glorot_uniform, L2 like the reference).

    ``head(embeddings, labels, s, m)`` returns the ArcFace logits [B, num_classes] (see ``arcface_logits``).
    Only training uses it: the export and the applications leave it out.
    """

    def __init__(self, num_classes, weight_decay=5e-4, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.weight_decay = weight_decay

    def build(self, input_shape):
        l2 = keras.regularizers.L2(self.weight_decay) if self.weight_decay else None
        self.kernel = self.add_weight(name="kernel", shape=(input_shape[-1], self.num_classes),
                                      initializer="glorot_uniform", regularizer=l2, dtype="float32")

    def call(self, embeddings, labels, s=64.0, m=0.5):
        return arcface_logits(keras.ops.cast(embeddings, "float32"), self.kernel, labels, s=s, m=m)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "weight_decay": self.weight_decay}
