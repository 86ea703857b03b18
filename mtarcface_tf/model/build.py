"""Assembles the training network from a config: backbone features -> embedding (+ mask) heads, plus ArcFace centres."""
import keras
import ml_collections

from mtarcface_tf.model.heads import ArcFaceHead, mask_head
from mtarcface_tf.model.inception_resnet_v1 import BLOCKS, inception_resnet_v1_features
from mtarcface_tf.model.lresnet import embedding_head, lresnet_features
from mtarcface_tf.model.normalization import BATCH_NORM, DEFAULT_NORM, RENORM_CLIPPING, RENORM_MOMENTUM, check_norm


def norm_args(cfg):
    """Returns the normalization keywords of ``lresnet_features`` / ``embedding_head`` from a model config
    (``norm``, ``renorm_clipping``, ``renorm_momentum``; configs written before these keys get the defaults)."""
    clipping = cfg.get("renorm_clipping", None)
    return {"norm": check_norm(cfg.get("norm", DEFAULT_NORM)),
            "renorm_clipping": dict(clipping) if clipping else dict(RENORM_CLIPPING),
            "renorm_momentum": cfg.get("renorm_momentum", RENORM_MOMENTUM)}


def _lresnet(inputs, cfg):
    return lresnet_features(inputs, depth=cfg.depth, width=cfg.width, units=tuple(cfg.units) or None,
                            dropout=cfg.dropout, weight_decay=cfg.weight_decay,
                            bn_momentum=cfg.bn_momentum, bn_epsilon=cfg.bn_epsilon, **norm_args(cfg))


def _inception_resnet_v1(inputs, cfg):
    if norm_args(cfg)["norm"] != BATCH_NORM:
        raise ValueError(f"config.model.norm={cfg.norm!r}: the inception_resnet_v1 backbone has plain "
                         f"BatchNormalization only; use config.model.norm='{BATCH_NORM}'")
    # config.model.units, when given, holds the repeats of block35, block17 and block8.
    return inception_resnet_v1_features(inputs, blocks=tuple(cfg.units) or BLOCKS, width=cfg.width,
                                        dropout=cfg.dropout, weight_decay=cfg.weight_decay,
                                        bn_momentum=cfg.bn_momentum, bn_epsilon=cfg.bn_epsilon)


# The paper's network: LResNet-50, 112x112 input, 512-d embedding, mask head. ``build_mtarcface(n)`` without a config
# builds it, and configs/common.py starts every config's ``model`` part from it.
PAPER_MODEL = dict(
    backbone="lresnet",     # a FEATURE_BUILDERS key: "lresnet" | "inception_resnet_v1"
    depth=50,               # 18 | 34 | 50 | 100 (units per stage from the depth)
    units=(),               # lresnet: units per stage (overrides depth); inception: block repeats
    width=1.0,              # multiplier of filters [64, 64, 128, 256, 512]
    input_size=112,
    embedding_size=512,
    dropout=0.4,
    weight_decay=5e-4,
    bn_momentum=0.9,
    bn_epsilon=2e-5,
    # "batch_norm" (resnet.py) | "batch_renorm" (resnet_batchRenorm.py: renorm, L2 on BN betas too); the layer is
    # resnet.py's by default, configs/paper.py picks what the reference's training scripts train: batch_renorm.
    norm=DEFAULT_NORM,
    renorm_clipping=dict(RENORM_CLIPPING),   # rmax, rmin, dmax
    renorm_momentum=RENORM_MOMENTUM,
    mask_head=True,         # False: the plain ArcFace baseline
    # "mirrored": every replica holds all class centres (the paper); "sharded": replica r holds classes
    # [r*C/N, (r+1)*C/N) (Partial FC, mtarcface_tf/train/partial_fc.py), so the network itself holds none.
    head="mirrored",
)

HEADS = ("mirrored", "sharded")


def paper_model_config():
    """Returns a new ``ml_collections.ConfigDict`` of ``PAPER_MODEL`` (a config's ``model`` part)."""
    return ml_collections.ConfigDict(PAPER_MODEL)


# A new backbone is a function (inputs, model_config) -> flattened features [B, F]; register it here.
FEATURE_BUILDERS = {"lresnet": _lresnet, "inception_resnet_v1": _inception_resnet_v1}


def _model_config(config):
    if config is None:
        return paper_model_config()
    return config.model if "model" in config else config


def build_backbone(config=None):
    """Returns a functional Keras model: normalized image [B, S, S, 3] -> ``{"embedding": [B, D]}`` and, when
    ``config.mask_head``, ``"mask_logits": [B, 2]``. ``config`` is a full config or its ``model`` part (None: the
    paper's).
    """
    cfg = _model_config(config)
    if cfg.backbone not in FEATURE_BUILDERS:
        raise ValueError(f"config.model.backbone={cfg.backbone!r}: choose one of {sorted(FEATURE_BUILDERS)}")
    inputs = keras.Input(shape=(cfg.input_size, cfg.input_size, 3), name="image")
    features = FEATURE_BUILDERS[cfg.backbone](inputs, cfg)
    outputs = {"embedding": embedding_head(features, cfg.embedding_size, cfg.weight_decay,
                                           cfg.bn_momentum, cfg.bn_epsilon, **norm_args(cfg))}
    if cfg.mask_head:
        outputs["mask_logits"] = mask_head(features, cfg.weight_decay)
    return keras.Model(inputs, outputs, name=f"{cfg.backbone}_backbone")


def backbone_of(model):
    """Returns the inference network of ``model``: an ``MTArcFace``'s ``.backbone`` (image -> embedding, mask
    probability), or ``model`` itself when it is already a backbone."""
    return getattr(model, "backbone", model)


class MTArcFace(keras.Model):
    """The training network: ``model(images)`` -> dict of heads; ``model.arcface`` holds the class centres.

    ``backbone`` is the part that is exported and used by applications; ``arcface`` is used by the loss only. With
    ``head="sharded"`` ``arcface`` is None: the trainer keeps the centres split over the replicas.
    """

    def __init__(self, backbone, num_classes, weight_decay=5e-4, head="mirrored", **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.arcface = None
        if head == "mirrored":
            self.arcface = ArcFaceHead(num_classes, weight_decay, name="arcface")
            self.arcface.build((None, backbone.output["embedding"].shape[-1]))

    @property
    def has_mask_head(self):
        """True when the network predicts mask usage."""
        return "mask_logits" in self.backbone.output

    def call(self, images, training=False):
        return self.backbone(images, training=training)


def build_mtarcface(num_classes, config=None):
    """Returns the MTArcFace training network for ``num_classes`` identities.

    Calling it on normalized images [B, S, S, 3] gives ``{"embedding": (B, D), "mask_logits": (B, 2)}`` (no
    ``mask_logits`` when ``config.model.mask_head`` is False: the ArcFace baseline). ``config``: a full config or its
    ``model`` part; None builds the paper's network (LResNet-50, 112x112, 512-d). ``config.model.head ==
    "sharded"`` leaves the class centres out (``model.arcface`` is None; see ``mtarcface_tf.train.partial_fc``).
    """
    cfg = _model_config(config)
    head = cfg.get("head", "mirrored")
    if head not in HEADS:
        raise ValueError(f"config.model.head={head!r}: choose one of {HEADS}")
    model = MTArcFace(build_backbone(cfg), num_classes, cfg.weight_decay, head=head, name="mtarcface")
    model.build((None, cfg.input_size, cfg.input_size, 3))
    return model
