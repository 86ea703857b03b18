"""InceptionResNetV1 + ArcFace + focal loss (gamma 2): the strongest setting of the masked-face literature's
FaceNet-based projects, as a baseline, at a scale that runs on a laptop.

Run:
  python tools/train.py --config=configs/inception_arcface_focal.py --workdir=runs/inception_arcface_focal

FaceNet's InceptionResNetV1 (BN decay 0.995, epsilon 1e-3, dropout 0.2) needs inputs of at least 75 px, so the
SynthFaces are 112x112 here; to fit the demo budget the blocks are (1, 2, 1) instead of (5, 10, 5) and the width a
quarter. Masks painted with probability 0.5, no mask head, focal loss on ArcFace logits (s=32, m=0.5 warmed up).
Full network at paper scale: --config.model.units="()" --config.model.width=1.0 --config.model.input_size=160
--config.data.train=... (23.5M parameters at 512-d). What it is for: a different backbone family under the same
data and schedule; expect it a little below the LResNet runs at this tiny budget (and slower per image).
"""
from mtarcface_tf.configs import demo_mtarcface


def get_config():
    """Returns the InceptionResNetV1 + ArcFace + focal config."""
    config = demo_mtarcface.get_config()
    config.model.backbone = "inception_resnet_v1"
    config.model.units = (1, 2, 1)                 # block35, block17, block8 repeats (FaceNet: 5, 10, 5)
    config.model.width = 0.25
    config.model.input_size = 112
    config.model.dropout = 0.2
    config.model.bn_momentum = 0.995
    config.model.bn_epsilon = 1e-3
    config.model.mask_head = False
    config.loss.focal_gamma = 2.0
    config.data.synthetic.image_size = 112
    return config
