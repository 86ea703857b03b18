"""Images/s and peak memory of one training step: this project's step vs a re-creation of the reference's step.

The reference step (dmonterom/face_recognition_TF2 ``train_multigpu.py``, re-created here) decodes every JPEG of
the batch inside the ``tf.function`` with a Python-unrolled ``decode_jpeg`` + ``concat`` loop, swaps RGB->BGR,
normalizes and flips there, runs the network and the ArcFace layer without XLA, takes the summed sparse softmax
cross-entropy / batch + ``add_n(model.losses)`` (+ ``log(1 + mask CE)`` for the multi-task objective) and applies
SGD(momentum 0.9). This project's step receives batches the tf.data pipeline already decoded, and runs
``mtarcface_tf.train.step.make_train_step`` (wrapped by ``make_distributed_step`` as the trainer does, SGD from
``make_optimizer``) with ``--jit_compile``, once per precision of ``--precisions``: like with like, ours in float32
against the reference's float32 step, and ours in mixed_bfloat16 against the same float32 reference (the
reference trains in float32 only).

All use the same network (``build_mtarcface``), batch and number of classes; after warm-up they are timed
alternately in one process (``--rounds`` rounds of ``--steps`` steps each, median per variant). Peak resident
memory is measured per variant in its own subprocess (this script re-invoked with ``--variant=NAME``): the
``VmHWM`` of /proc/self/status after warm-up and a few steps. Not ``ru_maxrss``: Linux carries it over from the
forking parent across exec, so a child started by a big parent reports at least the parent's size.

  python bench/train_step.py                          # LResNet-50, 112x112, batch 16, 1,000 classes
  python bench/train_step.py --precisions=float32 --jit_compile   # ours in float32 with XLA instead
  python bench/train_step.py --num_classes=85742 --result=train_step_85742   # the paper's head
  python bench/train_step.py --units=1,1,1,1 --width=0.25 --input_size=64 --rounds=3   # quick
"""
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from mtarcface_tf.quiet import quiet_tensorflow

quiet_tensorflow()  # first: TensorFlow's log lines off (--verbosity=0 or MTARCFACE_TF_LOGS=1 bring them back)

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch", 16, "Images per step (one replica).")
flags.DEFINE_integer("num_classes", 1000, "Identities of the ArcFace head (85742 for MS1MV2).")
flags.DEFINE_integer("depth", 50, "LResNet depth (18/34/50/100).")
flags.DEFINE_list("units", [], "Units per stage, overrides --depth (e.g. 1,1,1,1).")
flags.DEFINE_float("width", 1.0, "Filter multiplier.")
flags.DEFINE_integer("input_size", 112, "Image side.")
flags.DEFINE_integer("warmup", 2, "Untimed steps per variant (tracing, compilation).")
flags.DEFINE_integer("rounds", 5, "Alternating timed rounds.")
flags.DEFINE_integer("steps", 2, "Steps per variant per round.")
flags.DEFINE_string("variant", "all",
                    "all: alternate timing + memory subprocesses; ref / ours_PRECISION: one variant alone (memory).")
# XLA's CPU convolutions are ~2x slower than TF's oneDNN kernels; oneDNN runs bfloat16 convolutions natively
# on AVX512-BF16/AMX CPUs (and slowly on others).
flags.DEFINE_bool("jit_compile", False, "Ours: compile the forward/backward with XLA.")
flags.DEFINE_list("precisions", ["float32", "mixed_bfloat16"], "Ours: the Keras dtype policies to time.")
flags.DEFINE_bool("memory", True, "With --variant=all, also measure peak memory in subprocesses.")
flags.DEFINE_string("result", "train_step", "Saved as docs/results/RESULT.json ('' = do not save).")
flags.DEFINE_integer("seed", 0, "Seed of the synthetic batch.")

_LEARNING_RATE = 0.0015
_MOMENTUM = 0.9


def _model_config(precision):
    from mtarcface_tf.configs import common
    config = common.base_config()
    config.num_classes = FLAGS.num_classes
    config.batch_size = FLAGS.batch
    config.model.depth = FLAGS.depth
    config.model.units = tuple(int(u) for u in FLAGS.units)
    config.model.width = FLAGS.width
    config.model.input_size = FLAGS.input_size
    config.jit_compile = FLAGS.jit_compile
    config.mixed_precision = "" if precision == "float32" else precision
    config.optimizer.name = "sgd"
    config.optimizer.schedule = "constant"
    config.optimizer.learning_rate = _LEARNING_RATE
    config.optimizer.momentum = _MOMENTUM
    return config


def _synthetic_batch(seed):
    """Returns (jpegs [B] bytes, images float32 [B,S,S,3] normalized, labels int32 [B], masks int32 [B])."""
    import cv2
    import numpy as np
    rng = np.random.default_rng(seed)
    size, batch = FLAGS.input_size, FLAGS.batch
    # Smooth colour fields plus mild noise: JPEGs about as large as aligned faces (not worst-case noise).
    low = rng.integers(0, 256, (batch, 8, 8, 3), dtype=np.uint8)
    pixels = np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_CUBIC) for im in low])
    pixels = np.clip(pixels + rng.normal(0, 6, pixels.shape), 0, 255).astype(np.uint8)
    jpegs = [cv2.imencode(".jpg", im[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes() for im in pixels]
    images = ((pixels.astype(np.float32) - 127.5) * 0.0078125)
    labels = rng.integers(0, FLAGS.num_classes, batch).astype(np.int32)
    masks = rng.integers(0, 2, batch).astype(np.int32)
    return jpegs, images, labels, masks


def _reference_arcface(embedding, kernel, labels, num_classes, s=64.0, m=0.5):
    """The reference ``Arcfacelayer.call``, op for op (tf.norm divisions, relu-cast condition, one-hot blend)."""
    import tensorflow as tf
    cos_m, sin_m = math.cos(m), math.sin(m)
    mm = sin_m * m
    threshold = math.cos(math.pi - m)
    embedding = embedding / tf.norm(embedding, axis=1, keepdims=True)
    weights = kernel / tf.norm(kernel, axis=0, keepdims=True)
    cos_t = tf.matmul(embedding, weights)
    sin_t = tf.sqrt(tf.subtract(1.0, tf.square(cos_t)))
    cos_mt = s * tf.subtract(tf.multiply(cos_t, cos_m), tf.multiply(sin_t, sin_m))
    cond = tf.cast(tf.nn.relu(cos_t - threshold), dtype=tf.bool)
    cos_mt_temp = tf.where(cond, cos_mt, s * (cos_t - mm))
    mask = tf.one_hot(labels, depth=num_classes)
    return tf.add(tf.multiply(s * cos_t, 1.0 - mask), tf.multiply(cos_mt_temp, mask))


def make_reference_step(model, optimizer, batch_size, num_classes):
    """Returns the reference-style ``tf.function`` (no XLA): (jpegs [B] string, labels, masks) -> loss."""
    import tensorflow as tf

    @tf.function
    def step(jpegs, labels, masks):
        with tf.GradientTape() as tape:
            img = tf.image.decode_jpeg(jpegs[0])
            for i in range(batch_size - 1):
                img = tf.concat([img, tf.image.decode_jpeg(jpegs[i + 1])], axis=0)
            img = tf.reshape(img, shape=(-1, FLAGS.input_size, FLAGS.input_size, 3))
            r, g, b = tf.split(img, num_or_size_splits=3, axis=-1)
            img = tf.concat([b, g, r], axis=-1)
            img = tf.cast(img, dtype=tf.float32)
            img = tf.subtract(img, 127.5)
            img = tf.multiply(img, 0.0078125)
            img = tf.image.random_flip_left_right(img)
            outputs = model(img, training=True)
            logits = _reference_arcface(outputs["embedding"], model.arcface.kernel, labels, num_classes)
            pred = tf.nn.softmax(logits)
            inf_loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(
                logits=logits, labels=labels)) * (1.0 / batch_size)
            mask_loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(
                logits=outputs["mask_logits"], labels=masks)) * (1.0 / batch_size)
            reg_loss = tf.add_n(model.losses)
            loss = inf_loss + tf.math.log(1.0 + mask_loss) + reg_loss
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        accuracy = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(pred, axis=1, output_type=tf.int32), labels),
                                          tf.float32))
        return loss, accuracy

    return step


def _build(variant):
    """Returns a no-argument callable that runs one training step of ``variant`` and blocks until it is done."""
    import keras
    import tensorflow as tf
    from mtarcface_tf.model import build_mtarcface
    precision = "float32" if variant == "ref" else variant.removeprefix("ours_")
    config = _model_config(precision)
    jpegs, images, labels, masks = _synthetic_batch(FLAGS.seed)
    if variant == "ref":
        keras.mixed_precision.set_global_policy("float32")
        model = build_mtarcface(FLAGS.num_classes, config)
        optimizer = keras.optimizers.SGD(_LEARNING_RATE, momentum=_MOMENTUM)
        step = make_reference_step(model, optimizer, FLAGS.batch, FLAGS.num_classes)
        args = (tf.constant(jpegs), tf.constant(labels), tf.constant(masks))
        return lambda: float(step(*args)[0])
    from mtarcface_tf.train.schedules import make_optimizer
    from mtarcface_tf.train.step import make_distributed_step, make_train_step
    keras.mixed_precision.set_global_policy(precision)
    model = build_mtarcface(FLAGS.num_classes, config)
    keras.mixed_precision.set_global_policy("float32")
    optimizer = make_optimizer(config)
    train_step = make_train_step(model, optimizer, config, FLAGS.batch, 1)
    step = make_distributed_step(tf.distribute.get_strategy(), train_step)
    args = (tf.constant(images), {"identity": tf.constant(labels), "mask": tf.constant(masks)})
    return lambda: float(step(*args, tf.constant(0, tf.int64))["loss"])


def _time_steps(run_step, steps):
    start = time.perf_counter()
    for _ in range(steps):
        loss = run_step()
    if not math.isfinite(loss):
        raise RuntimeError(f"non-finite loss {loss}")
    return FLAGS.batch * steps / (time.perf_counter() - start)


def _peak_mb_in_subprocess(variant):
    argv = [sys.executable, os.path.abspath(__file__), f"--variant={variant}"]
    argv += [a for a in sys.argv[1:] if not a.startswith("--variant")]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_mb"]


def _network_name():
    return (f"depth={FLAGS.depth} units={','.join(FLAGS.units) or 'default'} width={FLAGS.width} "
            f"input={FLAGS.input_size}")


def _machine():
    model = platform.processor() or "unknown cpu"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} cores"


def _peak_resident_mb():
    """Peak resident memory of this process image in MB (VmHWM; ru_maxrss where /proc is missing)."""
    try:
        with open("/proc/self/status", encoding="utf-8") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024.0
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _run_alone(variant):
    run_step = _build(variant)
    for _ in range(FLAGS.warmup + FLAGS.steps):
        run_step()
    print(json.dumps({"variant": variant, "peak_mb": round(_peak_resident_mb(), 1)}))


def _run_all():
    from mtarcface_tf.progress import progress_bar
    from mtarcface_tf.results import report_result
    steps = {name: _build(name) for name in ["ref"] + [f"ours_{p}" for p in FLAGS.precisions]}
    for name, run_step in steps.items():
        print(f"warm-up {name}...", flush=True)
        for _ in range(FLAGS.warmup):
            run_step()
    rates = {name: [] for name in steps}
    for _ in progress_bar(range(FLAGS.rounds), desc="alternating rounds"):
        for name, run_step in steps.items():
            rates[name].append(_time_steps(run_step, FLAGS.steps))
    for name, values in rates.items():
        print(f"{name}: median {statistics.median(values):.2f} img/s  rounds {[round(v, 2) for v in values]}")
    result = {f"{name}_img_s": round(statistics.median(values), 3) for name, values in rates.items()}
    for precision in FLAGS.precisions:
        # The reference trains in float32 only: each of our precisions is compared with that.
        speedup = result[f"ours_{precision}_img_s"] / result["ref_img_s"]
        result[f"speedup_ours_{precision}_vs_ref_float32"] = round(speedup, 3)
        print(f"ours {precision} vs reference float32: {speedup:.2f}x")
    if FLAGS.memory:
        for name in steps:
            result[f"{name}_peak_mb"] = _peak_mb_in_subprocess(name)
        print("peak resident memory (MB): " + ", ".join(f"{n} {result[f'{n}_peak_mb']}" for n in steps))
    result.update(machine=_machine(), batch=FLAGS.batch, num_classes=FLAGS.num_classes,
                  network=_network_name(), rounds=FLAGS.rounds, steps_per_round=FLAGS.steps,
                  statistic="median of alternating rounds", ours_jit_compile=FLAGS.jit_compile,
                  load_avg_1min=round(os.getloadavg()[0], 2))
    report_result(FLAGS.result, result, save=bool(FLAGS.result))


def main(argv):
    del argv
    if FLAGS.variant == "all":
        _run_all()
    else:
        _run_alone(FLAGS.variant)


if __name__ == "__main__":
    app.run(main)
