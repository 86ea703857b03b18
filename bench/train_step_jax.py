"""Images/s and MFU of the MTArcFace training step on the Keras JAX backend (no TensorFlow on this path).

For accelerator machines that have JAX but no TensorFlow. Builds the network with ``mtarcface_tf.model`` under
``KERAS_BACKEND=jax``, and jits a stateless step: ``model.stateless_call`` -> ArcFace logits + CE,
``log(1 + mask CE)`` and the L2 regularization (``mtarcface_loss``, losses in float32) -> ``jax.value_and_grad``
-> the Keras SGD(momentum 0.9)'s ``stateless_apply``, with the parameter, optimizer and BN buffers donated.
Synthetic batches live on the device. MFU = achieved FLOP/s / the device's peak, with the FLOPs of a step
counted analytically (``mtarcface_tf.model.flops``: 3 x forward; LResNet-50 at 112: 12.6 GFLOPs forward).

  python bench/train_step_jax.py --batch=256                       # GPU, mixed_bfloat16, LResNet-50
  python bench/train_step_jax.py --quick --peak_tflops=1.0         # CPU smoke run (tiny network)
"""
import os
import statistics
import time

os.environ["KERAS_BACKEND"] = "jax"

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch", 256, "Images per step.")
flags.DEFINE_integer("num_classes", 1000, "Identities of the ArcFace head (85742 for MS1MV2).")
flags.DEFINE_integer("depth", 50, "LResNet depth (18/34/50/100).")
flags.DEFINE_list("units", [], "Units per stage, overrides --depth (e.g. 1,1,1,1).")
flags.DEFINE_float("width", 1.0, "Filter multiplier.")
flags.DEFINE_integer("input_size", 112, "Image side.")
flags.DEFINE_string("mixed_precision", "auto", "'auto' (mixed_bfloat16 on GPU/TPU, float32 on CPU), "
                    "'mixed_bfloat16' or 'float32'.")
flags.DEFINE_integer("warmup", 3, "Untimed steps (compilation).")
flags.DEFINE_integer("rounds", 5, "Timed rounds (median reported).")
flags.DEFINE_integer("steps", 10, "Steps per timed round.")
flags.DEFINE_float("peak_tflops", 0.0, "Peak dense TFLOP/s of the device for MFU; 0: from the device kind "
                   "(H100/H200: 989 bf16 dense), else MFU is not reported.")
flags.DEFINE_bool("quick", False, "Tiny network (units 1,1,1,1, width 0.125, input 32, 10 classes, batch 8, "
                  "1 round of 2 steps): a smoke run for CPU.")
flags.DEFINE_float("learning_rate", 0.0015, "SGD learning rate (the paper's).")
# Weights are not seeded: keras.utils.set_random_seed would import TensorFlow where it is installed.
flags.DEFINE_integer("seed", 0, "Seed of the synthetic batch.")

# Dense bf16 peak TFLOP/s by a substring of jax's device_kind (NVIDIA data sheets, SXM parts).
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0}
_SGD_MOMENTUM = 0.9


def _network_name():
    return (f"depth={FLAGS.depth} units={','.join(FLAGS.units) or 'default'} width={FLAGS.width} "
            f"input={FLAGS.input_size}")


def _apply_quick():
    FLAGS.units, FLAGS.width, FLAGS.input_size = ["1", "1", "1", "1"], 0.125, 32
    FLAGS.num_classes, FLAGS.batch, FLAGS.warmup, FLAGS.rounds, FLAGS.steps = 10, 8, 1, 1, 2


def _config():
    from mtarcface_tf.configs import common
    config = common.base_config()
    config.model.depth = FLAGS.depth
    config.model.units = tuple(int(u) for u in FLAGS.units)
    config.model.width = FLAGS.width
    config.model.input_size = FLAGS.input_size
    return config


def _policy(platform):
    if FLAGS.mixed_precision != "auto":
        return FLAGS.mixed_precision
    return "float32" if platform == "cpu" else "mixed_bfloat16"


def _peak_tflops(device_kind):
    if FLAGS.peak_tflops > 0:
        return FLAGS.peak_tflops
    return next((peak for name, peak in PEAK_BF16_TFLOPS.items() if name in device_kind), None)


def make_jax_train_step(model, optimizer, loss_config, batch_size):
    """Returns a jitted ``step(state, images, labels, masks) -> (state, loss)``; ``state`` is a tuple
    (trainable, non_trainable, optimizer variables) of lists of arrays, donated to the step.

    images: float32 [B, S, S, 3] normalized; labels: int32 [B] identities; masks: int32 [B] (1 = masked).
    The loss is ArcFace CE (batch mean) + log(1 + mask CE) + the L2 regularization, all in float32.
    """
    import jax
    from keras import ops
    from mtarcface_tf.model import arcface_logits, mtarcface_loss
    from mtarcface_tf.model.losses import sparse_cross_entropy
    centre_index = next(i for i, v in enumerate(model.trainable_variables) if v is model.arcface.kernel)

    def loss_fn(trainable, non_trainable, images, labels, masks):
        outputs, non_trainable, losses = model.stateless_call(trainable, non_trainable, images, training=True,
                                                              return_losses=True)
        embedding = ops.cast(outputs["embedding"], "float32")
        logits = arcface_logits(embedding, trainable[centre_index], labels,
                                s=loss_config.arcface_scale, m=loss_config.arcface_margin)
        arcface_ce = ops.sum(sparse_cross_entropy(labels, logits)) / batch_size
        mask_ce = ops.sum(sparse_cross_entropy(masks, outputs["mask_logits"])) / batch_size
        reg = ops.sum(ops.stack([ops.cast(term, "float32") for term in losses]))
        return mtarcface_loss(arcface_ce, mask_ce, reg), non_trainable

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def step(state, images, labels, masks):
        trainable, non_trainable, opt_vars = state
        (loss, non_trainable), grads = grad_fn(trainable, non_trainable, images, labels, masks)
        trainable, opt_vars = optimizer.stateless_apply(opt_vars, grads, trainable)
        return (trainable, non_trainable, opt_vars), loss

    return jax.jit(step, donate_argnums=(0,))


def _initial_state(model, optimizer):
    return ([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables],
            [v.value for v in optimizer.variables])


def _time_round(step, state, batch, steps):
    start = time.perf_counter()
    for _ in range(steps):
        state, loss = step(state, *batch)
    loss = float(loss)   # blocks until the device is done
    return state, loss, time.perf_counter() - start


def main(argv):
    del argv
    import jax
    import keras
    from mtarcface_tf.model import build_mtarcface
    from mtarcface_tf.model.flops import TRAIN_STEP_FORWARD_MULTIPLE, forward_flops
    if FLAGS.quick:
        _apply_quick()
    device = jax.devices()[0]
    policy = _policy(device.platform)
    keras.mixed_precision.set_global_policy(policy)
    config = _config()
    model = build_mtarcface(FLAGS.num_classes, config)
    optimizer = keras.optimizers.SGD(FLAGS.learning_rate, momentum=_SGD_MOMENTUM)
    optimizer.build(model.trainable_variables)
    step = make_jax_train_step(model, optimizer, config.loss, FLAGS.batch)

    keys = jax.random.split(jax.random.key(FLAGS.seed), 3)
    size = FLAGS.input_size
    batch = (jax.random.uniform(keys[0], (FLAGS.batch, size, size, 3), minval=-1.0, maxval=1.0),
             jax.random.randint(keys[1], (FLAGS.batch,), 0, FLAGS.num_classes),
             jax.random.randint(keys[2], (FLAGS.batch,), 0, 2))
    state = _initial_state(model, optimizer)
    print(f"device {device.device_kind} ({device.platform}), policy {policy}, batch {FLAGS.batch}, "
          f"{FLAGS.num_classes} classes; compiling...", flush=True)
    state, first_loss, compile_s = _time_round(step, state, batch, FLAGS.warmup)
    rates = []
    for round_index in range(FLAGS.rounds):
        state, loss, seconds = _time_round(step, state, batch, FLAGS.steps)
        rates.append(FLAGS.batch * FLAGS.steps / seconds)
        print(f"round {round_index + 1}/{FLAGS.rounds}: {rates[-1]:.1f} img/s, loss {loss:.4f}", flush=True)

    img_s = statistics.median(rates)
    fwd = forward_flops(model)
    achieved_tflops = img_s * TRAIN_STEP_FORWARD_MULTIPLE * fwd / 1e12
    peak = _peak_tflops(device.device_kind)
    mfu = achieved_tflops / peak if peak else None
    print(f"{img_s:.1f} img/s, {achieved_tflops:.2f} TFLOP/s achieved"
          + (f", MFU {100 * mfu:.1f}% of {peak:g} TFLOP/s" if mfu is not None else " (no --peak_tflops: no MFU)"))
    from mtarcface_tf.results import report_result
    report_result("train_step_jax", {
        "img_s": round(img_s, 2), "mfu": None if mfu is None else round(mfu, 4),
        "achieved_tflops": round(achieved_tflops, 3), "peak_tflops": peak,
        "forward_gflops_per_image": round(fwd / 1e9, 3), "train_flops_multiple": TRAIN_STEP_FORWARD_MULTIPLE,
        "device": device.device_kind, "platform": device.platform, "policy": policy, "batch": FLAGS.batch,
        "num_classes": FLAGS.num_classes, "network": _network_name(),
        "warmup_s": round(compile_s, 1), "warmup_loss": round(first_loss, 4), "last_loss": round(loss, 4),
        "backend": keras.backend.backend()}, save=False)


if __name__ == "__main__":
    app.run(main)
