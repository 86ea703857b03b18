"""The per-replica training step: it learns, skips non-finite updates, and scales losses per replica correctly."""
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtarcface_tf.configs import common
from mtarcface_tf.model import build_mtarcface
from mtarcface_tf.train.schedules import make_optimizer
from mtarcface_tf.train.step import make_train_step

CLASSES = 4
SIZE = 32
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(optimizer="adam", lr=2e-3, mask_head=True):
    config = common.base_config()
    config.num_classes, config.batch_size, config.jit_compile = CLASSES, 16, False
    config.model.update(units=(1, 1, 1, 1), width=0.125, input_size=SIZE, embedding_size=16, dropout=0.0,
                        mask_head=mask_head)
    config.loss.update(arcface_scale=16.0, arcface_margin=0.2)
    config.optimizer.update(name=optimizer, learning_rate=lr, momentum=0.0, schedule="constant")
    return config


def _batch(rng, patterns, batch_size):
    labels = rng.integers(0, CLASSES, batch_size)
    images = patterns[labels] + rng.normal(0, 0.2, (batch_size, SIZE, SIZE, 3))
    masks = rng.integers(0, 2, batch_size)
    images[masks == 1, SIZE // 2:] = 0.8     # a "mask" over the lower half
    return (tf.constant(images, tf.float32),
            {"identity": tf.constant(labels, tf.int32), "mask": tf.constant(masks, tf.int32)})


def _patterns(rng):
    small = rng.uniform(-1, 1, (CLASSES, 4, 4, 3))
    return np.repeat(np.repeat(small, SIZE // 4, axis=1), SIZE // 4, axis=2)


def _setup(config):
    keras.utils.set_random_seed(0)
    model = build_mtarcface(CLASSES, config)
    optimizer = make_optimizer(config)
    optimizer.build(model.trainable_variables)
    step = tf.function(make_train_step(model, optimizer, config, config.batch_size, 1))
    return model, optimizer, step


def test_loss_falls_on_learnable_data():
    config = _config()
    _, _, step = _setup(config)
    rng = np.random.default_rng(0)
    patterns = _patterns(rng)
    history = [step(*_batch(rng, patterns, 16), tf.constant(i, tf.int64)) for i in range(30)]
    losses = [float(m["loss"]) for m in history]
    assert all(float(m["finite"]) == 1.0 for m in history)
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5]), losses
    assert np.mean([float(m["identity_accuracy"]) for m in history[-5:]]) > 0.8
    assert np.mean([float(m["mask_accuracy"]) for m in history[-5:]]) > 0.8
    assert set(history[0]) == {"loss", "arcface_loss", "mask_loss", "reg_loss", "identity_accuracy",
                               "mask_accuracy", "lr", "finite"}


def test_mixed_bfloat16_step_trains():
    """The CPU speed-up setting: bfloat16 compute, float32 weights; the loss stays finite and falls."""
    config = _config()
    config.mixed_precision = "mixed_bfloat16"
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model, _, step = _setup(config)
    finally:
        keras.config.set_dtype_policy(previous)
    assert model.get_layer("lresnet_backbone").get_layer("conv0").compute_dtype == "bfloat16"
    assert all(v.dtype == "float32" for v in model.trainable_variables)
    rng = np.random.default_rng(0)
    patterns = _patterns(rng)
    history = [step(*_batch(rng, patterns, 16), tf.constant(i, tf.int64)) for i in range(30)]
    losses = [float(m["loss"]) for m in history]
    assert all(float(m["finite"]) == 1.0 for m in history) and np.all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5]), losses
    assert np.mean([float(m["identity_accuracy"]) for m in history[-5:]]) > 0.8


def test_nan_batch_leaves_weights_and_optimizer_unchanged():
    config = _config(optimizer="sgd", lr=0.1)
    config.optimizer.momentum = 0.9
    model, optimizer, step = _setup(config)
    rng = np.random.default_rng(1)
    patterns = _patterns(rng)
    step(*_batch(rng, patterns, 16), tf.constant(0, tf.int64))
    before = [v.numpy().copy() for v in model.variables + optimizer.variables]
    images, targets = _batch(rng, patterns, 16)
    images = tf.tensor_scatter_nd_update(images, [[0, 0, 0, 0]], [np.nan])
    metrics = step(images, targets, tf.constant(1, tf.int64))
    assert float(metrics["finite"]) == 0.0 and not np.isfinite(float(metrics["loss"]))
    after = model.variables + optimizer.variables
    changed = [v.path for v, b in zip(after, before) if not np.array_equal(v.numpy(), b, equal_nan=True)
               and "moving" not in v.path]
    assert changed == []
    assert int(optimizer.iterations) == 1
    metrics = step(*_batch(rng, patterns, 16), tf.constant(2, tf.int64))
    assert float(metrics["finite"]) == 1.0 and int(optimizer.iterations) == 2


def test_baseline_has_no_mask_terms():
    config = _config(mask_head=False)
    _, _, step = _setup(config)
    rng = np.random.default_rng(2)
    metrics = step(*_batch(rng, _patterns(rng), 16), tf.constant(0, tf.int64))
    assert float(metrics["mask_loss"]) == 0.0
    assert float(metrics["loss"]) == np.float32(float(metrics["arcface_loss"]) + float(metrics["reg_loss"]))


def test_gradient_accumulation_equals_one_big_batch():
    """Two micro-batches X, X accumulated == one batch [X; X] (BN sees the same statistics in both)."""
    rng = np.random.default_rng(3)
    images, targets = _batch(rng, _patterns(rng), 8)
    results = []
    for accum in (1, 2):
        config = _config(optimizer="sgd", lr=0.5)
        config.grad_accum_steps = accum
        config.batch_size = 16 // accum
        model, _, step = _setup(config)
        before = [v.numpy() for v in model.trainable_variables]
        if accum == 1:
            batch = (tf.concat([images, images], 0), {k: tf.concat([v, v], 0) for k, v in targets.items()})
        else:
            batch = (tf.stack([images, images]), {k: tf.stack([v, v]) for k, v in targets.items()})
        metrics = step(*batch, tf.constant(0, tf.int64))
        results.append((metrics, [v.numpy() - b for v, b in zip(model.trainable_variables, before)]))
    (m1, d1), (m2, d2) = results
    assert abs(float(m1["loss"]) - float(m2["loss"])) < 1e-4
    scale = max(np.abs(d).max() for d in d1)
    assert scale > 1e-4
    for a, b in zip(d1, d2):
        np.testing.assert_allclose(a, b, rtol=1e-2, atol=1e-3 * scale)


_MIRRORED_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    sys.path.insert(0, {tests!r})
    import test_train_step as t
    from mtarcface_tf.model import build_mtarcface
    from mtarcface_tf.train.schedules import make_optimizer
    from mtarcface_tf.train.step import make_distributed_step, make_train_step

    rng = np.random.default_rng(4)
    x, y = t._batch(rng, t._patterns(rng), 8)
    images = tf.concat([x, x], 0)                      # replica 0 and replica 1 each get x
    targets = {{k: tf.concat([v, v], 0) for k, v in y.items()}}
    out = {{}}
    config = t._config(optimizer="sgd", lr=0.5)
    for name, strategy in (("single", tf.distribute.OneDeviceStrategy("/cpu:0")),
                           ("mirrored", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))):
        with strategy.scope():
            keras.utils.set_random_seed(0)
            model = build_mtarcface(t.CLASSES, config)
            optimizer = make_optimizer(config)
            optimizer.build(model.trainable_variables)
        replicas = strategy.num_replicas_in_sync
        step = make_distributed_step(strategy, make_train_step(model, optimizer, config, 16, replicas))
        data = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors((images, targets)))
        before = [v.numpy() for v in model.trainable_variables]
        batch = next(iter(data))
        metrics = step(batch[0], batch[1], tf.constant(0, tf.int64))
        deltas = [(v.numpy() - b).ravel().tolist() for v, b in zip(model.trainable_variables, before)]
        out[name] = dict(replicas=replicas, loss=float(metrics["loss"]), reg=float(metrics["reg_loss"]),
                         mask=float(metrics["mask_loss"]), delta=deltas)

    # The independent reference: autodiff of the paper's objective written plainly on the whole batch, one device:
    # mean ArcFace CE + log(1 + mean mask CE) + L2; one SGD step without momentum moves by -lr * gradient.
    keras.utils.set_random_seed(0)
    model = build_mtarcface(t.CLASSES, config)
    with tf.GradientTape() as tape:
        outputs = model(images, training=True)
        logits = model.arcface(outputs["embedding"], targets["identity"], s=config.loss.arcface_scale,
                               m=config.loss.arcface_margin)
        arcface = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(targets["identity"], logits))
        mask = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(targets["mask"],
                                                                             outputs["mask_logits"]))
        reg = tf.add_n(model.losses)
        loss = arcface + tf.math.log(1.0 + mask) + reg
    grads = tape.gradient(loss, model.trainable_variables)
    out["plain"] = dict(loss=float(loss), reg=float(reg), mask=float(mask),
                        delta=[(-config.optimizer.learning_rate * g.numpy()).ravel().tolist() for g in grads],
                        names=[v.path for v in model.trainable_variables])
    print("RESULT" + json.dumps(out))
""")


def test_one_and_two_replicas_follow_the_gradient_of_the_plain_objective(tmp_path):
    """The step's all-reduced ``mask / (1 + global mask CE)`` trick == autodiff of log(1 + mask CE), per variable."""
    script = tmp_path / "mirrored.py"
    script.write_text(_MIRRORED_SCRIPT.format(tests=os.path.join(ROOT, "tests")))
    env = dict(os.environ, PYTHONPATH=ROOT, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json
    out = json.loads(proc.stdout.split("RESULT", 1)[1])
    plain = out["plain"]
    assert (out["single"]["replicas"], out["mirrored"]["replicas"]) == (1, 2)
    assert plain["mask"] > 0.1                      # the mask term matters in this batch
    for name in ("single", "mirrored"):
        run = out[name]
        for key in ("loss", "reg", "mask"):
            assert abs(run[key] - plain[key]) < 1e-4 * max(1.0, abs(plain[key])), (name, key, run[key], plain[key])
        checked = []
        for variable, expected, got in zip(plain["names"], plain["delta"], run["delta"]):
            expected, got = np.array(expected), np.array(got)
            scale = np.abs(expected).max()
            if scale < 1e-6:
                continue
            np.testing.assert_allclose(got, expected, rtol=2e-2, atol=2e-3 * scale, err_msg=f"{name}: {variable}")
            checked.append(variable)
        assert len(checked) >= 0.8 * len(plain["names"])
        assert any("mask" in variable for variable in checked), checked


def test_the_papers_batch_renorm_network_trains():
    from mtarcface_tf.configs import paper
    config = _config(optimizer="sgd", lr=0.1)
    config.model.norm = paper.get_config().model.norm
    assert config.model.norm == "batch_renorm"
    model, _, step = _setup(config)
    bn0 = model.backbone.get_layer("bn0")
    renorm_mean = bn0.renorm_mean.numpy().copy()
    rng = np.random.default_rng(0)
    metrics = step(*_batch(rng, _patterns(rng), 16), tf.constant(0, tf.int64))
    assert np.isfinite(float(metrics["loss"]))
    assert not np.allclose(bn0.renorm_mean.numpy(), renorm_mean)       # the step moved the renorm statistics


_XLA_REPLICAS_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    sys.path.insert(0, {tests!r})
    import test_train_step as t
    from mtarcface_tf.model import build_mtarcface
    from mtarcface_tf.train import step as step_module
    from mtarcface_tf.train.schedules import make_optimizer

    step_module.use_xla = lambda config: bool(config.jit_compile)   # XLA on these CPU replicas (GPU only in use)
    rng = np.random.default_rng(4)
    images, targets = t._batch(rng, t._patterns(rng), 16)
    out = {{}}
    for jit in (False, True):
        config = t._config(optimizer="sgd", lr=0.5)
        config.jit_compile = jit
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with strategy.scope():
            keras.utils.set_random_seed(0)
            model = build_mtarcface(t.CLASSES, config)
            optimizer = make_optimizer(config)
            optimizer.build(model.trainable_variables)
        step = step_module.make_distributed_step(strategy, step_module.make_train_step(model, optimizer, config, 16, 2))
        batch = next(iter(strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors((images, targets)))))
        before = [v.numpy() for v in model.variables]
        metrics = step(batch[0], batch[1], tf.constant(0, tf.int64))
        library = step.get_concrete_function(batch[0], batch[1], tf.constant(0, tf.int64)).graph.as_graph_def().library
        out[str(jit)] = dict(
            loss=float(metrics["loss"]), names=[v.path for v in model.variables],
            delta=[(v.numpy() - b).ravel().tolist() for v, b in zip(model.variables, before)],
            xla=[f.signature.name for f in library.function if f.attr["_XlaMustCompile"].b])
    print("RESULT" + json.dumps(out))
""")


@pytest.mark.slow   # slow tier (a multi-process or XLA run of over half a minute on 2 idle cores)
def test_xla_on_two_replicas_gives_the_uncompiled_updates(tmp_path):
    """MirroredStrategy on 2 virtual CPUs: with jit_compile the network's forward and backward run under XLA (the
    objective's all-reduce outside) and one SGD step moves every variable (BN statistics included) as without."""
    script = tmp_path / "xla_replicas.py"
    script.write_text(_XLA_REPLICAS_SCRIPT.format(tests=os.path.join(ROOT, "tests")))
    env = dict(os.environ, PYTHONPATH=ROOT, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json
    out = json.loads(proc.stdout.split("RESULT", 1)[1])
    eager, compiled = out["False"], out["True"]
    assert not eager["xla"]
    assert any("backward" in name for name in compiled["xla"]) and any("forward" in name for name in compiled["xla"])
    assert abs(eager["loss"] - compiled["loss"]) < 1e-5 * abs(eager["loss"])
    moved = 0
    for name, expected, got in zip(eager["names"], eager["delta"], compiled["delta"]):
        expected, got = np.array(expected), np.array(got)
        scale = np.abs(expected).max()
        moved += scale > 1e-6
        # XLA fuses and reorders float32 sums (convolutions, BN statistics): the measured differences are ~1e-5 of
        # the largest update of a variable, and ~1e-7 absolute where the update is rounding alone (an update is the
        # difference of two float32 values near 1). 1e-3 of the largest update + 1e-6 bounds both with room.
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-3 * scale + 1e-6, err_msg=name)
    assert moved >= 0.8 * len(eager["names"])
