"""Model: LResNet backbones, heads, ArcFace logits and the MTArcFace loss (keras.ops only)."""
from mtarcface_tf._lazy import lazy_exports

_EXPORTS = {
    "build_lresnet": "lresnet",
    "build_lresnet50": "lresnet",
    "build_mtarcface": "build",
    "arcface_logits": "arcface",
    "mtarcface_loss": "losses",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
