"""Model: LResNet backbones, heads, ArcFace logits and the MTArcFace loss (keras.ops only)."""
from mtarcface_tf._lazy import lazy_exports

_EXPORTS = {
    "build_lresnet": "lresnet",
    "build_lresnet50": "lresnet",
    "build_mtarcface": "build",
    "arcface_logits": "arcface",
    "mtarcface_loss": "losses",
    "triplet_loss": "losses",
    "focal_cross_entropy": "losses",
    "inception_resnet_v1_features": "inception_resnet_v1",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
