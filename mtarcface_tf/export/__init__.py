"""Export: SavedModel with serving signatures for TF Serving, TF Serving's REST format, TFLite."""
from mtarcface_tf._lazy import lazy_exports

_EXPORTS = {
    "export_saved_model": "saved_model",
    "next_version_dir": "saved_model",
    "find_saved_model": "saved_model",
    "ExportError": "saved_model",
    "rest_instances_to_inputs": "rest",
    "convert_tflite": "tflite",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
