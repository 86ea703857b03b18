"""Data: TFRecord schema and shards, readers of insightface formats, converters, masks, the tf.data pipeline,
SynthFaces.

The public names below load on first use (PEP 562 ``__getattr__``) rather than here, and this is the one package
that does so: SynthFaces renders in *spawn* worker processes that import ``mtarcface_tf.data.synthetic``, which runs
this file; importing the TensorFlow modules here would make every worker load TensorFlow (seconds and hundreds of
MB each) for drawing that needs only OpenCV. Library code imports the defining modules directly.
"""
import importlib

_EXPORTS = {
    "RecordIOReader": "recordio",
    "RecordIOError": "recordio",
    "write_recordio": "recordio",
    "load_bin": "bin_pairs",
    "save_bin": "bin_pairs",
    "read_bin_raw": "bin_pairs",
    "UnsafeFileError": "bin_pairs",
    "BinFormatError": "bin_pairs",
    "ShardedRecordWriter": "shards",
    "run_conversion": "shards",
    "convert_recordio": "convert",
    "convert_folder": "convert",
    "convert_bin": "convert",
    "ConversionError": "shards",
    "MaskAugmenter": "masks",
    "normalize": "pipeline",
    "make_train_dataset": "pipeline",
    "make_eval_images_dataset": "pipeline",
    "CorruptRecordCounter": "pipeline",
    "masked_variants": "masked_pairs",
    "mask_labels_for": "masked_pairs",
    "render_faces": "synthetic",
    "generate_dataset": "synthetic",
    "SyntheticDataError": "synthetic",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
