"""Losses of the objective: cross-entropies and the MTArcFace combination (``keras.ops`` only)."""
from keras import ops

from mtarcface_tf.model.arcface import l2_normalize


def sparse_cross_entropy(labels, logits):
    """Returns the per-example softmax cross-entropy [B] of ``logits`` [B, C] (any float dtype) against int
    ``labels`` [B]."""
    logits = ops.cast(logits, "float32")
    log_probs = ops.log_softmax(logits, axis=-1)
    return -ops.take_along_axis(log_probs, ops.expand_dims(ops.cast(labels, "int32"), -1), axis=-1)[:, 0]


def mtarcface_loss(arcface_ce, mask_ce, reg_loss):
    """The paper's multi-task objective: ``arcface_ce + log(1 + mask_ce) + reg_loss`` (scalars or broadcastable)."""
    return arcface_ce + ops.log1p(mask_ce) + reg_loss


def focal_cross_entropy(labels, logits, gamma=2.0):
    """Returns the per-example focal loss [B] ``-(1 - p_t)**gamma * log(p_t)`` of ``logits`` [B, C] (e.g. ArcFace
    logits, margin included) against int ``labels`` [B]; ``p_t`` is the softmax probability of the label.

    ``gamma`` is a Python float >= 0; ``gamma == 0`` is exactly ``sparse_cross_entropy``.
    """
    if gamma == 0:
        return sparse_cross_entropy(labels, logits)
    logits = ops.cast(logits, "float32")
    log_probs = ops.log_softmax(logits, axis=-1)
    log_p_t = ops.take_along_axis(log_probs, ops.expand_dims(ops.cast(labels, "int32"), -1), axis=-1)[:, 0]
    return identity_loss_from_log_prob(log_p_t, gamma)


def identity_loss_from_log_prob(log_p_t, focal_gamma=0.0):
    """The identity term per example [B] from the log-probability of the label ``log_p_t`` float32 [B] (<= 0):
    ``-log_p_t`` (cross-entropy), or the focal loss ``-(1 - p_t)**gamma * log_p_t`` when ``focal_gamma`` > 0.
    For heads that form the softmax themselves (the class-sharded head's normalizer is a cross-replica sum)."""
    if focal_gamma <= 0:
        return -log_p_t
    # 1 - p_t as -expm1(log p_t): exact for p_t close to 1, where the focal weight matters most.
    return -ops.power(-ops.expm1(log_p_t), focal_gamma) * log_p_t


def identity_cross_entropy(labels, logits, focal_gamma=0.0):
    """The identity term of the ArcFace objective per example [B]: cross-entropy, or focal loss when
    ``focal_gamma`` > 0 (``labels`` int [B], ``logits`` [B, C])."""
    if focal_gamma > 0:
        return focal_cross_entropy(labels, logits, focal_gamma)
    return sparse_cross_entropy(labels, logits)


def pairwise_squared_distances(embeddings):
    """Returns the squared Euclidean distances [B, B] between the L2-normalized rows of ``embeddings`` [B, D]
    (values in [0, 4]; the diagonal is exactly 0)."""
    x = l2_normalize(ops.cast(embeddings, "float32"), axis=1)
    gram = ops.matmul(x, ops.transpose(x))
    norms = ops.diagonal(gram)
    distances = ops.maximum(ops.expand_dims(norms, 1) - 2.0 * gram + ops.expand_dims(norms, 0), 0.0)
    return distances * (1.0 - ops.eye(ops.shape(x)[0], dtype=distances.dtype))


def _pair_masks(labels):
    """Returns float [B, B] masks: ``positive`` (same label, i != j) and ``negative`` (different label)."""
    labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
    same = ops.cast(ops.equal(ops.expand_dims(labels, 1), ops.expand_dims(labels, 0)), "float32")
    positive = same * (1.0 - ops.eye(ops.shape(labels)[0], dtype="float32"))
    return positive, 1.0 - same


def _masked_mean(values, mask):
    return ops.sum(values * mask) / ops.maximum(ops.sum(mask), 1.0)


def _batch_all(distances, positive, negative, margin):
    # [a, p, n]: d(a, p) - d(a, n) + margin over every valid triplet.
    hinge = ops.relu(ops.expand_dims(distances, 2) - ops.expand_dims(distances, 1) + margin)
    valid = ops.expand_dims(positive, 2) * ops.expand_dims(negative, 1)
    active = ops.cast(hinge > 0, "float32") * valid
    return _masked_mean(hinge, active), ops.sum(active) / ops.maximum(ops.sum(valid), 1.0)


def _batch_hard(distances, positive, negative, margin):
    # Per anchor: its farthest positive against its closest negative.
    hardest_positive = ops.max(distances * positive, axis=1)
    largest = ops.stop_gradient(ops.max(distances))
    hardest_negative = ops.min(distances + (1.0 - negative) * (largest + 1.0), axis=1)
    valid = ops.cast(ops.sum(positive, axis=1) > 0, "float32") * ops.cast(ops.sum(negative, axis=1) > 0, "float32")
    hinge = ops.relu(hardest_positive - hardest_negative + margin)
    active = ops.cast(hinge > 0, "float32") * valid
    return _masked_mean(hinge, valid), ops.sum(active) / ops.maximum(ops.sum(valid), 1.0)


def _semi_hard(distances, positive, negative, margin):
    # Per positive pair (a, p): the closest negative farther than p (FaceNet's semi-hard negative); when there is
    # none, the farthest negative (as tf-addons' triplet_semihard_loss).
    d_ap = ops.expand_dims(distances, 2)                  # [a, p, 1]
    d_an = ops.expand_dims(distances, 1)                  # [a, 1, n]
    neg = ops.expand_dims(negative, 1)                    # [a, 1, n]
    farther = ops.cast(d_an > d_ap, "float32") * neg      # [a, p, n]
    largest = ops.stop_gradient(ops.max(distances))
    semi_hard = ops.min(d_an + (1.0 - farther) * (largest + 1.0), axis=2)
    easiest = ops.max(distances * negative, axis=1, keepdims=True)      # [a, 1]
    chosen = ops.where(ops.sum(farther, axis=2) > 0, semi_hard, easiest)
    valid = positive * ops.cast(ops.sum(negative, axis=1, keepdims=True) > 0, "float32")
    hinge = ops.relu(distances - chosen + margin)
    active = ops.cast(hinge > 0, "float32") * valid
    return _masked_mean(hinge, valid), ops.sum(active) / ops.maximum(ops.sum(valid), 1.0)


TRIPLET_MINING = {"batch_all": _batch_all, "batch_hard": _batch_hard, "semi_hard": _semi_hard}


def triplet_loss(embeddings, labels, margin=0.2, mining="batch_hard"):
    """FaceNet's triplet loss on a batch, with online mining, over L2-normalized embeddings.

    Distances are squared Euclidean between L2-normalized embeddings (in [0, 4]); a triplet (a, p, n) has
    ``label[a] == label[p]``, ``a != p`` and ``label[n] != label[a]``; its loss is ``max(d(a,p) - d(a,n) + margin, 0)``.

    Args:
      embeddings: float [B, D] (normalized here).
      labels: int [B] identities; a P x K batch (P identities, K >= 2 images each) gives every anchor positives.
      margin: the hinge margin (FaceNet: 0.2).
      mining: ``"batch_all"``: mean over the active (loss > 0) of all valid triplets;
        ``"batch_hard"``: mean over anchors of (farthest positive, closest negative);
        ``"semi_hard"``: mean over positive pairs of (a, p, closest negative farther than p, else the farthest).
        Memory is O(B^3) for batch_all and semi_hard.
    Returns:
      ``(loss, stats)``: float32 scalar (0 when the batch holds no valid triplet) and a dict of float32 scalars:
      ``active_fraction`` (mined triplets with loss > 0 over all mined triplets), ``positive_distance`` and
      ``negative_distance`` (mean squared distance over all positive / negative pairs of the batch).
    """
    if mining not in TRIPLET_MINING:
        raise ValueError(f"triplet mining={mining!r}: choose one of {sorted(TRIPLET_MINING)}")
    distances = pairwise_squared_distances(embeddings)
    positive, negative = _pair_masks(labels)
    loss, active_fraction = TRIPLET_MINING[mining](distances, positive, negative, margin)
    stats = {
        "active_fraction": active_fraction,
        "positive_distance": _masked_mean(distances, positive),
        "negative_distance": _masked_mean(distances, negative),
    }
    return loss, stats
