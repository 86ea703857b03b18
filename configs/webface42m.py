"""MTArcFace on WebFace42M (2,059,906 identities, 42.5M images) with the class-sharded head and Partial FC 0.2.

Run on one machine with 8 GPUs:
  python tools/train.py --config=configs/webface42m.py --workdir=runs/webface42m \
      --config.data.train=/data/webface42m_tfrecords \
      --config.evals.verification.bins=/data/lfw.bin,/data/cfp_fp.bin,/data/agedb_30.bin
On 2 machines of 8 GPUs: the same command on each with --config.strategy=multi_worker and TF_CONFIG naming both
(see docs/partial_fc.md); keep the global batch (the per-GPU batch halves) or double it with the learning rate.
(The TFRecords come from the WebFace42M release's RecordIO: see docs/partial_fc.md.)

The recipe of arcface_torch's configs/wf42m_pfc02_8gpus_r50_bs4k.py: 512 images per GPU x 8 = global batch 4096,
SGD momentum 0.9, lr 0.4, 20 epochs (207,395 steps) with 2 warmup epochs (20,739 steps), sample rate 0.2 (each GPU's
softmax holds its positives plus negatives up to 0.2 x 257,488 classes), weight decay 5e-4 (torch's coefficient;
2.5e-4 as our L2 loss). Differences as in configs/glint360k.py: the paper's LResNet-50 with its mask head, ArcFace
margin 0.5 (arcface_torch: CosFace 0.4), cosine decay instead of polynomial. Mask augmentation as the paper (p 0.5,
landmark-fitted). What it should reach: the figures of arcface_torch's R50 WebFace42M PFC-0.2 model in its model zoo
on clean pairs (Partial FC at 0.2 loses no accuracy there) and the paper's ~99.8% mask-usage accuracy. Not run at
this scale here.
Per-replica head memory: 2,059,906 / 8 x 512 x 4 B x 2 = 1.05 GB (the mirrored head: 8.4 GB on every GPU).
"""
from mtarcface_tf.configs import common

IMAGES = 42_474_557
EPOCHS = 20
WARMUP_EPOCHS = 2
GLOBAL_BATCH = 4096


def get_config():
    """Returns the WebFace42M config (sharded head, Partial FC rate 0.2)."""
    config = common.base_config()
    config.num_classes = 2_059_906
    config.batch_size = GLOBAL_BATCH
    config.num_steps = IMAGES * EPOCHS // GLOBAL_BATCH
    config.model.head = "sharded"
    config.model.weight_decay = 2.5e-4
    config.loss.partial_fc_rate = 0.2
    config.optimizer.update(name="sgd", learning_rate=0.4, momentum=0.9, schedule="cosine",
                            warmup_steps=IMAGES * WARMUP_EPOCHS // GLOBAL_BATCH)
    config.checkpoint_every = 5000
    config.evals.verification.every = 20_000
    return config
