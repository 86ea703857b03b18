"""``train_and_evaluate(config, workdir)``: the training loop on tf.distribute, resumable, observed and evaluated."""
import contextlib
import logging
import os
import shutil
import signal
import threading
import time

import keras
import numpy as np
import tensorflow as tf

from mtarcface_tf.data import pipeline, records, synthetic
from mtarcface_tf.eval.registry import build_evaluators
from mtarcface_tf.export.embedder import make_embed_fn
from mtarcface_tf.model.build import HEADS, build_mtarcface
from mtarcface_tf.train import checkpoints as ckpt_lib
from mtarcface_tf.train import logging_utils, partial_fc
from mtarcface_tf.train import strategy as strategy_lib
from mtarcface_tf.train.schedules import make_optimizer
from mtarcface_tf.train.step import make_distributed_step, make_train_step

log = logging.getLogger("mtarcface_tf.train")

TB_DIR = "tb"
SYNTHETIC_DIR = "synthfaces"
IMAGE_GRID_SIZE = 32   # augmented training images shown in TensorBoard at the start


LOSS_TYPES = ("arcface", "triplet")


class TrainingError(Exception):
    """A run that cannot go on for a reason the user can fix (data, config, memory, diverging loss)."""


def _check_config(config):
    if config.grad_accum_steps < 1:
        raise TrainingError(f"config.grad_accum_steps={config.grad_accum_steps}: must be >= 1")
    if config.num_steps < 1:
        raise TrainingError(f"config.num_steps={config.num_steps}: must be >= 1")
    if config.loss.type not in LOSS_TYPES:
        raise TrainingError(f"config.loss.type={config.loss.type!r}: choose one of {', '.join(LOSS_TYPES)}")
    if config.mixed_precision not in ("", "mixed_float16", "mixed_bfloat16"):
        raise TrainingError(f"config.mixed_precision={config.mixed_precision!r}: choose '', 'mixed_float16' "
                            f"(GPU) or 'mixed_bfloat16' (CPU/TPU)")
    if config.mixed_precision == "mixed_float16" and not tf.config.list_logical_devices("GPU"):
        raise TrainingError("config.mixed_precision='mixed_float16' needs a GPU; use mixed_bfloat16 on CPU/TPU or ''")
    if config.data.mask_placement not in pipeline.MASK_PLACEMENTS:
        raise TrainingError(f"config.data.mask_placement={config.data.mask_placement!r}: choose one of "
                            f"{', '.join(pipeline.MASK_PLACEMENTS)}")
    _check_head(config)


def _check_head(config):
    head = config.model.get("head", "mirrored")
    if head not in HEADS:
        raise TrainingError(f"config.model.head={head!r}: choose one of {', '.join(HEADS)}")
    rate = config.loss.get("partial_fc_rate", 1.0)
    if not 0.0 < rate <= 1.0:
        raise TrainingError(f"config.loss.partial_fc_rate={rate}: must be in (0, 1] (1 = the full softmax)")
    if head == "mirrored":
        if rate != 1.0:
            raise TrainingError("config.loss.partial_fc_rate < 1 samples the classes of the sharded head; set "
                                "--config.model.head=sharded or the rate to 1")
        return
    # The sharded head's own SGD update, its per-step sampling and its exact softmax fix these.
    needs = {"config.loss.type": (config.loss.type, "arcface"), "config.optimizer.name": (config.optimizer.name, "sgd"),
             "config.grad_accum_steps": (config.grad_accum_steps, 1)}
    for name, (value, wanted) in needs.items():
        if value != wanted:
            raise TrainingError(f"config.model.head='sharded' needs {name}={wanted!r} (got {value!r}); change it "
                                f"or use --config.model.head=mirrored")
    if config.mixed_precision == "mixed_float16":
        raise TrainingError("config.model.head='sharded' does not scale losses for float16; use "
                            "config.mixed_precision='mixed_bfloat16' or ''")


def declared_evaluators(config, extra_bins=()):
    """Returns the evaluators of ``config.evals`` (``eval.registry.build_evaluators``; ``extra_bins``: the
    SynthFaces .bin added to the verification ones); raises TrainingError naming the entry that cannot be built."""
    try:
        return build_evaluators(config.evals, config.seed, extra_bins)
    except ValueError as err:
        raise TrainingError(str(err)) from None


def resolve_data(config, data_root):
    """Returns ``(train records path, SynthFaces verification .bin paths)``: the one place a run's data is decided.

    ``config.data.train`` when given (no .bin: the evaluators of ``config.evals`` bring their own); else SynthFaces
    generated (once, cached) under ``DATA_ROOT/synthfaces`` from ``config.data.synthetic``, whose .bin the
    verification evaluators score besides their ``bins``. Raises TrainingError when a declared evaluator cannot be
    built, e.g. an evaluation file does not exist (naming it, before any data is generated or step taken), when
    there is no data, or when the records hold more identities than ``config.num_classes``.
    """
    declared_evaluators(config)
    bins = []
    train_path = config.data.train
    if not train_path:
        if config.data.synthetic.identities <= 0:
            raise TrainingError("config.data.train is empty: give --config.data.train=TFRECORDS (tools/convert.py "
                                "makes them) or set --config.data.synthetic.identities > 0 to train on SynthFaces")
        try:
            generated = synthetic.generate_dataset(os.path.join(data_root, SYNTHETIC_DIR),
                                                   **synthetic.config_kwargs(config.data.synthetic))
        except synthetic.SyntheticDataError as err:
            raise TrainingError(str(err)) from None
        train_path, bins = generated["train"], list(generated["bins"].values())
    manifest = records.find_manifest(train_path)
    if manifest and manifest.get("identities", 0) > config.num_classes:
        raise TrainingError(f"{train_path} holds {manifest['identities']} identities but config.num_classes="
                            f"{config.num_classes}; set --config.num_classes={manifest['identities']}")
    return train_path, bins


def _make_dataset(strategy, config, train_path, per_replica_batch, seed, corrupt_counter):
    accum = config.grad_accum_steps

    def dataset_fn(input_context):
        dataset = pipeline.make_train_dataset(
            train_path, per_replica_batch, image_size=config.model.input_size,
            mask_probability=config.data.mask_probability, flip=config.data.flip,
            shuffle_buffer=config.data.shuffle_buffer, seed=seed, input_context=input_context, repeat=True,
            identities_per_batch=config.data.identities_per_batch, corrupt_counter=corrupt_counter,
            mask_placement=config.data.mask_placement)
        return dataset.batch(accum, drop_remainder=True) if accum > 1 else dataset

    return strategy.distribute_datasets_from_function(dataset_fn)


class _StopFlag:
    """Set by SIGTERM/SIGINT: the loop saves after the current step and returns."""

    def __init__(self):
        self.signal = None

    def __call__(self, signum, frame):
        del frame
        self.signal = signal.Signals(signum).name

    @contextlib.contextmanager
    def installed(self):
        """Installs the handlers for the duration (only in the main thread, where Python allows it)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.signal(s, self) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


@contextlib.contextmanager
def _dtype_policy(name):
    previous = keras.config.dtype_policy()
    if name:
        keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _local(value, strategy):
    return strategy.experimental_local_results(value)[0]


def _eval_summary(results):
    """Returns the masked verification accuracy (mean over sets) used to keep the best checkpoint, or None."""
    for variant in ("masked", "clean"):
        values = [v for k, v in results.items() if k.endswith(f"/{variant}/accuracy")]
        if values:
            return float(np.mean(values))
    return None


class _Run:
    """The state of one training run; ``train_and_evaluate`` drives it."""

    def __init__(self, config, workdir, strategy, optimizer):
        self.config, self.workdir, self.strategy = config, workdir, strategy
        self.chief = strategy_lib.is_chief(strategy)
        self.out_dir = strategy_lib.write_dir(strategy, workdir)
        self.replicas = strategy.num_replicas_in_sync
        self.per_replica_batch = strategy_lib.per_replica_batch_size(config.batch_size, self.replicas)
        self.optimizer = optimizer
        with strategy.scope():
            self.model = build_mtarcface(config.num_classes, config)
            self.optimizer.build(self.model.trainable_variables)
        self.centres = None   # the sharded head's centres, outside the scope: one shard per device, not mirrored
        if config.model.get("head", "mirrored") == "sharded":
            self.centres = partial_fc.ShardedCentres.from_strategy(strategy, config)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.rng = tf.random.Generator.from_seed(config.seed)
        self.checkpoint = ckpt_lib.make_checkpoint(self.model, self.optimizer, self.step, self.rng, self.centres)
        self.latest, self.best = ckpt_lib.make_managers(self.checkpoint, self.out_dir, config.keep_checkpoints)
        self.summaries = logging_utils.Summaries(os.path.join(workdir, TB_DIR) if self.chief else None)
        self.best_value = -np.inf
        self.evaluators = []

    def close(self):
        """Closes the summaries; a non-chief worker deletes its throwaway directory."""
        self.summaries.close()
        if not self.chief:
            shutil.rmtree(self.out_dir, ignore_errors=True)

    def restore(self):
        """Restores the newest checkpoint of the workdir, if any; logs where the run starts."""
        path = ckpt_lib.restore_latest(self.checkpoint, self.workdir)
        if path:
            log.info("resuming from %s at step %d (lr %.4g)", path, int(self.step.numpy()),
                     float(self.optimizer.learning_rate))
        else:
            log.info("starting a new run in %s", self.workdir)

    def save(self):
        """Saves the latest checkpoint (every worker saves; only the chief's lands in the workdir)."""
        step = int(self.step.numpy())
        if self.latest.latest_checkpoint and self.latest.latest_checkpoint.endswith(f"-{step}"):
            return
        path = self._save(self.latest, step)
        if self.chief:
            log.info("saved %s", path)

    def _save(self, manager, step):
        """Saves through ``manager``; on several workers a sharded head's shards are first collected to the chief,
        whose checkpoint then holds all of them. Returns the path."""
        collected = self.centres.collected(self.strategy, keep=self.chief) if self.centres else contextlib.nullcontext()
        with collected:
            return manager.save(checkpoint_number=step)

    def evaluate(self, final=False):
        """Runs the evaluators due at this step (every one when ``final``); logs and writes their metrics, keeps the
        best checkpoint; returns the metrics."""
        step = int(self.step.numpy())
        due = [d.evaluator for d in self.evaluators if final or (d.every and step % d.every == 0)]
        if not due:
            return {}
        embed_fn = make_embed_fn(self.model)
        results = {name: float(value) for evaluator in due for name, value in evaluator.run(embed_fn)}
        for name, value in results.items():
            log.info("eval step %d: %s = %.4f", step, name, value)
        self.summaries.scalars(step, results, prefix="eval")
        score = _eval_summary(results)
        if score is not None and score > self.best_value:
            self.best_value = score
            self._save(self.best, step)
            log.info("best so far (verification accuracy %.4f) saved in %s", score, self.best.directory)
        return results

    def write_image_grid(self, images):
        """Writes the augmented input images of the first batch to TensorBoard."""
        local = _local(images, self.strategy)
        if self.config.grad_accum_steps > 1:
            local = local[0]
        grid = logging_utils.image_grid(local.numpy()[:IMAGE_GRID_SIZE])
        self.summaries.images(int(self.step.numpy()), "train/augmented_inputs", grid)


def _train_loop(run, dataset, corrupt_counter):
    config = run.config
    train_step = make_train_step(run.model, run.optimizer, config, config.batch_size, run.replicas, run.centres)
    distributed_step = make_distributed_step(run.strategy, train_step)
    start = int(run.step.numpy())
    progress = logging_utils.Progress(config.num_steps, config.batch_size * config.grad_accum_steps,
                                      config.log_every_secs, start_step=start)
    summary, nonfinite, stop = {}, 0, _StopFlag()
    iterator = iter(dataset)
    with stop.installed():
        step = start
        while step < config.num_steps and stop.signal is None:
            images, targets = next(iterator)
            if step == start:
                run.write_image_grid(images)
            metrics = distributed_step(images, targets, tf.constant(step, tf.int64))
            run.step.assign_add(1)
            step += 1
            values = {k: float(v) for k, v in tf.nest.map_structure(lambda t: t.numpy(), metrics).items()}
            nonfinite = _check_finite(values, step, nonfinite, config.max_nonfinite)
            last = step == config.num_steps
            line = progress.update(step, values, force=last or stop.signal is not None)
            if line:
                summary = line
                run.summaries.scalars(step, line, prefix="train")
            if step % config.checkpoint_every == 0:
                run.save()
            if not last and run.evaluate():
                progress.restart_clock(step)
    if stop.signal:
        log.info("%s received: saving at step %d and stopping", stop.signal, step)
        run.save()
        return dict(summary, step=step, interrupted=True)
    run.save()
    skipped = corrupt_counter.count
    if skipped:
        log.warning("skipped %d corrupt records of %s", skipped, config.data.train or "SynthFaces")
    results = run.evaluate(final=True)
    return dict(summary, **results, step=step, skipped_records=skipped)


def _check_finite(values, step, nonfinite, max_nonfinite):
    """Returns the count of consecutive non-finite steps; raises TrainingError when it reaches the limit."""
    if values["finite"]:
        return 0
    nonfinite += 1
    losses = ", ".join(f"{k}={values[k]:.4g}" for k in ("loss", "arcface_loss", "mask_loss", "reg_loss"))
    log.warning("step %d: non-finite loss (%s); update skipped (%d in a row)", step, losses, nonfinite)
    if nonfinite >= max_nonfinite:
        raise TrainingError(f"stopped at step {step}: {nonfinite} non-finite losses in a row; the last good "
                            f"checkpoint is kept; lower --config.optimizer.learning_rate or check the data")
    return nonfinite


def train_and_evaluate(config, workdir):
    """Trains the network of ``config`` in ``workdir`` (resuming from its newest checkpoint) and evaluates it.

    Args:
      config: an ``ml_collections.ConfigDict`` as built by ``configs/common.py``.
      workdir: directory for ``config.json``, ``checkpoints/``, ``best/``, ``tb/`` (and ``synthfaces/``).
    Returns:
      dict of the final metrics: the last averaged training metrics (``loss``, ``arcface_loss``, ``mask_loss``,
      ``reg_loss``, ``identity_accuracy``, ``mask_accuracy``, ``lr``, ``images_per_sec``), the final evaluation
      ``SET/VARIANT/METRIC`` values, ``step`` and ``skipped_records`` (``interrupted`` after SIGTERM/SIGINT).
    Raises:
      TrainingError or ``checkpoints.CheckpointError``, each with one line saying what to change.
    """
    return train_model(config, workdir)[1]


def train_model(config, workdir):
    """Same as ``train_and_evaluate`` but returns ``(model, metrics)``: the trained ``MTArcFace`` network too."""
    _check_config(config)
    with _dtype_policy(config.mixed_precision):
        try:
            strategy = strategy_lib.make_strategy(config.strategy)
            strategy_lib.per_replica_batch_size(config.batch_size, strategy.num_replicas_in_sync)
            with strategy.scope():
                optimizer = make_optimizer(config)   # also validates the optimizer and schedule names
        except ValueError as err:
            raise TrainingError(str(err)) from err
        if strategy_lib.is_chief(strategy):
            ckpt_lib.check_and_save_config(config, workdir)
        return _train(config, workdir, strategy, optimizer)


def _train(config, workdir, strategy, optimizer):
    try:
        run = _Run(config, workdir, strategy, optimizer)
        run.restore()
        train_path, bins = resolve_data(config, run.out_dir)
        run.evaluators = declared_evaluators(config, bins)
        seed = int(run.rng.uniform_full_int([], tf.int32).numpy()) & 0x7FFFFFFF
        corrupt_counter = pipeline.CorruptRecordCounter()
        dataset = _make_dataset(strategy, config, train_path, run.per_replica_batch, seed, corrupt_counter)
        started = time.monotonic()
        results = _train_loop(run, dataset, corrupt_counter)
        log.info("finished at step %d in %s", results["step"],
                 logging_utils.format_duration(time.monotonic() - started))
        run.close()
        return run.model, results
    except FileNotFoundError as err:
        raise TrainingError(str(err)) from err
    except tf.errors.ResourceExhaustedError as err:
        raise TrainingError(f"out of memory with config.batch_size={config.batch_size}: lower "
                            f"--config.batch_size or raise --config.grad_accum_steps") from err
