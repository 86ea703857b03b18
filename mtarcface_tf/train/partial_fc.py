"""The class-sharded ArcFace head (Partial FC) on tf.distribute: each replica holds the centres of its own classes.

With ``config.model.head = "sharded"`` replica r of N owns the centres of classes ``[r*C//N, (r+1)*C//N)`` and their
SGD momentum; nothing of the head is mirrored or all-reduced. Per step (one replica's view):

1. all-gather the labels of the global batch; choose the rows of the own shard that take part: all of them at
   ``config.loss.partial_fc_rate`` 1, else every positive class of the global batch plus uniformly sampled negatives
   up to ``rate * shard size`` (arcface_torch's PartialFC_V2 sampling: top-k of uniform noise with the positives
   set to 2, so positives beyond the budget are all kept);
2. all-gather the embeddings (their gradient comes back through the gather: the adjoint of a gather is a
   reduce-scatter, so each replica receives the gradient of the global loss with respect to its own examples);
3. cosine logits of the whole batch against the chosen rows, ArcFace margin on the positives this shard owns;
4. the softmax normalizer from a cross-replica max (row maxima all-gathered; stop-gradient, log-sum-exp does not
   depend on the shift) and a cross-replica sum of ``exp(logit - max)``; the target logit is an all-reduced sum
   (only its owner contributes): ``log p = target - max - log(sum)``, the full ArcFace cross-entropy exactly;
5. each replica keeps the per-example losses of its own examples (the slice of the global batch it fed).

Why the gradients are right: TensorFlow's gradient of a collective sums the upstream gradients of every replica
(the all-reduce of ``dy``), i.e. autodiff computes the gradient of the SUM of the replicas' losses. Each replica
computes every example's loss (the collectives make them identical), so differentiating the whole batch's loss on
every replica would give N times the gradient; keeping only the replica's own examples makes the sum over replicas
the global loss once. The centre gradient then needs no reduction at all, and the embedding gradients flow into
each replica's backbone, whose gradients are all-reduced as for the mirrored head.

Design choices, and why:

* The shards are plain variables placed one per device, picked by the (static) replica id inside the replica
  function; a sync-on-read or mirrored variable would be allocated N times, which is what this head avoids.
* They are updated here, by SGD with momentum (Keras' formula ``m = momentum * m - lr * g; w += m``, weight decay
  as the mirrored head's L2 loss gives it: ``g += 2 * weight_decay * w``), only on the rows that took part in the
  step, momentum included (Partial FC's original rule: an unsampled centre does not move). The Keras optimizer
  would all-reduce them and keep its slots for every row.
* Multi-worker (MultiWorkerMirroredStrategy): each worker creates only its own replicas' shards, on its own devices,
  and the collectives above run across workers unchanged (tested: 2 workers of one replica equal one process of 2
  replicas). One fix was needed: a worker with a single replica hands ``all_gather``'s merge call a bare tensor
  whose device is the gather's destination, and a tf.function input has none, so every gathered value passes
  through ``tf.identity`` (which takes the replica's device scope). The replica id is static there too.
* Multi-worker checkpoints: each worker's checkpoint holds only what it has, and only the chief's lands in the
  workdir, so before saving every worker enters ``ShardedCentres.collected``: the shards are all-gathered in
  chunks and the chief saves the other workers' slices along with its own (see ``collected`` for the memory).
* Shards split C as evenly as possible (sizes differ by at most one) instead of padding C to a multiple of N, and
  each is saved as the slice ``[start, stop)`` of one ``[C, D]`` checkpoint tensor: a checkpoint written with any
  N restores into any other N (TensorFlow reads the requested slices), and holds no padding.
"""
import contextlib
import itertools
import math

import tensorflow as tf
# The slice saveables tf.__internal__.distribute.ShardedVariable uses (no public equivalent).
from tensorflow.python.training.saving import saveable_object, saveable_object_util

from mtarcface_tf.model.arcface import cosine_logits, margin_logits
from mtarcface_tf.model.losses import identity_loss_from_log_prob

CENTRES_KEY = "centres"
MOMENTUM_KEY = "momentum"
# Rows of each replica's shard gathered per collective when a multi-worker checkpoint collects the shards: bounds the
# device memory of the gather (N replicas x 2 tables x rows x D floats) to about this many bytes per replica.
COLLECT_CHUNK_BYTES = 64 << 20


def class_ranges(num_classes, num_shards):
    """Returns ``[(start, stop)]`` for each of ``num_shards`` shards: contiguous, covering ``[0, num_classes)``,
    sizes differing by at most one. ValueError when there are fewer classes than shards."""
    if num_classes < num_shards:
        raise ValueError(f"config.num_classes={num_classes} is smaller than the {num_shards} replicas; the sharded "
                         f"head needs at least one class per replica")
    return list(itertools.pairwise(r * num_classes // num_shards for r in range(num_shards + 1)))


def sample_size(rate, shard_size):
    """Returns the rows a shard of ``shard_size`` classes keeps per step at ``rate`` (PartialFC_V2's
    ``int(rate * num_local)``, at least 1; positives beyond it are kept as well)."""
    return max(1, min(shard_size, int(rate * shard_size)))


def _all_gather(value, num_replicas):
    if num_replicas == 1:
        return value
    # A worker with one replica passes a bare tensor to all_gather's merge_call, whose destination is the tensor's
    # device: a tf.function input (e.g. int32 labels, which tf.cast passes through) has none. The identity takes
    # the replica's device scope.
    return tf.distribute.get_replica_context().all_gather(tf.identity(value), axis=0)


def _all_reduce_sum(value, num_replicas):
    if num_replicas == 1:
        return value
    return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, value)


def _replica_id():
    """The calling replica's id in its sync group, as a Python int (MirroredStrategy and MultiWorkerMirroredStrategy
    make it a constant; a strategy that does not cannot run this head)."""
    replica = tf.get_static_value(tf.distribute.get_replica_context().replica_id_in_sync_group)
    if replica is None:
        raise ValueError("config.model.head='sharded' needs a strategy with static replica ids (mirrored, "
                         "multi_worker or default); use config.model.head='mirrored'")
    return int(replica)


def _local_replicas(strategy):
    """Returns ``[(global replica id, device or None)]`` of this worker's replicas."""
    ids = strategy.experimental_local_results(
        strategy.run(lambda: tf.distribute.get_replica_context().replica_id_in_sync_group))
    try:
        devices = list(strategy.extended.worker_devices)
    except RuntimeError:   # the default strategy: one replica, wherever TensorFlow places it
        devices = [None]
    return [(int(i), d) for i, d in zip(ids, devices)]


class ShardedCentres(tf.__internal__.tracking.Trackable):
    """The ArcFace class centres ``[C, D]`` (class-major) and their momentum, split by class range over the
    replicas; this worker holds only its own replicas' shards, each on its replica's device.

    Checkpointed as two ``[C, D]`` tensors (``centres``, ``momentum``) of which each shard writes its slice: a
    checkpoint restores into any number of replicas. ``gathered()`` returns the whole ``[C, D]`` (tests, export of
    centres); training never forms it.
    """

    def __init__(self, num_classes, embedding_size, num_replicas, local_replicas, seed=0):
        """``local_replicas``: ``[(global replica id, device or None)]`` (``from_strategy`` finds them).

        Centres start as glorot_uniform of the full ``[D, C]`` kernel (the mirrored head's initializer), drawn per
        shard from ``seed`` and the shard's first class."""
        self.num_classes, self.embedding_size, self.num_replicas = int(num_classes), int(embedding_size), num_replicas
        self.ranges = class_ranges(self.num_classes, num_replicas)
        limit = math.sqrt(6.0 / (self.num_classes + self.embedding_size))
        self._shards = {}
        for replica, device in local_replicas:
            start, stop = self.ranges[replica]
            with tf.device(device):
                init = tf.random.stateless_uniform([stop - start, self.embedding_size], seed=[seed, start],
                                                   minval=-limit, maxval=limit)
                centres = tf.Variable(init, trainable=False, name=f"centres_{start}_{stop}")
                momentum = tf.Variable(tf.zeros_like(init), trainable=False, name=f"momentum_{start}_{stop}")
            self._shards[replica] = (centres, momentum)
        self._collected = {}   # other workers' shards, {replica: (centres, momentum)} on the CPU, while saving

    @classmethod
    def from_strategy(cls, strategy, config):
        """Returns the shards of this worker's replicas of ``strategy`` for ``config`` (``num_classes``,
        ``model.embedding_size``, ``seed``). Call it outside ``strategy.scope()`` (the shards are plain variables)."""
        return cls(config.num_classes, config.model.embedding_size, strategy.num_replicas_in_sync,
                   _local_replicas(strategy), seed=config.seed)

    @property
    def local_replicas(self):
        """The global ids of the replicas whose shards this worker holds, ascending."""
        return sorted(self._shards)

    def shard(self, replica):
        """Returns ``(centres, momentum)`` variables ``[stop - start, D]`` of ``replica``'s shard."""
        return self._shards[replica]

    def gathered(self):
        """Returns the centres of this worker's shards concatenated, float32 numpy ``[classes held, D]`` (all C on
        one worker)."""
        return tf.concat([self._shards[r][0] for r in self.local_replicas], axis=0).numpy()

    @contextlib.contextmanager
    def collected(self, strategy, keep):
        """Context for saving a multi-worker run: every worker calls it at the same point (it runs collectives);
        inside, a worker with ``keep`` True (the chief) also checkpoints every other worker's shards, so its
        checkpoint holds all C rows of ``centres`` and ``momentum`` and resumes on any number of workers and
        replicas. A no-op when this worker holds every shard.

        Why gathered to the chief rather than written by each worker: the workers then need no shared filesystem to
        save, and the checkpoint is one ordinary TensorFlow checkpoint. The cost: inside the context the chief holds
        the other workers' shards in host memory (2 x their classes x D x 4 bytes: 4.2 GB at C = 2,059,906, D = 512 on
        2 workers), and each chunk is all-gathered to every replica (``COLLECT_CHUNK_BYTES`` per replica at a time).
        """
        if len(self._shards) < self.num_replicas:
            self._collect(strategy, keep)
        try:
            yield self
        finally:
            self._collected = {}

    def _collect(self, strategy, keep):
        largest = max(stop - start for start, stop in self.ranges)
        rows = max(1, min(largest, COLLECT_CHUNK_BYTES // (2 * self.num_replicas * self.embedding_size * 4)))

        def chunk(first):
            replica = _replica_id()
            start, stop = self.ranges[replica]
            index = tf.minimum(tf.range(first, first + rows), stop - start - 1)   # the last chunk repeats a row
            part = tf.stack([tf.gather(table, index) for table in self._shards[replica]])
            return _all_gather(part[None], self.num_replicas)                           # [N, 2, rows, D]

        gather = tf.function(lambda first: strategy.run(chunk, args=(first,)))
        pieces = {r: [] for r in range(self.num_replicas) if r not in self._shards}
        for first in range(0, largest, rows):
            gathered = strategy.experimental_local_results(gather(tf.constant(first)))[0]
            if not keep:
                continue
            with tf.device("/cpu:0"):
                for replica, parts in pieces.items():
                    start, stop = self.ranges[replica]
                    if first < stop - start:
                        parts.append(tf.identity(gathered[replica, :, :min(rows, stop - start - first)]))
        if keep:
            with tf.device("/cpu:0"):
                self._collected = {r: tf.unstack(tf.concat(parts, axis=1)) for r, parts in pieces.items()}

    def _slice_spec(self, replica):
        start, stop = self.ranges[replica]
        return f"{self.num_classes} {self.embedding_size} {start},{stop - start}:0,{self.embedding_size}"

    def _gather_saveables_for_checkpoint(self):
        # Like ShardedVariable: one saveable per shard, each the slice of its class range. (The newer
        # _serialize_to_tensors path restores only one slice per key in TF 2.21.)
        def factory(index):
            def saveables(name):
                own = [saveable_object_util.ResourceVariableSaveable(self._shards[r][index], self._slice_spec(r), name)
                       for r in self.local_replicas]
                return own + [_CollectedSlice(tables[index], self._slice_spec(r), name)
                              for r, tables in sorted(self._collected.items())]
            return saveables

        return {key: factory(i) for i, key in enumerate((CENTRES_KEY, MOMENTUM_KEY))}

    def block(self, labels, step, rate, seed):
        """Per replica: the rows of its shard that take part in this step.

        Args:
          labels: int [b], the replica's identities (all-gathered here).
          step: int scalar, the update number (with ``seed``: the negatives drawn; reproducible on resume).
          rate: float in (0, 1], ``config.loss.partial_fc_rate``.
          seed: int, ``config.seed``.
        Returns:
          a ``ShardBlock``.
        """
        replica = _replica_id()
        start, stop = self.ranges[replica]
        centres, _ = self._shards[replica]
        labels_all = _all_gather(tf.cast(labels, tf.int32), self.num_replicas)
        owned = (labels_all >= start) & (labels_all < stop)
        local = tf.where(owned, labels_all - start, -1)
        keep = sample_size(rate, stop - start)
        if keep == stop - start:
            return ShardBlock(self, replica, tf.convert_to_tensor(centres), None, local)
        noise = tf.random.stateless_uniform(
            [stop - start], seed=tf.stack([tf.cast(seed, tf.int64),
                                           tf.cast(step, tf.int64) * self.num_replicas + replica]))
        positives = tf.boolean_mask(local, owned)
        noise = tf.tensor_scatter_nd_update(noise, positives[:, None], tf.fill(tf.shape(positives), 2.0))
        count = tf.maximum(keep, tf.reduce_sum(tf.cast(noise > 1.0, tf.int32)))
        index = tf.sort(tf.math.top_k(noise, count).indices)
        target = tf.where(owned, tf.searchsorted(index, local), -1)
        return ShardBlock(self, replica, tf.gather(centres, index), index, target)


class _CollectedSlice(saveable_object.SaveableObject):
    """Saves another worker's shard (a tensor collected by ``ShardedCentres.collected``) as its slice; never
    restored into (restoring fills only this worker's own shards)."""

    def __init__(self, tensor, slice_spec, name):
        super().__init__(tensor, [saveable_object.SaveSpec(tensor, slice_spec, name)], name)

    def restore(self, restored_tensors, restored_shapes):
        del restored_tensors, restored_shapes
        return tf.no_op()


class ShardBlock:
    """One replica's part of a step: ``rows`` float32 [k, D] (the centres taking part; the tape watches them),
    ``index`` int32 [k] (their rows in the shard, ascending; None when all rows take part) and ``target`` int32 [B]
    (each global-batch example's target row among ``rows``, -1 where another shard owns it)."""

    def __init__(self, centres, replica, rows, index, target):
        self.centres, self.replica, self.rows, self.index, self.target = centres, replica, rows, index, target

    @property
    def num_replicas(self):
        """N, the replicas the classes are split over."""
        return self.centres.num_replicas

    def identity_terms(self, embedding, scale, margin, focal_gamma=0.0):
        """The ArcFace identity terms of the replica's own examples.

        Args:
          embedding: float [b, D], the replica's embeddings (all-gathered here, gradient included).
          scale, margin: ArcFace s and m (m may be a scalar tensor).
          focal_gamma: > 0 for the focal loss.
        Returns:
          dict of float32 [b]: ``arcface`` (-log p of the label over all classes of the step: every class at rate 1,
          the sampled ones below) and ``identity_correct`` (1 where the label's plain cosine is the largest among
          those classes).
        """
        n = self.num_replicas
        embedding = tf.cast(embedding, tf.float32)
        cos = cosine_logits(_all_gather(embedding, n), tf.transpose(self.rows))          # [B, k]
        target_mask = tf.one_hot(self.target, tf.shape(cos)[1], dtype=cos.dtype)       # all-zero rows: not owned
        logits = margin_logits(cos, target_mask, s=scale, m=margin)
        plain = tf.stop_gradient(cos)
        maxima = _all_gather(tf.stack([tf.stop_gradient(tf.reduce_max(logits, 1)), tf.reduce_max(plain, 1)])[None],
                             n)                                                        # [N, 2, B]
        maxima = tf.reduce_max(maxima, axis=0)
        shift, best_cos = maxima[0], maxima[1]
        sums = _all_reduce_sum(tf.stack([tf.reduce_sum(tf.exp(logits - shift[:, None]), 1),
                                         tf.reduce_sum(logits * target_mask, 1),
                                         tf.reduce_sum(plain * target_mask, 1)]), n)   # [3, B]
        log_p = sums[1] - shift - tf.math.log(sums[0])
        correct = tf.cast(sums[2] >= best_cos, tf.float32)
        batch = tf.shape(embedding)[0]
        own = tf.range(self.replica * batch, (self.replica + 1) * batch)
        return {"arcface": identity_loss_from_log_prob(tf.gather(log_p, own), focal_gamma),
                "identity_correct": tf.gather(correct, own)}

    def reg_loss(self, weight_decay):
        """``weight_decay * sum(centres**2)`` over the replica's whole shard (float32 scalar; summed over replicas
        it is the mirrored head's L2 loss). Its gradient is added in ``apply``."""
        centres, _ = self.centres.shard(self.replica)
        return weight_decay * tf.reduce_sum(tf.square(centres))

    def apply(self, grad, learning_rate, momentum, weight_decay):
        """SGD with momentum on the rows that took part: ``g = grad + 2 * weight_decay * rows``,
        ``m = momentum * m - learning_rate * g``, ``rows += m`` (the rest of the shard and its momentum unchanged).
        ``grad``: float32 [k, D], the loss gradient with respect to ``rows``. Returns the update op."""
        centres, velocity = self.centres.shard(self.replica)
        grad = grad + 2.0 * weight_decay * self.rows
        if self.index is None:
            update = momentum * velocity - learning_rate * grad
            return tf.group(velocity.assign(update), centres.assign_add(update))
        update = momentum * tf.gather(velocity, self.index) - learning_rate * grad
        return tf.group(velocity.scatter_update(tf.IndexedSlices(update, self.index)),
                        centres.scatter_add(tf.IndexedSlices(update, self.index)))
