"""Export: SavedModel with serving signatures for TF Serving."""
from mtarcface_tf._lazy import lazy_exports

_EXPORTS = {"export_saved_model": "saved_model"}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
