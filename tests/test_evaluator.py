"""VerificationEvaluator end to end: a crafted insightface .bin, a tiny Keras model, the report and the tool."""
import json
import os
import pickle
import subprocess
import sys

import cv2
import keras
import numpy as np
import pytest

from mtarcface_tf.configs import common
from mtarcface_tf.eval import evaluator as evaluator_lib
from mtarcface_tf.eval import registry, report, run
from mtarcface_tf.export import export_saved_model
from mtarcface_tf.export.embedder import make_embed_fn

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_SIZE = 32
MASK_TOP = 50      # the fake mask paints rows MASK_TOP.. grey


def _write_bin(path, pairs=40, seed=0):
    """Writes an insightface .bin: pickle of (list of PNG bytes, list of bool); same pairs share a template."""
    rng = np.random.default_rng(seed)
    templates = rng.integers(0, 256, (pairs, 14, 14, 3)).astype(np.float32)
    issame = [bool(i % 2 == 0) for i in range(pairs)]
    images = []
    for i, same in enumerate(issame):
        second = i if same else (i + 1) % pairs
        for template in (templates[i], templates[second]):
            noisy = np.clip(template + rng.normal(0, 12, template.shape), 0, 255).astype(np.uint8)
            images.append(cv2.imencode(".png", cv2.resize(noisy, (112, 112), interpolation=cv2.INTER_NEAREST))[1]
                          .tobytes())
    with open(path, "wb") as f:
        pickle.dump((images, issame), f, protocol=4)
    return path


def _fake_masked_variants(images, issame, seed, landmarks=None):
    """Masks that hide everything: a masked face is uniform grey (no identity left, lower-face spread 0)."""
    masked = np.full_like(images, 128)
    mixed = images.copy()
    mixed[0::2] = masked[0::2]
    return {"clean": (images, issame), "masked": (masked, issame), "mixed": (mixed, issame),
            "combined": (np.concatenate([images, masked]), np.concatenate([issame, issame]))}


@pytest.fixture
def fake_masks(monkeypatch):
    """Replaces the evaluator's masked_variants (tested in test_masked_pairs.py) by masks whose effect is known."""
    monkeypatch.setattr(evaluator_lib, "masked_variants", _fake_masked_variants)


def _tiny_model():
    """Embedding = pooled pixels of the upper face; mask logits from the spread of the lower face."""
    inputs = keras.Input((MODEL_SIZE, MODEL_SIZE, 3))
    pooled = keras.layers.AveragePooling2D(4)(inputs)
    embedding = keras.layers.Flatten()(keras.layers.Cropping2D(((0, 4), (0, 0)))(pooled))
    spread = keras.layers.Lambda(lambda x: keras.ops.std(x[:, MODEL_SIZE * 5 // 8:], axis=(1, 2, 3)))(inputs)
    mask_logits = keras.layers.Lambda(lambda s: keras.ops.stack([s - 0.1, 0.1 - s], axis=1) * 50.0)(spread)
    return keras.Model(inputs, {"embedding": embedding, "mask_logits": mask_logits})


def test_evaluator_metrics_results_and_report(tmp_path, fake_masks):
    bin_path = _write_bin(str(tmp_path / "lfw.bin"))
    scorer = evaluator_lib.VerificationEvaluator([bin_path], batch_size=32, far=1e-2)
    metrics = dict(scorer.run(_tiny_model()))
    for name in ("lfw/clean/accuracy", "lfw/masked/accuracy-flip", "lfw/mixed/tar@far=1e-2",
                 "lfw/mixed/tar@far=1e-2-flip", "lfw/clean/accuracy_std", "lfw/mask_usage/accuracy",
                 "lfw/mask_usage/f1"):
        assert name in metrics, name
    assert metrics["lfw/clean/accuracy"] > 0.9 and metrics["lfw/clean/accuracy-flip"] > 0.9
    # Masked pairs are two identical grey images: every distance is equal, so the best threshold can only say
    # "all same" or "all different", right on exactly the half of the pairs that are (or are not) the same.
    assert metrics["lfw/masked/accuracy"] == pytest.approx(0.5) and metrics["lfw/masked/accuracy-flip"] == 0.5
    # Mixed pairs compare a grey image with a face: close to chance, far below clean.
    assert metrics["lfw/mixed/accuracy"] < metrics["lfw/clean/accuracy"] - 0.2
    # Grey images have no lower-face spread: the tiny mask head calls exactly them "mask", over the 3 x 80 images.
    assert metrics["lfw/mask_usage/accuracy"] == 1.0 and metrics["lfw/mask_usage/f1"] == 1.0
    assert scorer.results["lfw"]["mask_usage"]["confusion_matrix"] == [[120, 0], [0, 120]]
    result = scorer.results["lfw"]
    assert set(result["variants"]) == {"clean", "masked", "mixed"} and result["pairs"] == 40
    assert result["variants"]["mixed"]["mask_labels"].tolist()[:4] == [1, 0, 1, 0]

    (key,) = [k for k in scorer._cache if k[0] == bin_path]     # cached per (file, model input size)
    cached = scorer._cache[key]
    again = dict(scorer.run(_tiny_model()))
    assert scorer._cache[key] is cached                          # variants built once
    assert again.keys() == metrics.keys()

    written = report.write_report(scorer.results, str(tmp_path / "out"), far=1e-2, model_name="tiny")
    for name in ("report.md", "report.json", "roc_lfw.png", "distances_lfw.png", "mask_confusion_lfw.png"):
        assert os.path.getsize(tmp_path / "out" / name) > 0
    assert json.loads((tmp_path / "out" / "report.json").read_text())["recommended_threshold"] == \
        written["recommended_threshold"]


def test_evaluators_declared_in_the_config_give_the_same_numbers(tmp_path, fake_masks):
    bin_path = _write_bin(str(tmp_path / "lfw.bin"))
    config = common.base_config()
    config.evals.verification.update(bins=bin_path, batch_size=32, far=1e-2)
    (ijb_entry, ijb_1n_entry, verification) = registry.build_evaluators(config.evals, seed=config.seed)   # by name
    assert (verification.name, verification.every, ijb_entry.name) == ("verification", 10_000, "ijb")
    written, metrics = run.run_and_report([verification, ijb_entry, ijb_1n_entry], make_embed_fn(_tiny_model()),
                                          str(tmp_path / "out"), far=1e-2, model_name="tiny")
    # The expectations of test_evaluator_metrics_results_and_report, through the registry; the IJB entries have no
    # root and add nothing.
    assert metrics["lfw/masked/accuracy"] == pytest.approx(0.5) and metrics["lfw/mask_usage/accuracy"] == 1.0
    assert metrics["lfw/clean/accuracy"] > 0.9 and metrics["lfw/mixed/accuracy"] < metrics["lfw/clean/accuracy"] - 0.2
    direct = evaluator_lib.VerificationEvaluator([bin_path], batch_size=32, far=1e-2)
    assert metrics == dict(direct.run(_tiny_model()))
    assert written["sets"]["lfw"]["mask_usage"]["confusion_matrix"] == [[120, 0], [0, 120]] and not written["ijb"]


def test_an_unknown_evaluator_type_or_a_missing_bin_is_one_line():
    with pytest.raises(ValueError,
                       match=r"^config.evals.lfw.type='verifcation': choose one of ijb, ijb_1n, verification$"):
        registry.build_evaluators({"lfw": dict(type="verifcation", bins="")})
    with pytest.raises(ValueError, match=r"^config.evals.lfw: /no/lfw.bin does not exist; fix the path"):
        registry.build_evaluators({"lfw": dict(type="verification", bins="/no/lfw.bin")})


def test_clean_only_and_odd_bin(tmp_path):
    bin_path = _write_bin(str(tmp_path / "agedb.bin"), pairs=20)
    scorer = evaluator_lib.VerificationEvaluator([bin_path], masked=False, flip=False, batch_size=64)
    metrics = dict(scorer.run(_tiny_model()))
    assert sorted(metrics) == ["agedb/clean/accuracy", "agedb/clean/accuracy_std", "agedb/clean/tar@far=1e-3"]
    assert scorer.results["agedb"]["mask_usage"] is None

    with open(bin_path, "rb") as f:
        images, issame = pickle.load(f)
    with open(tmp_path / "odd.bin", "wb") as f:
        pickle.dump((images[:-1], issame), f)
    with pytest.raises(ValueError, match="odd.bin"):
        dict(evaluator_lib.VerificationEvaluator([str(tmp_path / "odd.bin")], masked=False).run(_tiny_model()))


def _tool(*args):
    """Starts tools/evaluate.py in a subprocess; returns the Popen."""
    env = dict(os.environ, PYTHONPATH=REPO, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.Popen([sys.executable, os.path.join(REPO, "tools", "evaluate.py"), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow   # slow tier: tools/evaluate.py in a fresh process (the evaluator itself is tested above)
def test_tool_on_saved_model_and_user_errors(tmp_path):
    bin_path = _write_bin(str(tmp_path / "lfw.bin"), pairs=20)
    export_saved_model(_tiny_model(), str(tmp_path / "sm"))
    # Both runs at once: most of their time is importing TensorFlow.
    good = _tool(f"--saved_model={tmp_path / 'sm'}", f"--bins={bin_path}", f"--output_dir={tmp_path / 'out'}",
                 "--no_masked", "--batch_size=16")
    bad = _tool(f"--saved_model={tmp_path / 'sm'}", f"--bins={tmp_path / 'nope.bin'}",
                f"--output_dir={tmp_path / 'out2'}", "--no_masked")
    _, good_err = good.communicate(timeout=120)
    _, bad_err = bad.communicate(timeout=120)
    assert good.returncode == 0, good_err[-2000:]
    assert json.loads((tmp_path / "out" / "report.json").read_text())["sets"]["lfw"]["pairs"] == 20
    assert bad.returncode == 1
    assert bad_err.strip().splitlines()[-1].startswith("error: ") and "nope.bin" in bad_err
    assert "Traceback" not in bad_err


def test_nan_embeddings_name_the_file(tmp_path):
    bin_path = _write_bin(str(tmp_path / "cfp_fp.bin"), pairs=10)
    inputs = keras.Input((MODEL_SIZE, MODEL_SIZE, 3))
    nan = keras.layers.Lambda(lambda x: keras.ops.log(x[:, 0, 0, :] - 10.0))(inputs)   # log of negatives
    scorer = evaluator_lib.VerificationEvaluator([bin_path], masked=False, flip=False)
    with pytest.raises(ValueError, match=r"cfp_fp.bin \(clean pairs\).*NaN"):
        dict(scorer.run(keras.Model(inputs, {"embedding": nan})))
