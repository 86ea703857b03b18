"""The paper's MTArcFace recipe as one ml_collections ConfigDict; every other config starts from it.

Not a runnable config itself: run configs/paper.py, configs/arcface_baseline.py or configs/tiny.py.
Every number the code needs lives here (or in the config that overrides it), never in the library; the one
exception is the paper's network (``config.model``), whose defaults the model owns (``build_mtarcface`` without a
config builds it) and this file takes from ``mtarcface_tf.model.build.PAPER_MODEL``.
"""
import ml_collections

from mtarcface_tf.data import synthetic
from mtarcface_tf.model.build import paper_model_config


def inference_config(small=False):
    """Returns a config for timing inference: the paper's network or, with ``small``, its residual layout at one
    unit per stage and a quarter of the channels (the paper's input and embedding sizes either way); 10 class
    centres, which inference does not use."""
    config = base_config()
    config.num_classes = 10
    if small:
        config.model.units = (1, 1, 1, 1)
        config.model.width = 0.25
    return config


def base_config():
    """Returns the full MTArcFace config of the paper (LResNet-50, MS1MV2, SGD, 300k steps)."""
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.num_classes = 85742            # MS1MV2 identities
    config.batch_size = 512               # global batch; per replica = batch_size / replicas
    config.num_steps = 300_000
    config.grad_accum_steps = 1           # micro-batches per update (batch_size is the micro-batch x replicas)

    config.model = paper_model_config()   # LResNet-50, 112x112, 512-d, mask head: see mtarcface_tf/model/build.py

    config.loss = ml_collections.ConfigDict()
    config.loss.type = "arcface"          # "arcface" | "triplet"
    config.loss.arcface_scale = 64.0
    config.loss.arcface_margin = 0.5
    config.loss.margin_warmup_steps = 0   # margin ramps linearly from 0 over these steps
    config.loss.focal_gamma = 0.0         # > 0: focal loss on the ArcFace logits
    config.loss.triplet_margin = 0.2
    config.loss.triplet_mining = "batch_hard"   # "batch_all" | "batch_hard" | "semi_hard"
    # Partial FC (config.model.head = "sharded" only): the fraction of each replica's classes in the softmax of a
    # step, every positive of the global batch included (arcface_torch's sample_rate); 1.0 = the full softmax.
    config.loss.partial_fc_rate = 1.0

    config.data = ml_collections.ConfigDict()
    config.data.train = ""                # TFRecords: directory, *.manifest.json, glob or file
    config.data.mask_probability = 0.5    # 0 disables mask augmentation
    config.data.mask_placement = "landmarks"  # fitted to each record's landmarks (template where a record has none)
    config.data.flip = True
    config.data.shuffle_buffer = 20_000
    config.data.identities_per_batch = 0  # > 0: P identities x K images per batch (triplet training)
    # SynthFaces instead of real data when data.train is empty and identities > 0 (generated once, cached).
    config.data.synthetic = ml_collections.ConfigDict()
    config.data.synthetic.identities = 0
    config.data.synthetic.images_per_identity = 40
    config.data.synthetic.eval_identities = 0     # disjoint identities for the verification .bin
    config.data.synthetic.eval_pairs = 1000
    config.data.synthetic.image_size = 112        # rendered at 112, area-downsampled to this size
    config.data.synthetic.seed = 1234
    config.data.synthetic.spread = 1.0            # < 1: identities closer to each other (harder)
    # Per-image pose ranges (+-): rotation and yaw in degrees, scale a fraction, shift in template pixels.
    config.data.synthetic.pose = ml_collections.ConfigDict(synthetic.DEFAULT_POSE)

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "sgd"         # "sgd" | "adam"
    config.optimizer.learning_rate = 0.0015
    config.optimizer.momentum = 0.9
    config.optimizer.schedule = "piecewise"     # "piecewise" | "cosine" | "constant"
    config.optimizer.boundaries = (100_000, 180_000)   # at reference_batch_size; scaled by it / batch_size
    config.optimizer.decay_factor = 0.3
    config.optimizer.reference_batch_size = 512
    config.optimizer.warmup_steps = 0

    config.strategy = "mirrored"          # "default" | "mirrored" | "multi_worker"
    # "" | "mixed_float16" (GPU) | "mixed_bfloat16" (TPU; faster on CPUs with AVX512-BF16/AMX, slower on others:
    # bench/train_step.py)
    config.mixed_precision = ""
    config.jit_compile = True             # XLA for the forward/backward pass; used on GPU only (slower on CPU)

    config.log_every_secs = 10.0
    config.checkpoint_every = 1000
    config.keep_checkpoints = 5
    config.max_nonfinite = 5              # consecutive non-finite losses before the run stops

    # Evaluators (mtarcface_tf/eval/registry.py): NAME = dict(type=TYPE, every=STEPS, its settings...). The trainer
    # runs each every `every` steps (0: only at the end) and at the end; tools/evaluate.py and the demo build theirs
    # the same way. One with no data (no bins, no root) is switched off.
    config.evals = ml_collections.ConfigDict()
    # verification .bin files, comma-separated (a string, so that
    # --config.evals.verification.bins=/data/lfw.bin,/data/cfp_fp.bin parses as two paths); a SynthFaces run adds
    # its own .bin. far: FAR of the TAR@FAR figure and of the recommended threshold; it needs well over 1/far
    # different-identity pairs (insightface's protocol: LFW-sized sets have 3,000), or it rests on the top few
    # impostor scores
    config.evals.verification = dict(
        type="verification", every=10_000, bins="",
        masked=True,                      # also masked-masked and masked-clean variants
        flip=True, batch_size=128, far=1e-3)
    # IJB-B/C 1:1 template verification, clean and masked probes: --config.evals.ijb.root=/data/ijbc
    config.evals.ijb = dict(type="ijb", every=10_000, root="", name="IJBC", masked=True, flip=True, batch_size=128)
    # IJB-B/C 1:N identification (the set's meta/*_1N_*.csv lists): --config.evals.ijb_1n.root=/data/ijbc
    config.evals.ijb_1n = dict(type="ijb_1n", every=10_000, root="", name="IJBC", masked=True, flip=True,
                               batch_size=128, index="exact")
    return config
