"""The training step: the objective, the per-replica gradient step and its distributed wrapper.

``make_train_step`` is the fast path the trainer runs (and the benchmark times). Losses follow
``tf.nn.compute_average_loss`` semantics: every replica divides its per-example losses by the GLOBAL batch, the
optimizer sums the gradients over replicas, and the regularization loss is divided by the number of replicas
(``tf.nn.scale_regularization_loss``) so it counts once. The paper's ``log(1 + mask CE)`` is taken of the
global-batch mask CE: its gradient ``d(mask CE) / (1 + mask CE)`` is formed with the all-reduced mask CE, so any
number of replicas gives the single-device gradients.
"""
import tensorflow as tf

from mtarcface_tf.model.arcface import cosine_logits
from mtarcface_tf.model.losses import (identity_cross_entropy, pairwise_squared_distances, sparse_cross_entropy,
                                        triplet_loss)
from mtarcface_tf.train.schedules import current_learning_rate, margin_at

# Order of the summed statistics every replica all-reduces in one call.
_STATS = ("arcface_loss", "mask_loss", "reg_loss", "identity_accuracy", "mask_accuracy")
# Triplet training also reports these (per-example terms holding the replica's batch statistic).
_TRIPLET_STATS = ("triplet_active_fraction", "triplet_positive_distance", "triplet_negative_distance")


def _triplet_terms(embedding, labels, loss_config):
    """Triplet terms of one replica's P x K batch (mined within the replica).

    The batch loss is repeated on each of the B examples, so ``compute_average_loss`` (sum / global batch)
    gives the mean of the replicas' triplet losses.
    """
    loss, stats = triplet_loss(embedding, labels, margin=loss_config.triplet_margin,
                               mining=loss_config.triplet_mining)
    distances = pairwise_squared_distances(tf.stop_gradient(embedding))
    distances += 5.0 * tf.eye(tf.shape(distances)[0])   # exclude self (distances are at most 4)
    nearest = tf.argmin(distances, axis=1, output_type=tf.int32)
    ones = tf.ones(tf.shape(labels), tf.float32)
    terms = {
        "arcface": loss * ones,
        "identity_correct": tf.cast(tf.equal(tf.gather(labels, nearest), labels), tf.float32),
    }
    for name, key in zip(_TRIPLET_STATS, ("active_fraction", "positive_distance", "negative_distance")):
        terms[name] = tf.stop_gradient(tf.cast(stats[key], tf.float32)) * ones
    return terms


def per_example_objective(model, outputs, targets, margin, loss_config, block=None):
    """The per-example terms of the objective (one small function, the place to add other losses).

    Args:
      model: the ``MTArcFace`` network (its ``arcface`` head owns the class centres, unless sharded).
      outputs: ``model(images)``: ``{"embedding": [B, D], "mask_logits": [B, 2] (optional)}``.
      targets: ``{"identity": int32 [B], "mask": int32 [B]}``.
      margin: float32 scalar, the ArcFace margin now (it may warm up).
      loss_config: ``config.loss`` (``type``, ``arcface_scale``, ``focal_gamma``, ``triplet_margin``,
        ``triplet_mining``).
      block: with the sharded head (``config.model.head == "sharded"``), the replica's ``partial_fc.ShardBlock``
        of this step; it gives the ArcFace terms instead of ``model.arcface``.
    Returns:
      dict of float32 [B]: ``arcface`` (the identity term: ArcFace CE with the margin, focal when
      ``focal_gamma`` > 0; with ``type == "triplet"`` the replica's triplet loss repeated on every example),
      ``identity_correct`` (argmax of the plain cosine logits == identity; for triplet: the nearest other
      embedding of the batch has the same identity) and, with a mask head, ``mask`` (mask CE) and ``mask_correct``.
    """
    embedding = outputs["embedding"]
    labels = targets["identity"]
    if loss_config.type == "triplet":
        terms = _triplet_terms(embedding, labels, loss_config)
    elif loss_config.type == "arcface" and block is not None:
        terms = block.identity_terms(embedding, loss_config.arcface_scale, margin, loss_config.focal_gamma)
    elif loss_config.type == "arcface":
        logits = model.arcface(embedding, labels, s=loss_config.arcface_scale, m=margin)
        cos = cosine_logits(tf.stop_gradient(tf.cast(embedding, tf.float32)), tf.stop_gradient(model.arcface.kernel))
        terms = {
            "arcface": identity_cross_entropy(labels, logits, loss_config.focal_gamma),
            "identity_correct": tf.cast(tf.equal(tf.argmax(cos, -1, output_type=tf.int32), labels), tf.float32),
        }
    else:
        raise ValueError(f"config.loss.type={loss_config.type!r}: choose 'arcface' or 'triplet'")
    if "mask_logits" in outputs:
        mask_logits = tf.cast(outputs["mask_logits"], tf.float32)
        terms["mask"] = sparse_cross_entropy(targets["mask"], mask_logits)
        terms["mask_correct"] = tf.cast(
            tf.equal(tf.argmax(mask_logits, -1, output_type=tf.int32), targets["mask"]), tf.float32)
    return terms


def _all_reduce_sum(value, num_replicas):
    if num_replicas == 1:
        return value
    return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, value)


def _apply_if(finite, optimizer, grads, variables):
    """Applies ``grads`` (already summed over replicas) on every replica when ``finite``, else nothing.

    ``finite`` must be the same on all replicas. A cond whose branch calls ``merge_call`` (as the optimizer does)
    is only allowed in cross-replica context, so where the strategy uses merge calls the cond runs there, and the
    gradients travel as per-replica arguments (as in ``keras.optimizers.LossScaleOptimizer``).
    """
    def apply(grads):
        optimizer.apply_gradients(zip(grads, variables))
        return tf.constant(True)

    if tf.__internal__.distribute.strategy_supports_no_merge_call():
        tf.cond(finite, lambda: apply(grads), lambda: tf.constant(False))
        return

    def cross_replica(distribution, finite_per_replica, grads):
        first = distribution.experimental_local_results(finite_per_replica)[0]
        def apply_everywhere():
            distribution.extended.call_for_each_replica(apply, args=(grads,))
            return tf.constant(True)

        tf.cond(first, apply_everywhere, lambda: tf.constant(False))

    tf.distribute.get_replica_context().merge_call(cross_replica, args=(finite, grads))


def use_xla(config):
    """True when the step compiles with XLA: ``config.jit_compile`` and a GPU is visible (on CPU XLA's convolutions
    run ~2x slower than TensorFlow's oneDNN kernels, bench/train_step.py)."""
    return bool(config.jit_compile) and bool(tf.config.list_logical_devices("GPU"))


def _network_call(model, config, num_replicas):
    """Returns ``images -> model(images, training=True)``, XLA-compiled when the step uses XLA on several replicas.

    One replica compiles the whole per-replica gradient function instead. Several replicas cannot: its objective
    all-reduces (the global mask CE), and under MirroredStrategy a collective inside a nested tf.function fails
    (merge_call while tracing; docs/checks/xla_replicas.py). So the network's forward pass is compiled, and the
    tape differentiates through the compiled call, whose backward function tf.function compiles with XLA too; the
    objective and its collectives stay outside.
    """
    def call(images):
        return model(images, training=True)

    return tf.function(call, jit_compile=True) if use_xla(config) and num_replicas > 1 else call


def _applied(update):
    with tf.control_dependencies([update]):
        return tf.constant(True)


def make_train_step(model, optimizer, config, global_batch_size, num_replicas, centres=None):
    """Returns the per-replica training step ``train_step(images, targets, step) -> dict``.

    Args:
      model: ``build_mtarcface(...)`` network, created under the strategy's scope.
      optimizer: from ``schedules.make_optimizer`` (built on ``model.trainable_variables``), same scope.
      config: the full config (``loss``, ``grad_accum_steps``, ``jit_compile``, ``mixed_precision``).
      global_batch_size: images of one micro-batch over all replicas (``config.batch_size``).
      num_replicas: replicas in sync.
      centres: the ``partial_fc.ShardedCentres`` of a sharded head (``config.model.head == "sharded"``), else None.
        Its rows are updated by ``partial_fc`` (SGD with ``config.optimizer.momentum``), the rest by ``optimizer``.
    The returned function, run per replica (inside ``strategy.run``, or directly without a strategy), takes
      images: float [B, S, S, 3] normalized (with ``grad_accum_steps`` k > 1: [k, B, S, S, 3], k micro-batches);
      targets: ``{"identity": int32 [B], "mask": int32 [B]}`` (with k > 1: [k, B]);
      step: int scalar, optimizer updates so far (drives the margin warmup).
    It computes the gradients, all-reduces them and applies ONE optimizer update, skipped when the loss is not
    finite. It returns float32 scalars over the global batch (the same on every replica): ``loss``,
    ``arcface_loss``, ``mask_loss`` (the mask CE; 0 without a mask head), ``reg_loss``, ``identity_accuracy``,
    ``mask_accuracy``, ``lr`` (the rate of this update) and ``finite`` (1.0 when the update was applied).
    """
    accum = int(config.grad_accum_steps)
    if centres is not None and accum > 1:
        raise ValueError("config.model.head='sharded' takes config.grad_accum_steps=1 (each step samples its own "
                         "classes); raise config.batch_size instead")
    has_mask = model.has_mask_head
    stat_names = _STATS + (_TRIPLET_STATS if config.loss.type == "triplet" else ())
    scale_loss = getattr(optimizer, "scale_loss", None) if config.mixed_precision == "mixed_float16" else None

    network = _network_call(model, config, num_replicas)

    def gradients(images, targets, margin, block=None):
        """Per-replica gradients of one micro-batch (divided by ``accum``) and its summed statistics [5]; with a
        sharded head's ``block`` the last gradient is that of its rows."""
        variables = model.trainable_variables + ([block.rows] if block is not None else [])
        with tf.GradientTape() as tape:
            if block is not None:
                tape.watch(block.rows)
            outputs = network(images)
            terms = per_example_objective(model, outputs, targets, margin, config.loss, block)
            arcface = tf.nn.compute_average_loss(terms["arcface"], global_batch_size=global_batch_size)
            reg = tf.nn.scale_regularization_loss(tf.add_n([tf.cast(term, tf.float32) for term in model.losses]))
            if block is not None:
                reg += tf.stop_gradient(block.reg_loss(config.model.weight_decay))
            loss = arcface + reg
            mask = tf.constant(0.0)
            if has_mask:
                mask = tf.nn.compute_average_loss(terms["mask"], global_batch_size=global_batch_size)
                global_mask = _all_reduce_sum(tf.stop_gradient(mask), num_replicas)
                loss += mask / (1.0 + global_mask)   # gradient of log(1 + global mask CE)
            loss = loss / accum
            if scale_loss is not None:
                loss = scale_loss(loss)
        grads = tape.gradient(loss, variables)
        stats = tf.stack([
            arcface, mask, reg,
            tf.reduce_sum(terms["identity_correct"]) / global_batch_size,
            tf.reduce_sum(terms["mask_correct"]) / global_batch_size if has_mask else tf.constant(0.0),
        ] + [tf.reduce_sum(terms[name]) / global_batch_size for name in stat_names[len(_STATS):]]) / accum
        return grads, stats

    if use_xla(config) and num_replicas == 1 and centres is None:
        gradients = tf.function(gradients, jit_compile=True)

    def train_step(images, targets, step):
        margin = margin_at(step, config.loss.arcface_margin, config.loss.margin_warmup_steps)
        lr = current_learning_rate(optimizer)
        block = None
        if centres is not None:
            block = centres.block(targets["identity"], step, config.loss.get("partial_fc_rate", 1.0), config.seed)
        if accum == 1:
            grads, stats = gradients(images, targets, margin, block)
        else:
            grads, stats = None, None
            for i in range(accum):  # unrolled: collectives may not run inside a while loop on every strategy
                micro_targets = {k: v[i] for k, v in targets.items()}
                g, s = gradients(images[i], micro_targets, margin)
                grads = g if grads is None else [a + b for a, b in zip(grads, g)]
                stats = s if stats is None else stats + s
        stats = _all_reduce_sum(stats, num_replicas)
        metrics = dict(zip(stat_names, tf.unstack(stats)))
        mask_term = tf.math.log1p(metrics["mask_loss"]) if has_mask else 0.0
        metrics["loss"] = metrics["arcface_loss"] + mask_term + metrics["reg_loss"]
        finite = tf.math.is_finite(metrics["loss"])
        if block is not None:
            row_grad = grads.pop()
            tf.cond(finite, lambda: _applied(block.apply(row_grad, lr, config.optimizer.momentum,
                                                         config.model.weight_decay)),
                    lambda: tf.constant(False))
        _apply_if(finite, optimizer, grads, model.trainable_variables)
        metrics["lr"] = lr
        metrics["finite"] = tf.cast(finite, tf.float32)
        return metrics

    return train_step


def make_distributed_step(strategy, train_step):
    """Wraps ``train_step`` in a ``tf.function`` that runs it on every replica of ``strategy``.

    The result takes a distributed batch ``(images, targets)`` (from ``distribute_datasets_from_function``) and
    the step, and returns the metrics dict of the first local replica (all replicas hold the same values).
    """

    @tf.function
    def distributed_step(images, targets, step):
        per_replica = strategy.run(train_step, args=(images, targets, step))
        return {k: strategy.experimental_local_results(v)[0] for k, v in per_replica.items()}

    return distributed_step

