"""ArcFace with focal loss (gamma 2) on the LResNet, as a baseline, at the laptop scale of the demo configs.

Run:
  python tools/train.py --config=configs/arcface_focal.py --workdir=runs/arcface_focal

configs/demo_mtarcface.py's network, data (64x64 SynthFaces, masks painted with probability 0.5), schedule and
seed, without the mask head; the identity term is the focal loss -(1 - p)^2 log p on the ArcFace logits. With
--config.model.mask_head=True it is MTArcFace with focal loss. Paper scale: start from configs/paper.py and set
model.mask_head=False, loss.focal_gamma=2.0. What it is for: tells whether re-weighting hard examples helps on
masked faces; it should reach about the masked accuracy of the demo's ArcFace trained on masked faces, with no
mask-usage output.
"""
from mtarcface_tf.configs import demo_mtarcface


def get_config():
    """Returns the ArcFace + focal config."""
    config = demo_mtarcface.get_config()
    config.model.mask_head = False
    config.loss.focal_gamma = 2.0
    return config
