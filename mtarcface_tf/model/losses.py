"""Losses of the objective: cross-entropies and the MTArcFace combination (``keras.ops`` only)."""
from keras import ops


def sparse_cross_entropy(labels, logits):
    """Returns the per-example softmax cross-entropy [B] of ``logits`` [B, C] (any float dtype) against int ``labels`` [B]."""
    logits = ops.cast(logits, "float32")
    log_probs = ops.log_softmax(logits, axis=-1)
    return -ops.take_along_axis(log_probs, ops.expand_dims(ops.cast(labels, "int32"), -1), axis=-1)[:, 0]


def mtarcface_loss(arcface_ce, mask_ce, reg_loss):
    """The paper's multi-task objective: ``arcface_ce + log(1 + mask_ce) + reg_loss`` (scalars or broadcastable)."""
    return arcface_ce + ops.log1p(mask_ce) + reg_loss
