"""The paper's ArcFace baseline: the same LResNet-50 and schedule, no mask head and no mask augmentation.

Run:
  python tools/train.py --config=configs/arcface_baseline.py --workdir=runs/arcface \
      --config.data.train=/data/ms1mv2_tfrecords

Clean accuracy like MTArcFace; clearly lower accuracy on masked and mixed pairs (the paper's comparison).
The network is the reference's resnet_batchRenorm.py (config.model.norm='batch_renorm'): both of its training
scripts build it and its published MS1M models B and C were trained with it.
"""
from mtarcface_tf.configs import common
from mtarcface_tf.model import normalization


def get_config():
    """Returns the ArcFace-only config."""
    config = common.base_config()
    config.model.mask_head = False
    config.model.norm = normalization.BATCH_RENORM
    config.data.mask_probability = 0.0
    return config
