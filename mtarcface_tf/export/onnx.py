"""ONNX export in the convention of insightface's recognition models (optional ``[onnx]`` extra: tf2onnx, onnxruntime).

insightface's recognition models take ``[N, 3, S, S]`` float32 RGB (S = 112 at the paper's size) that the caller
normalizes as ``(pixel - 127.5) / 127.5`` and return the raw (not L2-normalized) embedding. Our network was trained on
``(pixel - 127.5) * 0.0078125`` NHWC, so the graph starts with the one affine map between the two and reads NCHW.

Two files per export:

- ``model.onnx``: outputs ``embedding`` float32 [N, D] (raw) then ``mask_prob`` float32 [N, 2] (softmax; index 1 =
  mask; absent for a model without a mask head).
- ``insightface/model.onnx``: the same graph with the embedding output only, because insightface's ``ArcFaceONNX``
  asserts exactly one output. The folder can be used as ``~/.insightface/models/NAME`` (its loader takes the
  last ``*.onnx`` of a folder, and ``FaceAnalysis`` routes every file of it).

What insightface 2.1's ``ArcFaceONNX`` infers from the file (insightface/model_zoo/arcface_onnx.py, model_zoo.py):
the router calls it a recognition model when the model has fewer than 5 outputs and a square input of side 112 or
more, a multiple of 16, other than its landmark models' 192 (``routes_to_recognition``);
``input_mean``/``input_std`` are 0/1 ("mxnet model", normalization inside) when one of the first 8 node names
starts with ``Sub``/``_minus`` and one with ``Mul``/``_mul``, else 127.5/127.5; ``input_size`` = shape[2:4]
reversed; its ``get_feat`` then feeds ``cv2.dnn.blobFromImages(bgr, 1 / std, size, mean, swapRB=True)``, i.e.
RGB NCHW ``(pixel - mean) / std``. Our graph's first nodes are ``mul`` / ``Conv`` (no ``Sub``), so it infers
127.5 / 127.5, the normalization the graph expects; tests/test_onnx.py loads an export with insightface's client.
"""
import contextlib
import os

import numpy as np

from mtarcface_tf.atomic import atomic_directory, atomic_path
from mtarcface_tf.data import pipeline
from mtarcface_tf.export.embedder import l2_normalize

INPUT_NAME = "input"
BATCH_DIM = "N"
EMBEDDING, MASK_PROB = "embedding", "mask_prob"
INSIGHTFACE_MEAN, INSIGHTFACE_STD = 127.5, 127.5
# insightface 2.1's model_zoo router: recognition models have square inputs of side >= 112, a multiple of 16; 192 is
# taken first by its landmark class.
INSIGHTFACE_MIN_SIZE, INSIGHTFACE_SIZE_STEP, INSIGHTFACE_LANDMARK_SIZE = 112, 16, 192
OPSET = 13
MODEL_FILE = "model.onnx"
INSIGHTFACE_DIR = "insightface"
_CATCH_ERRORS = "TF2ONNX_CATCH_ERRORS"


def routes_to_recognition(size):
    """True when insightface's model_zoo loads a model of input side ``size`` (int) as a recognition model."""
    return (size >= INSIGHTFACE_MIN_SIZE and size % INSIGHTFACE_SIZE_STEP == 0
            and size != INSIGHTFACE_LANDMARK_SIZE)


class OnnxExportError(ValueError):
    """An ONNX export that cannot be written (missing extra, target exists, model unfit); names the fix."""


def require_onnx():
    """Returns the modules ``(onnx, tf2onnx)``; raises OnnxExportError naming the [onnx] extra when missing."""
    try:
        import onnx  # pylint: disable=import-outside-toplevel
        import tf2onnx  # pylint: disable=import-outside-toplevel
    except ImportError as error:
        raise OnnxExportError(f"ONNX export needs the [onnx] extra ({error}); run pip install -e '.[onnx]'.") \
            from error
    return onnx, tf2onnx


@contextlib.contextmanager
def _optimizers_without_graph_copies():
    """tf2onnx deep-copies the graph, weights included, before each of its optimizer passes so that it can roll a
    failing pass back; the copies pile up to >12 GB for LResNet-50 (killed by the OOM killer on a 24 GB machine).
    Its TF2ONNX_CATCH_ERRORS switch turns the copies off (a failing pass then fails the export instead)."""
    previous = os.environ.get(_CATCH_ERRORS)
    os.environ[_CATCH_ERRORS] = "FALSE"
    try:
        yield
    finally:
        if previous is None:
            del os.environ[_CATCH_ERRORS]
        else:
            os.environ[_CATCH_ERRORS] = previous


def to_insightface_input(images):
    """insightface's preprocessing of aligned faces: uint8 RGB [N, S, S, 3] -> float32 [N, 3, S, S]
    ``(pixel - 127.5) / 127.5`` (what ``ArcFaceONNX.get_feat`` makes with ``cv2.dnn.blobFromImages``)."""
    images = np.asarray(images, np.float32)
    return np.ascontiguousarray(((images - INSIGHTFACE_MEAN) / INSIGHTFACE_STD).transpose(0, 3, 1, 2))


def convert_onnx(model, mask_output=True):
    """Converts the backbone of ``model`` to an ONNX ``ModelProto`` (see the module docstring for the contract).

    Args:
      model: a model from ``build_mtarcface`` or its backbone.
      mask_output: add the ``mask_prob`` output when the model has a mask head.

    Returns:
      ``onnx.ModelProto`` with input ``input`` float32 [N, 3, S, S] and outputs ``embedding`` [N, D] (raw) and, with
      ``mask_output`` and a mask head, ``mask_prob`` [N, 2].
    """
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from mtarcface_tf.export.saved_model import exportable_backbone  # pylint: disable=import-outside-toplevel
    _, tf2onnx = require_onnx()
    backbone = exportable_backbone(model, OnnxExportError)
    size = int(backbone.input.shape[1])
    with_mask = mask_output and "mask_logits" in backbone.output
    # x_insightface = (p - mean) / std, x_ours = (p - PIXEL_MEAN) * PIXEL_SCALE = x_insightface * a + b.
    gain = INSIGHTFACE_STD * pipeline.PIXEL_SCALE
    offset = (INSIGHTFACE_MEAN - pipeline.PIXEL_MEAN) * pipeline.PIXEL_SCALE
    spec = [tf.TensorSpec([None, 3, size, size], tf.float32, name=INPUT_NAME)]

    @tf.function(input_signature=spec)
    def serve(images):
        pixels = tf.transpose(images, [0, 2, 3, 1]) * gain
        outputs = backbone(pixels + offset if offset else pixels, training=False)
        result = {EMBEDDING: tf.cast(outputs["embedding"], tf.float32)}
        if with_mask:
            result[MASK_PROB] = tf.nn.softmax(tf.cast(outputs["mask_logits"], tf.float32), axis=-1)
        return result

    # Outputs are named after the dict keys, in sorted order: embedding, then mask_prob.
    with _optimizers_without_graph_copies():
        proto, _ = tf2onnx.convert.from_function(serve, input_signature=spec, opset=OPSET)
    for value in list(proto.graph.input) + list(proto.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = BATCH_DIM
    return proto


def input_size(onnx_path):
    """Returns the input side S (int) of an exported model ([N, 3, S, S])."""
    onnx, _ = require_onnx()
    dims = onnx.load(os.fspath(onnx_path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    return int(dims[2].dim_value)


def run_onnx(onnx_path, images):
    """Runs an exported model with onnxruntime (CPU) on aligned faces.

    Args:
      onnx_path: a file written by ``export_onnx``.
      images: uint8 RGB [N, S, S, 3] aligned faces (normalized here as insightface does).

    Returns:
      dict output name -> float32 array (``embedding`` [N, D] raw, ``mask_prob`` [N, 2] when present).
    """
    import onnxruntime  # pylint: disable=import-outside-toplevel
    session = onnxruntime.InferenceSession(os.fspath(onnx_path), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    values = session.run(names, {session.get_inputs()[0].name: to_insightface_input(images)})
    return dict(zip(names, values))


def _save(proto, path):
    onnx, _ = require_onnx()
    with atomic_path(path) as temp_path:
        onnx.save(proto, temp_path)


def _embedding_only(proto):
    onnx, _ = require_onnx()
    return onnx.utils.Extractor(proto).extract_model([i.name for i in proto.graph.input], [EMBEDDING])


def export_onnx(model, output_dir):
    """Writes ``output_dir/model.onnx`` and ``output_dir/insightface/model.onnx`` (atomically: temp dir, rename).

    Args:
      model: a model from ``build_mtarcface`` or its backbone.
      output_dir: target folder; must not exist.

    Returns:
      dict: ``model`` (path of the two-output file), ``insightface`` (path of the embedding-only file).

    Raises:
      OnnxExportError: ``output_dir`` exists, the [onnx] extra is missing, or the model has no embedding.
    """
    output_dir = os.fspath(output_dir)
    if os.path.exists(output_dir):
        raise OnnxExportError(f"{output_dir}: already exists; choose a new directory.")
    proto = convert_onnx(model)
    with atomic_directory(output_dir) as temp_dir:
        os.makedirs(os.path.join(temp_dir, INSIGHTFACE_DIR))
        _save(proto, os.path.join(temp_dir, MODEL_FILE))
        _save(_embedding_only(proto), os.path.join(temp_dir, INSIGHTFACE_DIR, MODEL_FILE))
    return {"model": os.path.join(output_dir, MODEL_FILE),
            "insightface": os.path.join(output_dir, INSIGHTFACE_DIR, MODEL_FILE)}


def saved_model_reference(saved_model_dir, num_images=4, seed=0):
    """Runs a SavedModel's ``serving_default`` on random uint8 faces: the reference of ``onnx_parity``.

    Args:
      saved_model_dir: a directory written by ``export_saved_model``.
      num_images: random faces to embed.
      seed: seed of those faces.

    Returns:
      dict: ``images`` uint8 [N, S, S, 3], ``embedding`` float32 [N, D] (L2-normalized), ``mask_prob`` [N, 2] or None.
    """
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from mtarcface_tf.export.saved_model import SERVING_SIGNATURE  # pylint: disable=import-outside-toplevel
    signature = tf.saved_model.load(os.fspath(saved_model_dir)).signatures[SERVING_SIGNATURE]
    size = int(signature.structured_input_signature[1]["images"].shape[1])
    images = np.random.default_rng(seed).integers(0, 256, (num_images, size, size, 3), dtype=np.uint8)
    outputs = {key: value.numpy() for key, value in signature(images=tf.constant(images)).items()}
    return {"images": images, "embedding": outputs["embedding"], "mask_prob": outputs.get("mask_prob")}


def onnx_parity(onnx_path, reference):
    """Compares an ONNX export with reference outputs of the same faces.

    Args:
      onnx_path: a file written by ``export_onnx``.
      reference: dict with ``images`` uint8 [N, S, S, 3], ``embedding`` [N, D] (any scale) and optionally
        ``mask_prob`` [N, 2] (e.g. from the SavedModel's ``serving_default``).

    Returns:
      dict: ``min_cosine`` (lowest per-face cosine of the embeddings) and, when both have it,
      ``mask_prob_max_abs_diff``.
    """
    outputs = run_onnx(onnx_path, reference["images"])
    ours, theirs = l2_normalize(outputs[EMBEDDING]), l2_normalize(reference["embedding"])
    result = {"min_cosine": float(np.min(np.sum(ours * theirs, axis=1)))}
    if MASK_PROB in outputs and reference.get("mask_prob") is not None:
        result["mask_prob_max_abs_diff"] = float(np.max(np.abs(outputs[MASK_PROB] - reference["mask_prob"])))
    return result
