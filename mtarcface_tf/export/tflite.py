"""TFLite conversion of an exported SavedModel's ``serving_default`` signature, and a parity check.

The TFLite model keeps the signature's contract: uint8 RGB [B, S, S, 3] in, ``embedding`` (L2-normalized) and
``mask_prob`` out; normalization stays inside the graph.
"""
import os

import numpy as np
import tensorflow as tf

from mtarcface_tf.atomic import write_bytes
from mtarcface_tf.export.embedder import l2_normalize, make_embed_fn
from mtarcface_tf.model.build import backbone_of
from mtarcface_tf.export.saved_model import SERVING_SIGNATURE

QUANTIZATIONS = ("float", "dynamic_int8")


def convert_tflite(saved_model_dir, quantization="float"):
    """Converts ``saved_model_dir``'s ``serving_default`` signature to a TFLite flatbuffer.

    Args:
      saved_model_dir: a directory written by ``export_saved_model``.
      quantization: "float" (float32 weights) or "dynamic_int8" (int8 weights, float activations).

    Returns:
      bytes: the .tflite model.

    Raises:
      ValueError: unknown ``quantization``.
    """
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization={quantization!r}: choose one of {QUANTIZATIONS}.")
    # from_concrete_functions freezes the variables; from_saved_model keeps them as resource variables that
    # the TFLite interpreter leaves uninitialized (NaN outputs) for this tf.Module layout.
    loaded = tf.saved_model.load(os.fspath(saved_model_dir))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([loaded.signatures[SERVING_SIGNATURE]], loaded)
    if quantization == "dynamic_int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return converter.convert()


def run_tflite(tflite_model, images):
    """Runs a converted model's ``serving_default`` signature.

    Args:
      tflite_model: bytes from ``convert_tflite``.
      images: uint8 [B, S, S, 3] RGB.

    Returns:
      dict output name -> numpy array ([B, D] ``embedding``, [B, 2] ``mask_prob``), one image at a time stacked.
    """
    interpreter = tf.lite.Interpreter(model_content=tflite_model)
    runner = interpreter.get_signature_runner(SERVING_SIGNATURE)
    rows = [runner(images=np.asarray(image, np.uint8)[None]) for image in images]
    return {name: np.concatenate([row[name] for row in rows]) for name in rows[0]}


def tflite_parity(tflite_model, model, images):
    """Compares a TFLite model with the Keras model on the same images.

    Args:
      tflite_model: bytes from ``convert_tflite``.
      model: the Keras model that was exported.
      images: uint8 [B, S, S, 3] RGB.

    Returns:
      dict: ``max_abs_diff`` (float, embeddings), ``min_cosine`` (float, lowest per-image cosine similarity of the
      two embeddings) and, with a mask head, ``mask_prob_max_abs_diff``.
    """
    lite = run_tflite(tflite_model, images)
    embeddings, mask_prob = make_embed_fn(backbone_of(model))(images)
    reference = {"embedding": l2_normalize(embeddings), "mask_prob": mask_prob}
    result = {
        "max_abs_diff": float(np.max(np.abs(lite["embedding"] - reference["embedding"]))),
        "min_cosine": float(np.min(np.sum(l2_normalize(lite["embedding"]) * reference["embedding"], axis=-1))),
    }
    if mask_prob is not None:
        result["mask_prob_max_abs_diff"] = float(np.max(np.abs(lite["mask_prob"] - reference["mask_prob"])))
    return result


def export_tflite(saved_model_dir, model, output_dir, num_images=4, seed=0):
    """Writes ``model_float.tflite`` and ``model_dynamic_int8.tflite`` of an export and checks them against Keras.

    Args:
      saved_model_dir: a directory written by ``export_saved_model`` from ``model``.
      model: the exported Keras model (parity reference).
      output_dir: folder for the .tflite files (created).
      num_images: random uint8 images used for the parity check.
      seed: seed of those images.

    Returns:
      dict quantization -> {"path": str, "bytes": int, **tflite_parity(...)}.
    """
    os.makedirs(output_dir, exist_ok=True)
    size = int(backbone_of(model).input.shape[1])
    images = np.random.default_rng(seed).integers(0, 256, (num_images, size, size, 3), dtype=np.uint8)
    results = {}
    for quantization in QUANTIZATIONS:
        payload = convert_tflite(saved_model_dir, quantization)
        path = os.path.join(output_dir, f"model_{quantization}.tflite")
        write_bytes(path, payload)
        results[quantization] = {"path": path, "bytes": len(payload), **tflite_parity(payload, model, images)}
    return results
