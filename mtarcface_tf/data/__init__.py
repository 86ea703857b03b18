"""Data: TFRecord schema, readers of insightface formats, converters, masks, the tf.data pipeline, SynthFaces."""
from mtarcface_tf._lazy import lazy_exports

_EXPORTS = {
    "RecordIOReader": "recordio",
    "RecordIOError": "recordio",
    "load_bin": "bin_pairs",
    "save_bin": "bin_pairs",
    "UnsafeFileError": "bin_pairs",
    "BinFormatError": "bin_pairs",
    "read_bin_raw": "bin_pairs",
    "write_recordio": "recordio",
    "convert_recordio": "convert",
    "convert_folder": "convert",
    "convert_bin": "convert",
    "ConversionError": "convert",
    "MaskAugmenter": "masks",
    "normalize": "pipeline",
    "make_train_dataset": "pipeline",
    "make_eval_images_dataset": "pipeline",
    "CorruptRecordCounter": "pipeline",
    "masked_variants": "masked_pairs",
    "render_faces": "synthetic",
    "generate_dataset": "synthetic",
    "SyntheticDataError": "synthetic",
    "mask_labels_for": "masked_pairs",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
