"""The export records what the model was trained on; the application warns about SynthFaces-only models."""
import json

import pytest

from mtarcface_tf.data import synthetic
from mtarcface_tf.export.saved_model import export_saved_model, read_metadata, training_data
from mtarcface_tf.inference.recognizer import training_data_warning
from tests.support import tiny


def _config_training_on(train="", synthetic_identities=0):
    config = tiny.tiny_config()
    config.data.train = train
    config.data.synthetic.identities = synthetic_identities
    return config


def _records_dir(folder, source):
    folder.mkdir()
    (folder / "train.manifest.json").write_text(json.dumps({"images": 1, "identities": 1, "shards": [],
                                                            "source": source}))
    return str(folder)


def test_generated_synthfaces_are_recognized():
    assert training_data(_config_training_on(synthetic_identities=10)) == {
        "train": "", "source": "synthfaces", "synthfaces": True}


def test_records_say_where_they_came_from(tmp_path):
    real = training_data(_config_training_on(_records_dir(tmp_path / "real", "/data/faces_emore/train.rec")))
    assert real["source"] == "/data/faces_emore/train.rec" and real["synthfaces"] is False
    made = synthetic.generate_dataset(str(tmp_path / "synth"), identities=2, images_per_identity=1,
                                      eval_identities=0, eval_pairs=0, image_size=32, num_shards=1, workers=1,
                                      progress=False)
    synth = training_data(_config_training_on(made["train"]))
    assert synth["synthfaces"] is True and synth["train"] == made["train"]


def test_no_manifest_or_nothing_configured_is_unknown(tmp_path):
    assert training_data(_config_training_on(str(tmp_path)))["source"] == "unknown"
    assert training_data(_config_training_on(str(tmp_path / "gone")))["synthfaces"] is False
    assert training_data(_config_training_on())["source"] == "unknown"


def test_export_metadata_holds_training_data(tmp_path):
    model, _ = tiny.build_tiny_model()
    trained_on = training_data(_config_training_on(synthetic_identities=10))
    export_dir = export_saved_model(model, tmp_path / "export" / "1", trained_on=trained_on)
    assert read_metadata(export_dir)["training_data"] == trained_on


@pytest.mark.parametrize("metadata, warns", [
    ({"training_data": {"synthfaces": True}}, True),
    ({"training_data": {"synthfaces": False, "source": "/data/train.rec"}}, False),
    ({}, False),
])
def test_warning_only_for_synthfaces_models(metadata, warns):
    warning = training_data_warning(metadata, "export/1")
    assert bool(warning) == warns
    if warns:
        assert "\n" not in warning and "SynthFaces" in warning and "export/1" in warning
