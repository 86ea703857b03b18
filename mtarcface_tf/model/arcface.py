"""ArcFace logits (additive angular margin), the reference formula in ``keras.ops`` (TensorFlow and JAX backends)."""
import math

from keras import ops

# Below this, 1 - cos^2 is treated as 0: sqrt's gradient there would be infinite (NaN losses in ArcFace ports).
_SIN2_EPSILON = 1e-12


def l2_normalize(x, axis=-1, epsilon=1e-12):
    """Returns ``x / max(||x||, sqrt(epsilon))`` along ``axis`` (safe for all-zero rows)."""
    return x * ops.rsqrt(ops.maximum(ops.sum(ops.square(x), axis=axis, keepdims=True), epsilon))


def cosine_logits(embeddings, weights):
    """Returns cos(theta) [B, C] between L2-normalized embeddings [B, D] and the columns of ``weights`` [D, C]."""
    cos_t = ops.matmul(l2_normalize(embeddings, axis=1), l2_normalize(weights, axis=0))
    return ops.clip(cos_t, -1.0, 1.0)


def arcface_logits(embeddings, weights, labels, s=64.0, m=0.5):
    """ArcFace logits, exactly the reference's formula.

    Args:
      embeddings: float [B, D] (not necessarily normalized).
      weights: float [D, C], the class centres (normalized column-wise here).
      labels: int [B], class indices in [0, C).
      s: scale. m: additive angular margin in radians (a float or a scalar tensor, e.g. while it warms up).
    Returns:
      float [B, C]: s*cos(theta) for other classes; for the target class s*cos(theta + m) where
      cos(theta) > cos(pi - m), else s*(cos(theta) - m*sin(m)) (the reference fallback when theta + m > pi).
    """
    cos_t = cosine_logits(embeddings, weights)
    one_hot = ops.one_hot(ops.cast(labels, "int32"), ops.shape(cos_t)[1], dtype=cos_t.dtype)
    return margin_logits(cos_t, one_hot, s=s, m=m)


def margin_logits(cos_t, target_mask, s=64.0, m=0.5):
    """The reference's margin on cosines: ``cos_t`` float [B, C] in [-1, 1], ``target_mask`` float [B, C] with 1 at
    each row's target (a row may have none: a class block that does not hold the target). Returns float [B, C]:
    s*cos(theta + m) at the targets where cos(theta) > cos(pi - m), else s*(cos(theta) - m*sin(m)); s*cos elsewhere.
    """
    m = ops.cast(m, cos_t.dtype)
    sin2 = 1.0 - ops.square(cos_t)
    # sqrt clipped away from 0: the value is exact (0 at cos = +-1) and the gradient stays finite.
    sin_t = ops.where(sin2 > _SIN2_EPSILON, ops.sqrt(ops.maximum(sin2, _SIN2_EPSILON)), ops.zeros_like(sin2))
    cos_mt = cos_t * ops.cos(m) - sin_t * ops.sin(m)
    threshold = ops.cos(math.pi - m)
    target = ops.where(cos_t > threshold, cos_mt, cos_t - m * ops.sin(m))
    return s * (cos_t + target_mask * (target - cos_t))
