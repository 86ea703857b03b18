"""Learning-rate schedules, optimizer choice and the margin warmup."""
import math

import keras
import numpy as np
import pytest

from mtarcface_tf.configs import common
from mtarcface_tf.train import schedules


def _lr(schedule, step):
    return float(schedule(step))


def test_boundaries_scale_with_the_global_batch():
    assert schedules.scaled_boundaries((100_000, 180_000), 512, 512) == [100_000, 180_000]
    assert schedules.scaled_boundaries((100_000, 180_000), 512, 256) == [200_000, 360_000]
    assert schedules.scaled_boundaries((100_000, 180_000), 512, 1024) == [50_000, 90_000]


def test_paper_piecewise_schedule_at_half_batch():
    config = common.base_config()
    config.batch_size = 256
    schedule = schedules.make_schedule(config)
    assert _lr(schedule, 0) == pytest.approx(0.0015)
    assert _lr(schedule, 199_999) == pytest.approx(0.0015)
    assert _lr(schedule, 200_000) == pytest.approx(0.0015 * 0.3)
    assert _lr(schedule, 360_000) == pytest.approx(0.0015 * 0.09)


def test_grad_accumulation_counts_updates_of_the_accumulated_batch():
    config = common.base_config()
    config.batch_size, config.grad_accum_steps = 128, 4    # 512 images per update: boundaries unscaled
    assert schedules.make_schedule(config).boundaries == [100_000, 180_000]


def test_linear_warmup_then_decay():
    schedule = schedules.WarmupDecay(1.0, "piecewise", boundaries=(20,), decay_factor=0.5, warmup_steps=10)
    assert _lr(schedule, 0) == pytest.approx(0.1)
    assert _lr(schedule, 4) == pytest.approx(0.5)
    assert _lr(schedule, 9) == pytest.approx(1.0)
    assert _lr(schedule, 15) == pytest.approx(1.0)
    assert _lr(schedule, 20) == pytest.approx(0.5)


def test_cosine_decays_from_base_after_warmup_to_zero():
    schedule = schedules.WarmupDecay(2.0, "cosine", total_steps=110, warmup_steps=10)
    assert _lr(schedule, 10) == pytest.approx(2.0)
    assert _lr(schedule, 60) == pytest.approx(1.0, abs=1e-5)
    assert _lr(schedule, 35) == pytest.approx(1.0 + math.cos(math.pi / 4), abs=1e-5)
    assert _lr(schedule, 110) == pytest.approx(0.0, abs=1e-6)
    values = [_lr(schedule, s) for s in range(10, 111)]
    assert np.all(np.diff(values) <= 1e-7)


def test_constant_and_unknown_names():
    assert _lr(schedules.WarmupDecay(0.3, "constant"), 12345) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="config.optimizer.schedule"):
        schedules.WarmupDecay(0.3, "linear")
    config = common.base_config()
    config.optimizer.name = "rmsprop"
    with pytest.raises(ValueError, match="config.optimizer.name"):
        schedules.make_optimizer(config)


def test_optimizers_from_config():
    config = common.base_config()
    sgd = schedules.make_optimizer(config)
    assert isinstance(sgd, keras.optimizers.SGD) and sgd.momentum == pytest.approx(0.9)
    assert float(schedules.current_learning_rate(sgd)) == pytest.approx(0.0015)
    config.optimizer.name = "adam"
    assert isinstance(schedules.make_optimizer(config), keras.optimizers.Adam)
    config.mixed_precision = "mixed_float16"
    assert isinstance(schedules.make_optimizer(config), keras.optimizers.LossScaleOptimizer)


def test_margin_warmup():
    assert float(schedules.margin_at(0, 0.5, 0)) == pytest.approx(0.5)
    assert float(schedules.margin_at(0, 0.5, 100)) == pytest.approx(0.0)
    assert float(schedules.margin_at(50, 0.5, 100)) == pytest.approx(0.25)
    assert float(schedules.margin_at(500, 0.5, 100)) == pytest.approx(0.5)
