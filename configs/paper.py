"""MTArcFace exactly as published (arXiv 2104.09874): LResNet-50 on MS1MV2 with synthetic masks.

Run:
  python tools/train.py --config=configs/paper.py --workdir=runs/paper \
      --config.data.train=/data/ms1mv2_tfrecords \
      --config.evals.verification.bins=/data/lfw.bin,/data/cfp_fp.bin,/data/agedb_30.bin

Two GPUs with MirroredStrategy, global batch 512, SGD momentum 0.9, lr 0.0015 (x0.3 at 100k and 180k steps),
300k steps, each image masked with probability 0.5, the mask fitted to the image's landmarks as MaskTheFace fits
them (config.data.mask_placement="landmarks"; records need the landmarks feature: add it once with
`python tools/convert.py --source=tfrecord --add_landmarks --input=/data/ms1mv2_tfrecords
--output_dir=/data/ms1mv2_landmarks`: O-Net on the template's face box, RetinaFace where it is unsure; records without
it get template-placed masks). Should reach about LFW 99.7 / CFP-FP 94 / AgeDB-30 96.5 on clean pairs and ~99.8%
mask-usage accuracy (the paper's figures).
The network is the reference's resnet_batchRenorm.py (config.model.norm='batch_renorm'): both of its training
scripts build it and its published MS1M models B and C were trained with it.
"""
from mtarcface_tf.configs import common
from mtarcface_tf.model import normalization


def get_config():
    """Returns the paper's config."""
    config = common.base_config()
    config.model.norm = normalization.BATCH_RENORM
    return config
