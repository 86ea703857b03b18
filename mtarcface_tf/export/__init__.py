"""Export: SavedModel with TF Serving signatures, TFLite, and the one loader of every model source
(``make_embed_fn``: Keras model / SavedModel / training workdir -> embed function + metadata)."""
from mtarcface_tf.export.embedder import EmbedFn, l2_normalize, make_embed_fn
from mtarcface_tf.export.saved_model import (SERVING_SIGNATURE, ExportError, export_saved_model, find_saved_model,
                                             next_version_dir, read_metadata, read_report_threshold)
from mtarcface_tf.export.tflite import convert_tflite, export_tflite

__all__ = ["EmbedFn", "ExportError", "SERVING_SIGNATURE", "convert_tflite", "export_saved_model", "export_tflite",
           "find_saved_model", "l2_normalize", "make_embed_fn", "next_version_dir", "read_metadata",
           "read_report_threshold"]
