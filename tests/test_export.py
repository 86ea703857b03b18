"""SavedModel export: tools/export.py from a workdir, fresh-process round trip, REST bodies, no centres, TFLite."""
import base64
import json
import os
import sys

import numpy as np
import pytest
import tensorflow as tf

from mtarcface_tf.export import saved_model, tflite
from tests.support import processes, rest, tiny

SIZE = 32
FRESH_PROCESS_SCRIPT = """
import base64, json, os, sys
import numpy as np, tensorflow as tf
from tests.support.rest import rest_instances_to_inputs, rest_signature_name
export_dir, folder = sys.argv[1], sys.argv[2]
loaded = tf.saved_model.load(export_dir)
images = np.load(folder + "/images.npy")
pngs = [tf.io.encode_png(image).numpy() for image in images]
out = {}
for key, value in loaded.signatures["serving_default"](images=tf.constant(images)).items():
    out["uint8_" + key] = value.numpy()
for key, value in loaded.signatures["serve_jpeg"](images=tf.constant(pngs)).items():
    out["jpeg_" + key] = value.numpy()
bodies = {"rest_uint8": json.dumps({"instances": images.tolist()}),
          "rest_jpeg": json.dumps({"signature_name": "serve_jpeg",
                                   "instances": [{"b64": base64.b64encode(p).decode()} for p in pngs]})}
for name, body in bodies.items():
    signature = loaded.signatures[rest_signature_name(body)]
    out[name] = signature(**rest_instances_to_inputs(body, signature))["embedding"].numpy()
out["signatures"] = np.array(sorted(loaded.signatures))
np.savez(folder + "/outputs.npz", **out)
"""


# The tests of tools/export.py's output are the slow tier (tests/test_onnx.py runs the tool in the fast one).
@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Exports a tiny model through tools/export.py --tflite from a saved workdir; returns a dict of paths/objects."""
    root = tmp_path_factory.mktemp("export")
    model, config = tiny.build_tiny_model(input_size=SIZE)
    workdir = tiny.save_workdir(model, config, root / "run", threshold={"cosine_similarity": 0.42,
                                                                                 "squared_distance": 1.16})
    os.makedirs(root / "export" / "1")  # an existing version: the tool must pick 2
    result = processes.run_python(["tools/export.py", f"--workdir={workdir}", f"--export_dir={root / 'export'}",
                                       "--tflite"])
    assert result.returncode == 0, result.stderr[-2000:]
    images = tiny.random_faces(3, SIZE, seed=1)
    np.save(root / "images.npy", images)
    export_dir = str(root / "export" / "2")
    (root / "round_trip.py").write_text(FRESH_PROCESS_SCRIPT)
    # Both fresh processes run side by side: each spends most of its time importing TensorFlow.
    round_trip = processes.start_python([str(root / "round_trip.py"), export_dir, str(root)])
    cli = os.path.join(os.path.dirname(os.path.abspath(sys.executable)), "saved_model_cli")
    show = processes.start_python([cli, "show", "--dir", export_dir, "--all"])
    return {"root": root, "dir": export_dir, "model": model, "images": images, "stdout": result.stdout,
            "reference": tiny.keras_reference(model, images), "round_trip": processes.finish(round_trip),
            "saved_model_cli": processes.finish(show)}


@pytest.mark.slow
def test_tool_writes_next_version_with_metadata(exported):
    assert os.path.isfile(os.path.join(exported["dir"], "saved_model.pb"))
    assert not [name for name in os.listdir(exported["root"] / "export") if name.startswith(".")]  # no temp dirs
    metadata = saved_model.read_metadata(exported["dir"])
    assert metadata["input_size"] == SIZE and metadata["embedding_size"] == 16 and metadata["mask_head"]
    assert metadata["recommended_threshold"]["cosine_similarity"] == pytest.approx(0.42)


@pytest.mark.slow
def test_fresh_process_round_trip_matches_keras(exported):
    result = exported["round_trip"]
    assert result.returncode == 0, result.stderr[-2000:]
    out = np.load(exported["root"] / "outputs.npz", allow_pickle=False)
    assert list(out["signatures"]) == ["serve_jpeg", "serving_default"]
    reference = exported["reference"]
    for key in ("uint8_embedding", "jpeg_embedding", "rest_uint8", "rest_jpeg"):
        np.testing.assert_allclose(out[key], reference["embedding"], atol=1e-5, err_msg=key)
    for key in ("uint8_mask_prob", "jpeg_mask_prob"):
        np.testing.assert_allclose(out[key], reference["mask_prob"], atol=1e-5, err_msg=key)
    np.testing.assert_allclose(np.linalg.norm(out["uint8_embedding"], axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_saved_model_cli_lists_both_signatures(exported):
    result = exported["saved_model_cli"]
    assert result.returncode == 0, result.stderr[-2000:]
    text = result.stdout
    assert "signature_def['serving_default']" in text and "signature_def['serve_jpeg']" in text
    assert f"shape: (-1, {SIZE}, {SIZE}, 3)" in text and "dtype: DT_UINT8" in text and "dtype: DT_STRING" in text
    assert "outputs['embedding']" in text and "outputs['mask_prob']" in text


@pytest.mark.slow
def test_class_centres_are_not_exported(exported):
    shapes = [tuple(shape) for _, shape in tf.train.list_variables(os.path.join(exported["dir"], "variables",
                                                                                 "variables"))]
    centres = tuple(exported["model"].arcface.kernel.shape)
    assert centres == (16, tiny.NUM_CLASSES)
    assert centres not in shapes
    assert sum(1 for shape in shapes if shape) >= len(exported["model"].backbone.weights)


@pytest.mark.slow
def test_wrong_shape_and_dtype_are_rejected(exported):
    signature = tf.saved_model.load(exported["dir"]).signatures["serving_default"]
    with pytest.raises(tf.errors.InvalidArgumentError, match="not compatible with expected shape"):
        signature(images=tf.zeros([1, SIZE + 8, SIZE + 8, 3], tf.uint8))
    with pytest.raises((tf.errors.InvalidArgumentError, TypeError, ValueError), match="uint8"):
        signature(images=tf.zeros([1, SIZE, SIZE, 3], tf.float32))
    with pytest.raises(rest.RestRequestError, match="does not match"):
        rest.rest_instances_to_inputs({"instances": np.zeros((1, 8, 8, 3), np.uint8).tolist()}, signature)
    with pytest.raises(rest.RestRequestError, match="exactly one"):
        rest.rest_instances_to_inputs({"instances": [], "inputs": []}, signature)


@pytest.mark.slow
def test_rest_columnar_inputs_and_predictions_format(exported):
    signature = tf.saved_model.load(exported["dir"]).signatures["serve_jpeg"]
    png = base64.b64encode(tf.io.encode_png(exported["images"][0]).numpy()).decode()
    inputs = rest.rest_instances_to_inputs(json.dumps({"inputs": {"images": [{"b64": png}]}}), signature)
    assert inputs["images"].dtype == tf.string and inputs["images"].shape == (1,)
    reply = rest.outputs_to_rest_predictions(signature(**inputs))
    assert set(reply["predictions"][0]) == {"embedding", "mask_prob"}
    np.testing.assert_allclose(reply["predictions"][0]["embedding"], exported["reference"]["embedding"][0], atol=1e-5)


@pytest.mark.slow
def test_tflite_parity(exported):
    assert "TFLite dynamic_int8" in exported["stdout"]
    folder = exported["root"] / "export" / "tflite" / "2"
    results = {}
    for quantization in tflite.QUANTIZATIONS:
        payload = (folder / f"model_{quantization}.tflite").read_bytes()
        results[quantization] = tflite.tflite_parity(payload, exported["model"], exported["images"])
    assert results["float"]["max_abs_diff"] < 1e-4
    assert results["dynamic_int8"]["min_cosine"] > 0.98


def test_baseline_export_omits_mask_prob_and_refuses_existing_dir(tmp_path):
    model, _ = tiny.build_tiny_model(mask_head=False, input_size=SIZE)
    target = saved_model.export_saved_model(model, saved_model.next_version_dir(tmp_path))
    assert target == str(tmp_path / "1")
    outputs = tf.saved_model.load(target).signatures["serving_default"](
        images=tf.constant(tiny.random_faces(2, SIZE)))
    assert set(outputs) == {"embedding"}
    assert saved_model.find_saved_model(tmp_path) == target
    with pytest.raises(saved_model.ExportError, match="already exists"):
        saved_model.export_saved_model(model, target)
