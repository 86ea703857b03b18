"""MTArcFace fine-tuned from the reference's published LResNet-50 weights (dmonterom/face_recognition_TF2).

Run (after downloading a reference checkpoint, e.g. /data/reference/ckpt):
  python tools/import_reference.py --checkpoint=/data/reference/ckpt --workdir=runs/finetune
  python tools/train.py --config=configs/finetune_mtarcface.py --workdir=runs/finetune \
      --config.data.train=/data/ms1mv2_tfrecords --config.evals.verification.bins=/data/lfw.bin,/data/cfp_fp.bin

The import writes step 0 of this config's run (same architecture: LResNet-50, 112x112, 512-d, mask head); the
trainer resumes from it with a fresh optimizer. The backbone and ArcFace centres start from the reference
(centres only when --config.num_classes equals the checkpoint's 85,742 MS1MV2 identities; import with the same
--num_classes otherwise); the mask head starts fresh, so the learning rate warms up and stays at the reference's
final rate (0.0015 x 0.3 x 0.3). What it is for: the paper's multi-task model without the 300k-step run. It should
keep the reference's clean accuracy (LFW ~99.7) while masked-pair accuracy and mask-usage accuracy (~99.8%) rise
within a few thousand steps.
The network is the reference's resnet_batchRenorm.py (config.model.norm='batch_renorm'): both of its training
scripts build it and its published MS1M models B and C were trained with it.
The import writes the network the checkpoint holds into the workdir's config (plain-BN model A: batch_norm);
resume with --config.model.norm=batch_norm for such a workdir.
"""
from mtarcface_tf.configs import common
from mtarcface_tf.model import normalization


def get_config():
    """Returns the fine-tuning config."""
    config = common.base_config()
    config.model.norm = normalization.BATCH_RENORM
    config.num_steps = 20_000
    config.optimizer.learning_rate = 0.0015 * 0.3 * 0.3
    config.optimizer.schedule = "constant"
    config.optimizer.warmup_steps = 1_000
    config.checkpoint_every = 1_000
    config.evals.verification.every = 2_000
    return config
