"""The paper's ArcFace baseline: the same LResNet-50 and schedule, no mask head and no mask augmentation.

Run:
  python tools/train.py --config=configs/arcface_baseline.py --workdir=runs/arcface \
      --config.data.train=/data/ms1mv2_tfrecords

Clean accuracy like MTArcFace; clearly lower accuracy on masked and mixed pairs (the paper's comparison).
"""
from mtarcface_tf.configs import common


def get_config():
    """Returns the ArcFace-only config."""
    config = common.base_config()
    config.model.mask_head = False
    config.data.mask_probability = 0.0
    return config
