"""The ArcFace baseline of the one-command demo: configs/demo_mtarcface.py without masks and without mask head.

Run on its own:
  python tools/train.py --config=configs/demo_arcface.py --workdir=runs/demo_arcface

Same network, data, schedule and seed as the MTArcFace demo model. Should reach about the same clean accuracy and
clearly lower accuracy on masked and mixed pairs, which is the paper's point in miniature.
"""
from mtarcface_tf.configs import demo_mtarcface


def get_config():
    """Returns the demo ArcFace-only config."""
    config = demo_mtarcface.get_config()
    config.model.mask_head = False
    config.data.mask_probability = 0.0
    return config
