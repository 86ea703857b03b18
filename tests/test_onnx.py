"""ONNX export: tools/export.py --onnx, parity with the SavedModel in a fresh onnxruntime process, and what
insightface's own client (insightface 2.1's ``model_zoo.get_model`` and ``ArcFaceONNX``) makes of the files."""
import json
import os

import numpy as np
import pytest

pytest.importorskip("tf2onnx")
onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")
pytest.importorskip("insightface")

from tests.support import processes, tiny  # noqa: E402  (after the skips: the module needs the [onnx] extra)

SIZE = 112

# A fresh process without TensorFlow: insightface's client reads the embedding-only file, the two-output file and an
# mxnet-style renaming of the first, and embeds BGR images as cv2 reads them through get_feat; the plain
# onnxruntime call runs the two-output file.
FRESH_PROCESS_SCRIPT = """
import json, sys
import numpy as np, onnxruntime
from insightface.model_zoo import get_model
folder, full, single, renamed = sys.argv[1:5]
assert "tensorflow" not in sys.modules
rgb = np.load(folder + "/faces.npy")
bgr = [np.ascontiguousarray(face[:, :, ::-1]) for face in rgb]
model = get_model(single, providers=["CPUExecutionProvider"])
model.prepare(ctx_id=-1)
reading = dict(kind=type(model).__name__, task=model.taskname, input_mean=model.input_mean,
               input_std=model.input_std, input_size=list(model.input_size), input_shape=model.input_shape,
               outputs=model.output_names)
insightface_embedding = model.get_feat(bgr)
renamed_model = get_model(renamed, providers=["CPUExecutionProvider"])
reading["renamed_mean_std"] = [renamed_model.input_mean, renamed_model.input_std]
try:
    get_model(full, providers=["CPUExecutionProvider"])
    reading["full"] = "accepted"
except AssertionError:
    reading["full"] = "rejected"
session = onnxruntime.InferenceSession(full, providers=["CPUExecutionProvider"])
nchw = ((rgb.astype(np.float32) - 127.5) / 127.5).transpose(0, 3, 1, 2)
embedding, mask_prob = session.run(["embedding", "mask_prob"], {"input": nchw})
np.savez(folder + "/onnx_outputs.npz", insightface=insightface_embedding, embedding=embedding, mask_prob=mask_prob)
with open(folder + "/reading.json", "w") as handle:
    json.dump(reading, handle)
"""


def mxnet_style_copy(path, out_path):
    """Saves ``path`` with its first two nodes renamed as mxnet exports name them (``_minus0``, ``_mul0``), the
    graph insightface takes for one with the normalization inside; returns ``out_path``."""
    model = onnx.load(path)
    model.graph.node[0].name, model.graph.node[1].name = "_minus0", "_mul0"
    onnx.save(model, out_path)
    return out_path


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
    renamed = mxnet_style_copy(single, str(root / "renamed.onnx"))
    script = root / "fresh.py"
    script.write_text(FRESH_PROCESS_SCRIPT)
    fresh = processes.start_python([str(script), str(root), full, single, renamed])
    signature = tf.saved_model.load(str(root / "export" / "1")).signatures["serving_default"]
    reference = {key: value.numpy() for key, value in signature(images=tf.constant(faces)).items()}
    fresh = processes.finish(fresh)
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    reading = json.loads((root / "reading.json").read_text())
    return dict(root=root, full=full, single=single, reading=reading, reference=reference, stdout=result.stdout,
                outputs=dict(np.load(root / "onnx_outputs.npz")))


def _cosines(a, b):
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_insightface_reads_a_recognition_model_of_112(exported):
    reading = exported["reading"]
    assert (reading["kind"], reading["task"]) == ("ArcFaceONNX", "recognition")
    assert reading["input_size"] == [112, 112]
    assert reading["input_shape"][1:] == [3, 112, 112] and isinstance(reading["input_shape"][0], str)
    assert (reading["input_mean"], reading["input_std"]) == (127.5, 127.5)
    assert reading["outputs"] == ["embedding"]  # ArcFaceONNX asserts exactly one output


def test_two_output_file_has_embedding_then_mask_prob(exported):
    session = onnxruntime.InferenceSession(exported["full"], providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["embedding", "mask_prob"]
    assert [i.name for i in session.get_inputs()] == ["input"]
    assert exported["reading"]["full"] == "rejected"     # why the embedding-only file exists


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


def test_insightface_sees_normalization_inside_an_mxnet_style_graph(exported):
    # The mean/std reading must be able to say "0 / 1", or the 127.5 / 127.5 above would prove nothing.
    assert exported["reading"]["renamed_mean_std"] == [0.0, 1.0]


def tiny_graph(path, side):
    """Saves a one-output ONNX model of input [N, 3, side, side] (a global average pool) to ``path``."""
    from onnx import TensorProto, helper
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["input"], ["pooled"], name="Pool"),
         helper.make_node("Flatten", ["pooled"], ["embedding"], name="Flat")], "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, side, side])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", 3])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


@pytest.mark.parametrize("side", [96, 104, 112, 120, 128, 160, 192, 224])
def test_routes_to_recognition_as_insightface_does(side, tmp_path):
    from insightface.model_zoo import get_model
    from mtarcface_tf.export.onnx import routes_to_recognition
    model = get_model(tiny_graph(str(tmp_path / "m.onnx"), side), providers=["CPUExecutionProvider"])
    assert (getattr(model, "taskname", None) == "recognition") == routes_to_recognition(side)
