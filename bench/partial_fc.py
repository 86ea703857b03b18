"""The class-sharded head (Partial FC) against the mirrored head: per-replica memory, bytes crossing replicas and
head step time, for C = 85,742 / 360,232 / 2,059,906 identities on N = 1, 2, 4 replicas at rates 1.0 / 0.3 / 0.1.

Two kinds of figure, each labelled in the output:
* ``computed``: every combination, from the shapes (float32, D = 512): head state per replica (mirrored: centres,
  momentum and the dense gradient, 3 C D 4 B; sharded: its shard's centres and momentum, 2 C/N D 4 B, plus the
  B x k logits and k x D row gradient of the step), bytes one replica sends per step for the head (mirrored: ring
  all-reduce of the C x D gradient, 2 (N-1)/N C D 4; sharded: gathers of embeddings and labels and the reduction of the
  embedding gradient, 3 (N-1)/N B D 4, plus 5 B floats of maxima and sums) and head FLOPs per replica.
* ``measured``: the head alone (embeddings in, loss, gradients, SGD-momentum update; no backbone) timed on N virtual
  CPU devices of this machine, for the combinations whose total state fits ``--ram_gb`` (all virtual devices share
  this machine's memory, so the mirrored head costs N copies here) and whose compute fits ``--max_gflop``. Timings on
  a shared CPU (the N virtual devices share its cores): compare within a run, as ratios.

  python bench/partial_fc.py --measure=false --result=partial_fc_computed   # computed, every C, N and rate
  python bench/partial_fc.py --replicas=2 --result=partial_fc_n2              # and measured on 2 virtual devices
"""
import sys
import time

from mtarcface_tf.quiet import quiet_tensorflow

quiet_tensorflow()  # first: TensorFlow's log lines off (--verbosity=0 or MTARCFACE_TF_LOGS=1 bring them back)

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("classes", ["85742", "360232", "2059906"], "Identity counts C.")
flags.DEFINE_list("replicas", ["1", "2", "4"], "Replica counts N (virtual CPU devices; one when measuring).")
flags.DEFINE_list("rates", ["1.0", "0.3", "0.1"], "Partial FC sample rates of the sharded head.")
flags.DEFINE_integer("batch", 128, "Global batch B.")
flags.DEFINE_integer("embedding", 512, "Embedding size D.")
flags.DEFINE_bool("measure", True, "Time the heads that fit --ram_gb.")
flags.DEFINE_float("ram_gb", 6.0, "Largest total head state (all virtual devices) to measure.")
flags.DEFINE_float("max_gflop", 20.0, "Measure only combinations of at most this many head GFLOP per replica per step "
                                      "(a shared 2-core CPU runs about 10 GFLOP/s).")
flags.DEFINE_integer("steps", 3, "Timed steps per measured combination (after one untimed).")
flags.DEFINE_string("result", "partial_fc", "Saved as docs/results/RESULT.json ('' = do not save).")

_BYTES = 4
_LR, _MOMENTUM, _DECAY, _SCALE, _MARGIN = 0.1, 0.9, 5e-4, 64.0, 0.5


def computed(classes, replicas, rate, batch, dim):
    """Returns the computed figures of one combination: dict of head bytes per replica, bytes sent per replica per
    step and head GFLOPs per replica per step, for ``mirrored`` (rate 1 only) and ``sharded``."""
    shard = classes / replicas
    sampled = max(1, int(rate * shard))
    share = (replicas - 1) / replicas
    sharded = {
        "state_bytes": 2 * shard * dim * _BYTES,
        "step_bytes": (batch * sampled + sampled * dim) * _BYTES,
        "sent_bytes": 3 * share * batch * dim * _BYTES + 5 * batch * _BYTES * (replicas > 1),
        "gflops": 6 * batch * dim * sampled / 1e9,
    }
    mirrored = {
        "state_bytes": 3 * classes * dim * _BYTES,
        "step_bytes": batch / replicas * classes * _BYTES,
        "sent_bytes": 2 * share * classes * dim * _BYTES,
        "gflops": 6 * batch / replicas * dim * classes / 1e9,
    }
    return {"sharded": sharded, "mirrored": mirrored if rate == 1.0 else None}


def _time_steps(step, steps):
    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def _measure(tf, strategy, classes, rate, head):
    """Seconds per head step on the replicas of ``strategy`` (sharded or mirrored)."""
    import keras
    import numpy as np

    from mtarcface_tf.model.heads import ArcFaceHead
    from mtarcface_tf.model.losses import sparse_cross_entropy
    from mtarcface_tf.train.partial_fc import ShardedCentres

    batch, dim, replicas = FLAGS.batch, FLAGS.embedding, strategy.num_replicas_in_sync
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(batch, dim)).astype(np.float32)
    labels = rng.integers(0, classes, batch).astype(np.int32)

    def part(value):
        return strategy.experimental_distribute_values_from_function(
            lambda ctx: value[ctx.replica_id_in_sync_group * (batch // replicas):
                              (ctx.replica_id_in_sync_group + 1) * (batch // replicas)])

    args = (part(embeddings), part(labels))
    if head == "sharded":
        centres = ShardedCentres(classes, dim, replicas, [(r, f"/cpu:{r}") for r in range(replicas)])

        def replica_step(x, y):
            block = centres.block(y, tf.constant(0, tf.int64), rate, seed=0)
            with tf.GradientTape() as tape:
                tape.watch(block.rows)
                loss = tf.reduce_sum(block.identity_terms(x, _SCALE, _MARGIN)["arcface"]) / batch
            block.apply(tape.gradient(loss, block.rows), _LR, _MOMENTUM, _DECAY)
            return loss
    else:
        with strategy.scope():
            arcface = ArcFaceHead(classes, _DECAY)
            arcface.build((None, dim))
            optimizer = keras.optimizers.SGD(_LR, momentum=_MOMENTUM)
            optimizer.build(arcface.trainable_variables)

        def replica_step(x, y):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(sparse_cross_entropy(y, arcface(x, y, s=_SCALE, m=_MARGIN))) / batch
            optimizer.apply_gradients(zip(tape.gradient(loss, arcface.trainable_variables),
                                          arcface.trainable_variables))
            return loss

    step = tf.function(lambda: strategy.run(replica_step, args=args))
    return _time_steps(step, FLAGS.steps)


def main(argv):
    del argv
    replica_counts = [int(n) for n in FLAGS.replicas]
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * max(replica_counts))
    from mtarcface_tf.results import save_result

    # Collective instance keys are numbered per strategy object: two strategies on the same devices in one process
    # reuse them for different collectives, so a measuring run takes one replica count.
    if FLAGS.measure and len(replica_counts) > 1:
        raise app.UsageError("--measure times one replica count per process: give --replicas=N (or --measure=false)")
    strategies = {n: tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(n)]) for n in replica_counts}
    rows = []
    for classes in map(int, FLAGS.classes):
        for replicas in replica_counts:
            for rate in map(float, FLAGS.rates):
                figures = computed(classes, replicas, rate, FLAGS.batch, FLAGS.embedding)
                for head, values in figures.items():
                    if values is None:
                        continue
                    row = {"head": head, "classes": classes, "replicas": replicas,
                           "rate": rate if head == "sharded" else 1.0, "computed": values, "measured": None}
                    total = values["state_bytes"] * replicas   # the virtual devices share this machine's memory
                    if FLAGS.measure and total <= FLAGS.ram_gb * 1e9 and values["gflops"] <= FLAGS.max_gflop:
                        seconds = _measure(tf, strategies[replicas], classes, rate, head)
                        row["measured"] = {"seconds_per_step": round(seconds, 4)}
                    print(f"{head:8s} C={classes:>9,d} N={replicas} rate={row['rate']:.1f} "
                          f"state/replica={values['state_bytes'] / 1e9:6.3f} GB "
                          f"sent/replica/step={values['sent_bytes'] / 1e6:9.2f} MB "
                          f"GFLOP/replica={values['gflops']:8.1f} "
                          f"measured={row['measured']}", file=sys.stderr, flush=True)
                    rows.append(row)
    summary = {"batch": FLAGS.batch, "embedding": FLAGS.embedding, "ram_gb": FLAGS.ram_gb, "rows": rows}
    if FLAGS.result:
        save_result(FLAGS.result, summary)
    import json
    print(json.dumps(summary))


if __name__ == "__main__":
    app.run(main)
