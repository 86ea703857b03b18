"""A tiny MTArcFace run on SynthFaces: the same code paths as configs/paper.py, a few minutes on 2 CPU cores.

Run:
  python tools/train.py --config=configs/tiny.py --workdir=runs/tiny

Generates a small SynthFaces set in the workdir on first use, trains a small LResNet (same residual units,
one per stage, a quarter of the channels) on 64x64 faces for 300 steps and evaluates on masked and clean
pairs. The loss should fall from ~14 to well below 10 and mask-usage accuracy should pass 95%.
"""
from mtarcface_tf.configs import demo_mtarcface


def get_config():
    """Returns the tiny config: the demo's MTArcFace network and recipe on less data, with a smaller batch."""
    config = demo_mtarcface.get_config()
    config.batch_size = 64
    config.data.shuffle_buffer = 2_000
    config.data.synthetic.identities = 100
    config.data.synthetic.eval_identities = 40
    config.data.synthetic.eval_pairs = 400
    config.num_classes = config.data.synthetic.identities
    config.log_every_secs = 5.0
    config.evals.verification.every = 150
    config.evals.verification.batch_size = 128
    return config
