"""ONNX export: tools/export.py --onnx, parity with the SavedModel in a fresh onnxruntime process, insightface's
loader rules (transcribed from python-package/insightface/model_zoo/model_zoo.py and arcface_onnx.py)."""
import os

import numpy as np
import pytest

pytest.importorskip("tf2onnx")
onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")

from tests.support import processes, tiny  # noqa: E402  (after the skips: the module needs the [onnx] extra)

SIZE = 112  # insightface's router only takes 112x112 inputs as recognition models

# A fresh process without TensorFlow: insightface's get_feat path (BGR images as cv2 reads them, blobFromImages
# with the mean/std it inferred) on the embedding-only file, and the plain onnxruntime call on the two-output file.
FRESH_PROCESS_SCRIPT = """
import sys
import cv2, numpy as np, onnxruntime
folder, full, single, mean, std = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
assert "tensorflow" not in sys.modules
rgb = np.load(folder + "/faces.npy")
bgr = [np.ascontiguousarray(face[:, :, ::-1]) for face in rgb]
session = onnxruntime.InferenceSession(single, providers=["CPUExecutionProvider"])
size = tuple(session.get_inputs()[0].shape[2:4][::-1])
blob = cv2.dnn.blobFromImages(bgr, 1.0 / std, size, (mean, mean, mean), swapRB=True)
names = [o.name for o in session.get_outputs()]
insightface_embedding = session.run(names, {session.get_inputs()[0].name: blob})[0]
session = onnxruntime.InferenceSession(full, providers=["CPUExecutionProvider"])
nchw = ((rgb.astype(np.float32) - 127.5) / 127.5).transpose(0, 3, 1, 2)
embedding, mask_prob = session.run(["embedding", "mask_prob"], {"input": nchw})
np.savez(folder + "/onnx_outputs.npz", insightface=insightface_embedding, embedding=embedding, mask_prob=mask_prob)
"""


def insightface_reading(path):
    """What insightface makes of an ONNX file: our transcription of ModelRouter.get_model and ArcFaceONNX.__init__."""
    graph = onnx.load(path).graph
    names = [node.name for node in graph.node[:8]]
    find_sub = any(name.startswith("Sub") or name.startswith("_minus") for name in names)
    find_mul = any(name.startswith("Mul") or name.startswith("_mul") for name in names)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    shape = session.get_inputs()[0].shape
    outputs = session.get_outputs()
    if len(outputs) >= 5:
        kind = "SCRFD"
    elif shape[2] == 112 and shape[3] == 112:
        kind = "ArcFaceONNX"
    else:
        kind = "other"
    mean, std = (0.0, 1.0) if find_sub and find_mul else (127.5, 127.5)
    return dict(kind=kind, input_mean=mean, input_std=std, input_size=tuple(shape[2:4][::-1]),
                outputs=[output.name for output in outputs], input_shape=shape)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """tools/export.py --onnx on a tiny 112x112 workdir; the SavedModel's outputs on SynthFaces faces; the fresh
    onnxruntime process's outputs on the same faces."""
    import tensorflow as tf
    from mtarcface_tf.data.synthetic import render_faces

    root = tmp_path_factory.mktemp("onnx")
    model, config = tiny.build_tiny_model(input_size=SIZE)
    workdir = tiny.save_workdir(model, config, root / "run")
    result = processes.run_python(["tools/export.py", f"--workdir={workdir}", f"--export_dir={root / 'export'}",
                                       "--onnx"])
    assert result.returncode == 0, result.stderr[-3000:]
    faces, _ = render_faces(3, 2, SIZE, seed=5)
    np.save(root / "faces.npy", faces)
    full = str(root / "export" / "onnx" / "1" / "model.onnx")
    single = str(root / "export" / "onnx" / "1" / "insightface" / "model.onnx")
    reading = insightface_reading(single)
    script = root / "fresh.py"
    script.write_text(FRESH_PROCESS_SCRIPT)
    fresh = processes.start_python([str(script), str(root), full, single, str(reading["input_mean"]),
                                        str(reading["input_std"])])
    signature = tf.saved_model.load(str(root / "export" / "1")).signatures["serving_default"]
    reference = {key: value.numpy() for key, value in signature(images=tf.constant(faces)).items()}
    fresh = processes.finish(fresh)
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    return dict(root=root, full=full, single=single, reading=reading, reference=reference, stdout=result.stdout,
                outputs=dict(np.load(root / "onnx_outputs.npz")))


def _cosines(a, b):
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_insightface_reads_a_recognition_model_of_112(exported):
    reading = exported["reading"]
    assert reading["kind"] == "ArcFaceONNX"
    assert reading["input_size"] == (112, 112)
    assert reading["input_shape"][1:] == [3, 112, 112] and isinstance(reading["input_shape"][0], str)
    assert (reading["input_mean"], reading["input_std"]) == (127.5, 127.5)
    assert reading["outputs"] == ["embedding"]  # ArcFaceONNX asserts exactly one output


def test_two_output_file_has_embedding_then_mask_prob(exported):
    session = onnxruntime.InferenceSession(exported["full"], providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["embedding", "mask_prob"]
    assert [i.name for i in session.get_inputs()] == ["input"]
    assert insightface_reading(exported["full"])["kind"] == "ArcFaceONNX"


def test_parity_with_saved_model_in_fresh_process(exported):
    outputs, reference = exported["outputs"], exported["reference"]
    assert np.min(_cosines(outputs["embedding"], reference["embedding"])) >= 0.9999
    assert np.min(_cosines(outputs["insightface"], reference["embedding"])) >= 0.9999
    np.testing.assert_allclose(outputs["mask_prob"], reference["mask_prob"], atol=1e-4)


def test_embedding_is_not_normalized(exported):
    # insightface's recognition models return the raw embedding; the SavedModel's is L2-normalized.
    norms = np.linalg.norm(exported["outputs"]["embedding"], axis=1)
    assert np.all(np.abs(norms - 1) > 1e-3)


def test_tool_reports_parity_and_writes_no_temp_dirs(exported):
    from mtarcface_tf.export.onnx import input_size
    assert "min cosine with the SavedModel" in exported["stdout"]
    assert input_size(exported["single"]) == SIZE and "note:" not in exported["stdout"]
    assert not [name for name in os.listdir(exported["root"] / "export" / "onnx") if name.startswith(".")]


def test_rules_would_see_normalization_inside_an_mxnet_style_graph(exported, tmp_path):
    # The transcribed rule must be able to say "0 / 1": rename two of the first nodes as mxnet exports name them.
    model = onnx.load(exported["single"])
    model.graph.node[0].name, model.graph.node[1].name = "_minus0", "_mul0"
    path = str(tmp_path / "renamed.onnx")
    onnx.save(model, path)
    assert (insightface_reading(path)["input_mean"], insightface_reading(path)["input_std"]) == (0.0, 1.0)
