"""FaceNet's triplet loss as a baseline, on SynthFaces at the size of configs/tiny.py.

Run:
  python tools/train.py --config=configs/triplet.py --workdir=runs/triplet

Same small LResNet (one unit per stage, a quarter of the channels, 128-d, 64x64 faces), masks painted with
probability 0.5, no mask head; the identity term is the triplet loss (margin 0.2, batch-hard mining) on P x K
batches (16 identities x 4 images), and the ArcFace centres go unused. It logs the fraction of active triplets
and the positive / negative distances. What it is for: the metric-learning baseline of the comparison; at this
budget it should learn (masked verification clearly above 50%, active fraction falling). Trained on masked faces,
it can match or pass MTArcFace's masked and mixed accuracy on SynthFaces (`python tools/demo.py --all_baselines`,
docs/results/baselines.json) while its TAR at FAR=1e-2 stays below MTArcFace's, and it has no mask-usage output.
"""
from mtarcface_tf.configs import tiny


def get_config():
    """Returns the triplet-loss config."""
    config = tiny.get_config()
    config.model.mask_head = False
    config.loss.type = "triplet"
    config.loss.triplet_margin = 0.2
    config.loss.triplet_mining = "batch_hard"
    config.loss.margin_warmup_steps = 0
    config.data.identities_per_batch = 16          # 64 images: 16 identities x 4
    return config
