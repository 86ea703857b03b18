"""Evaluation: insightface verification protocol on clean/masked/mixed pairs, mask usage, reports."""
from mtarcface_tf.eval.embeddings import extract
from mtarcface_tf.eval.evaluator import VerificationEvaluator
from mtarcface_tf.eval.mask_usage import mask_usage_metrics
from mtarcface_tf.eval.report import compare_table, load_report, write_report
from mtarcface_tf.eval.verification import evaluate, recommend_threshold

__all__ = ["VerificationEvaluator", "compare_table", "evaluate", "extract", "load_report", "mask_usage_metrics",
           "recommend_threshold", "write_report"]
