"""Learning-rate schedules, the optimizer and the ArcFace margin warmup, all built from the config.

Steps here are optimizer updates (with gradient accumulation one update spans ``grad_accum_steps`` micro-batches).
"""
import math

import keras
import tensorflow as tf

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("piecewise", "cosine", "constant")


def scaled_boundaries(boundaries, reference_batch_size, batch_size):
    """Returns the piecewise boundaries (ints) scaled by ``reference_batch_size / batch_size``.

    The reference scales its step counts this way, so a smaller global batch decays after proportionally more steps.
    """
    ratio = float(reference_batch_size) / float(batch_size)
    return [int(round(b * ratio)) for b in boundaries]


@keras.saving.register_keras_serializable("mtarcface_tf")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from 0 over ``warmup_steps``, then ``piecewise``, ``cosine`` or ``constant`` decay.

    ``schedule(step)`` takes an int/float scalar step (updates so far) and returns the float32 learning rate.
    piecewise: ``base * decay_factor ** (number of boundaries <= step)``; cosine: from ``base`` at the end of the
    warmup to 0 at ``total_steps``; constant: ``base``.
    """

    def __init__(self, base_lr, kind="constant", total_steps=1, boundaries=(), decay_factor=0.3, warmup_steps=0):
        super().__init__()
        if kind not in SCHEDULES:
            raise ValueError(f"config.optimizer.schedule={kind!r}: choose one of {SCHEDULES}")
        self.base_lr = float(base_lr)
        self.kind = kind
        self.total_steps = max(1, int(total_steps))
        self.boundaries = [int(b) for b in boundaries]
        self.decay_factor = float(decay_factor)
        self.warmup_steps = int(warmup_steps)

    def _decayed(self, step):
        if self.kind == "piecewise":
            passed = tf.add_n([tf.cast(step >= b, tf.float32) for b in self.boundaries]) if self.boundaries else 0.0
            return self.base_lr * tf.pow(self.decay_factor, passed)
        if self.kind == "cosine":
            span = float(max(1, self.total_steps - self.warmup_steps))
            progress = tf.clip_by_value((step - self.warmup_steps) / span, 0.0, 1.0)
            return 0.5 * self.base_lr * (1.0 + tf.cos(math.pi * progress))
        return tf.constant(self.base_lr, tf.float32)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        lr = self._decayed(step)
        if self.warmup_steps > 0:
            lr = lr * tf.minimum(1.0, (step + 1.0) / float(self.warmup_steps))
        return tf.cast(lr, tf.float32)

    def get_config(self):
        return {"base_lr": self.base_lr, "kind": self.kind, "total_steps": self.total_steps,
                "boundaries": self.boundaries, "decay_factor": self.decay_factor, "warmup_steps": self.warmup_steps}


def make_schedule(config):
    """Returns the ``WarmupDecay`` of ``config.optimizer`` for ``config.num_steps`` updates at ``config.batch_size``.

    The piecewise boundaries are given at ``reference_batch_size`` and scaled to the global batch of one update
    (``batch_size * grad_accum_steps``).
    """
    opt = config.optimizer
    update_batch = config.batch_size * config.grad_accum_steps
    return WarmupDecay(opt.learning_rate, opt.schedule, total_steps=config.num_steps,
                       boundaries=scaled_boundaries(opt.boundaries, opt.reference_batch_size, update_batch),
                       decay_factor=opt.decay_factor, warmup_steps=opt.warmup_steps)


def make_optimizer(config):
    """Returns the Keras optimizer of ``config.optimizer`` (SGD with momentum or Adam) on ``make_schedule(config)``.

    Under ``config.mixed_precision == "mixed_float16"`` it is wrapped in a ``keras.optimizers.LossScaleOptimizer``.
    """
    opt = config.optimizer
    schedule = make_schedule(config)
    if opt.name == "sgd":
        optimizer = keras.optimizers.SGD(schedule, momentum=opt.momentum)
    elif opt.name == "adam":
        optimizer = keras.optimizers.Adam(schedule)
    else:
        raise ValueError(f"config.optimizer.name={opt.name!r}: choose one of {OPTIMIZERS}")
    if config.mixed_precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def current_learning_rate(optimizer):
    """Returns the learning rate (float32 scalar tensor) the optimizer applies at its next update."""
    return tf.cast(optimizer.learning_rate, tf.float32)


def margin_at(step, margin, warmup_steps):
    """Returns the ArcFace margin (float32 scalar tensor) at update ``step``: linear from 0 to ``margin``
    over ``warmup_steps`` (constant ``margin`` when ``warmup_steps`` is 0)."""
    if warmup_steps <= 0:
        return tf.constant(margin, tf.float32)
    return margin * tf.minimum(1.0, tf.cast(step, tf.float32) / float(warmup_steps))
