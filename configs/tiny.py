"""A tiny MTArcFace run on SynthFaces: the same code paths as configs/paper.py, a few minutes on 2 CPU cores.

Run:
  python tools/train.py --config=configs/tiny.py --workdir=runs/tiny

Generates a small SynthFaces set in the workdir on first use, trains a small LResNet (same residual units,
one per stage, a quarter of the channels) on 64x64 faces for 300 steps and evaluates on masked and clean
pairs. The loss should fall from ~14 to well below 10 and mask-usage accuracy should pass 95%.
"""
from mtarcface_tf.configs import common


def get_config():
    """Returns the tiny config."""
    config = common.base_config()
    config.batch_size = 64
    config.num_steps = 300
    config.strategy = "default"

    config.model.units = (1, 1, 1, 1)
    config.model.width = 0.25
    config.model.input_size = 64
    config.model.embedding_size = 128

    config.loss.arcface_scale = 32.0
    config.loss.margin_warmup_steps = 60

    config.data.shuffle_buffer = 2_000
    config.data.synthetic.identities = 100
    config.data.synthetic.images_per_identity = 30
    config.data.synthetic.eval_identities = 40
    config.data.synthetic.eval_pairs = 400
    config.data.synthetic.image_size = 64
    config.num_classes = config.data.synthetic.identities

    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 2e-3
    config.optimizer.schedule = "cosine"

    config.log_every_secs = 5.0
    config.checkpoint_every = 100
    config.eval.every = 150
    config.eval.batch_size = 128
    return config
