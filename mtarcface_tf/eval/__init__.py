"""Evaluation: insightface verification protocol on clean/masked/mixed pairs, mask usage, reports."""
from mtarcface_tf._lazy import lazy_exports

_EXPORTS = {
    "evaluate": "verification",
    "recommend_threshold": "verification",
    "make_embed_fn": "embeddings",
    "extract": "embeddings",
    "EmbedFn": "embeddings",
    "EmbeddingSourceError": "embeddings",
    "mask_usage_metrics": "mask_usage",
    "VerificationEvaluator": "evaluator",
    "write_report": "report",
    "compare_table": "report",
    "load_report": "report",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
