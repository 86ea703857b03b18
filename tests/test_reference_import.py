"""Importing the reference's positional checkpoints: a checkpoint written the way the reference's ``save_weights``
lays it out (``resnet/layer_with_weights-K/<attr>``), loaded into our networks, must give the same embeddings."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from mtarcface_tf.configs import finetune_mtarcface
from mtarcface_tf.model import build_lresnet, build_lresnet50, build_mtarcface
from mtarcface_tf.train.reference_import import (ReferenceImportError, expected_layout, import_reference,
                                                 load_reference_weights, reference_layer_names)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYOUT_MD = os.path.join(REPO, "..", "shared", "reference", "checkpoint_layout.md")
UNITS = (1, 2, 1, 1)          # a first unit (conv shortcut) and a later one (identity) in the same stage
WIDTH, SIZE, EMBEDDING, CLASSES = 0.125, 32, 16, 5


def _reference_model():
    """A re-creation of the reference's functional ResNet (its layers, in its order) with random weights."""
    model = build_lresnet(units=UNITS, width=WIDTH, input_shape=(SIZE, SIZE, 3), embedding_size=EMBEDDING)
    rng = np.random.default_rng(0)
    for variable in model.weights:
        value = rng.normal(scale=0.3, size=variable.shape)
        if variable.name == "moving_variance":
            value = rng.uniform(0.5, 1.5, size=variable.shape)
        variable.assign(value.astype(np.float32))
    return model


def _positional_arrays(model):
    """[{attr: array}] by K: the layers owning weights in the functional model's ``layers`` order, as Keras'
    object-based checkpoint numbers them (``layer_with_weights-K``)."""
    return [{v.name: v.numpy() for v in layer.weights} for layer in model.layers if layer.weights]


def _write_reference_checkpoint(prefix, positions, arcface=None):
    """Writes ``positions`` under ``resnet/layer_with_weights-K/<attr>`` (and ``arcface/kernel``) like the reference."""
    resnet = tf.Module()
    for index, variables in enumerate(positions):
        layer = tf.Module()
        for attr, value in variables.items():
            setattr(layer, attr, tf.Variable(value))
        setattr(resnet, f"layer_with_weights-{index}", layer)
    parts = {"resnet": resnet}
    if arcface is not None:
        head = tf.Module()
        head.kernel = tf.Variable(arcface)
        parts["arcface"] = head
    return tf.train.Checkpoint(**parts).write(prefix)


def _config(units=UNITS, width=WIDTH):
    config = finetune_mtarcface.get_config()
    config.model.units, config.model.width = units, width
    config.model.norm = "batch_norm"              # the checkpoints here are resnet.py's (import_reference detects it)
    config.model.input_size, config.model.embedding_size = SIZE, EMBEDDING
    config.num_classes = CLASSES
    return config


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    model = _reference_model()
    arcface = np.random.default_rng(1).normal(size=(EMBEDDING, CLASSES)).astype(np.float32)
    prefix = _write_reference_checkpoint(str(tmp_path_factory.mktemp("ref") / "ckpt"), _positional_arrays(model),
                                         arcface)
    images = np.random.default_rng(2).uniform(-1, 1, (3, SIZE, SIZE, 3)).astype(np.float32)
    return {"model": model, "prefix": prefix, "arcface": arcface, "images": images,
            # The reference network reads BGR: the imported one must give on RGB what it gives on BGR.
            "embedding": model(images[..., ::-1], training=False).numpy()}


def test_checkpoint_keys_look_like_the_reference(reference):
    keys = dict(tf.train.list_variables(reference["prefix"]))
    assert keys["resnet/layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE"] == [3, 3, 3, 8]
    assert "resnet/layer_with_weights-2/alpha/.ATTRIBUTES/VARIABLE_VALUE" in keys
    assert "arcface/kernel/.ATTRIBUTES/VARIABLE_VALUE" in keys


def test_import_into_mtarcface_gives_the_reference_embeddings(reference):
    config = _config()
    model, report = import_reference(reference["prefix"], config)
    assert config.num_classes == CLASSES        # taken from the checkpoint's centres
    got = model(reference["images"], training=False)
    np.testing.assert_allclose(got["embedding"].numpy(), reference["embedding"], atol=1e-5, rtol=1e-5)
    np.testing.assert_array_equal(model.arcface.kernel.numpy(), reference["arcface"])
    assert report.arcface_loaded and not report.problems
    assert report.loaded == len(reference["model"].weights) + 1
    assert report.fresh == ["mask_logits/kernel", "mask_logits/bias"]
    assert got["mask_logits"].shape == (3, 2)


def test_import_into_plain_lresnet(reference):
    model = build_lresnet(units=UNITS, width=WIDTH, input_shape=(SIZE, SIZE, 3), embedding_size=EMBEDDING)
    report = load_reference_weights(model, reference["prefix"])
    np.testing.assert_allclose(model(reference["images"]).numpy(), reference["embedding"], atol=1e-5, rtol=1e-5)
    assert report.loaded == len(model.weights) and not report.fresh


def test_other_class_count_leaves_centres_fresh(reference):
    model, report = import_reference(reference["prefix"], _config(), num_classes=CLASSES + 2)
    assert model.arcface.kernel.shape == (EMBEDDING, CLASSES + 2) and not report.arcface_loaded
    assert any("another class count" in note for note in report.notes)
    np.testing.assert_allclose(model(reference["images"])["embedding"].numpy(), reference["embedding"], atol=1e-5)


def test_mismatched_network_is_refused_with_the_bad_keys(reference):
    model = build_mtarcface(CLASSES, _config(width=0.25))
    before = [v.numpy().copy() for v in model.weights]
    with pytest.raises(ReferenceImportError) as err:
        load_reference_weights(model, reference["prefix"])
    message = str(err.value)
    assert "conv0/kernel [3, 3, 3, 16]" in message and "resnet/layer_with_weights-0/kernel" in message
    assert "--allow_partial" in message
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(before, model.weights))   # nothing assigned


def test_missing_and_extra_keys_are_listed_and_partial_load_is_opt_in(reference, tmp_path):
    positions = _positional_arrays(reference["model"])
    del positions[1]["gamma"]                                        # bn0 without gamma
    positions.append({"kernel": np.zeros((2, 2), np.float32)})      # a position our network lacks
    prefix = _write_reference_checkpoint(str(tmp_path / "ckpt"), positions)
    model = build_mtarcface(CLASSES, _config())
    with pytest.raises(ReferenceImportError) as err:
        load_reference_weights(model, prefix)
    problems = err.value.problems
    assert any(p.startswith("bn0/gamma") and "layer_with_weights-1/gamma" in p for p in problems)
    extra = f"resnet/layer_with_weights-{len(positions) - 1}/kernel"
    assert any(p.startswith(extra) and "no variable of our network" in p for p in problems)
    assert len(problems) == 2
    report = load_reference_weights(model, prefix, allow_partial=True)
    assert "bn0/gamma" in report.fresh and len(report.problems) == 2
    np.testing.assert_array_equal(model.backbone.get_layer("bn0").beta.numpy(), positions[1]["beta"])


def test_not_a_checkpoint_is_one_clear_error(tmp_path):
    model = build_lresnet(units=UNITS, width=WIDTH, input_shape=(SIZE, SIZE, 3), embedding_size=EMBEDDING)
    with pytest.raises(ReferenceImportError, match="not a readable TF checkpoint"):
        load_reference_weights(model, str(tmp_path / "missing"))
    (tmp_path / "bad.index").write_bytes(b"garbage")
    with pytest.raises(ReferenceImportError, match="bad"):
        load_reference_weights(model, str(tmp_path / "bad"))
    other = tf.train.Checkpoint(model=tf.Module()).write(str(tmp_path / "other"))
    with pytest.raises(ReferenceImportError, match="not a checkpoint of the reference"):
        load_reference_weights(model, other)


def _layout_table():
    rows = []
    with open(LAYOUT_MD, encoding="utf-8") as f:
        for line in f:
            match = re.match(r"\| (\d+) \| (\w+) \| \w+ \| (.+) \|$", line.strip())
            if match:
                for attr, shape in re.findall(r"(\w+) \[([\d, ]+)\]", match.group(3)):
                    rows.append((int(match.group(1)), match.group(2), attr,
                                 tuple(int(d) for d in shape.split(","))))
    return rows


def test_full_lresnet50_layout_matches_the_reference():
    layout = expected_layout(build_lresnet50())
    assert len(reference_layer_names()) == 158 and len(layout) == 395
    keys = {key: shape for _, _, key, shape, _ in layout}
    assert keys["resnet/layer_with_weights-8/kernel/.ATTRIBUTES/VARIABLE_VALUE"] == (1, 1, 64, 64)   # conv1sc
    assert keys["resnet/layer_with_weights-156/kernel/.ATTRIBUTES/VARIABLE_VALUE"] == (25088, 512)
    assert "resnet/layer_with_weights-157/gamma/.ATTRIBUTES/VARIABLE_VALUE" not in keys           # fc1: no gamma
    if not os.path.exists(LAYOUT_MD):
        pytest.skip(f"{LAYOUT_MD} not here: compared the spot checks only")
    table = _layout_table()
    assert len(table) == 395
    ours = [(index, path.split("/")[0], path.split("/")[1], shape) for index, path, _, shape, _ in layout]
    assert ours == table


def test_tool_writes_a_workdir_that_load_model_reads(reference, tmp_path):
    from mtarcface_tf.model.workdir import load_model

    workdir = str(tmp_path / "imported")
    overrides = [f"--config.model.units={UNITS}", f"--config.model.width={WIDTH}",
                 f"--config.model.input_size={SIZE}", f"--config.model.embedding_size={EMBEDDING}"]
    command = [sys.executable, os.path.join(REPO, "tools", "import_reference.py"),
               f"--config={os.path.join(REPO, 'configs', 'finetune_mtarcface.py')}", *overrides,
               f"--checkpoint={reference['prefix']}", f"--workdir={workdir}"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ArcFace centres loaded" in done.stdout
    model, config = load_model(workdir)
    assert config.num_classes == CLASSES
    np.testing.assert_allclose(model(reference["images"])["embedding"].numpy(), reference["embedding"], atol=1e-5)
