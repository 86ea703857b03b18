"""MTArcFace on SynthFaces at laptop scale: the model half of the one-command demo (`make demo`).

Run on its own (tools/demo.py runs it next to configs/demo_arcface.py and compares the two):
  python tools/train.py --config=configs/demo_mtarcface.py --workdir=runs/demo_mtarcface

A small LResNet with the same residual units as LResNet-50 (stem 16 channels, stages 16/32/64/128 with one unit
each, 128-d embedding) on 64x64 SynthFaces, masks painted with probability 0.5, mask head on. Adam 2e-3 with cosine
decay (at this tiny budget it trains far faster than the paper's SGD; configs/paper.py keeps SGD), ArcFace s=32,
m=0.5 warmed up over the first 20% of steps, batch 128, 300 steps (~38k images). Should reach masked and mixed
accuracy clearly above configs/demo_arcface.py, clean accuracy within about a point of it, mask accuracy >= 99%.
"""
from mtarcface_tf.configs import common

DEMO_STEPS = 300


def get_config():
    """Returns the demo MTArcFace config."""
    config = common.base_config()
    config.batch_size = 128
    config.num_steps = DEMO_STEPS
    config.strategy = "default"

    config.model.units = (1, 1, 1, 1)
    config.model.width = 0.25
    config.model.input_size = 64
    config.model.embedding_size = 128

    config.loss.arcface_scale = 32.0
    config.loss.margin_warmup_steps = DEMO_STEPS // 5

    config.data.shuffle_buffer = 10_000
    config.data.synthetic.identities = 600
    config.data.synthetic.images_per_identity = 20
    config.data.synthetic.eval_identities = 300
    config.data.synthetic.eval_pairs = 3000
    config.data.synthetic.image_size = 64
    config.data.synthetic.spread = 0.85
    config.data.synthetic.pose.update(rotation=12.0, scale=0.08, shift=4.0, yaw=20.0)
    config.num_classes = config.data.synthetic.identities

    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 2e-3
    config.optimizer.schedule = "cosine"

    config.log_every_secs = 10.0
    config.checkpoint_every = 100
    config.evals.verification.every = DEMO_STEPS
    config.evals.verification.batch_size = 256
    return config
