"""The rehearsal of the paper's run: its arithmetic against hand-computed values, its commands against the run guide,
and one tiny rehearsal end to end (a small network instead of the paper's, so that it takes a few minutes)."""
import json
import os

import numpy as np
import pytest

from mtarcface_tf import rehearsal
from mtarcface_tf.data import recordio

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUIDE = os.path.join(ROOT, "docs", "paper_run.md")


def test_fit_separates_start_up_from_per_item_time():
    assert rehearsal._fit((100, 12.0), (900, 28.0)) == pytest.approx((10.0, 0.02))
    # noise that makes the slope non-positive: per item from the larger run alone, no start-up
    assert rehearsal._fit((100, 30.0), (900, 27.0)) == pytest.approx((0.0, 0.03))


def _stages():
    data = dict(items=800, seconds=10.0, startup_seconds=2.0, seconds_per_item=0.01)
    return {"convert": dict(data), "landmarks": dict(data, seconds_per_item=0.001),
            "train": dict(items=64, seconds=30.0, rate=4.0), "evaluate": dict(items=600, seconds=60.0, rate=19.0),
            "export": dict(items=1, seconds=50.0, rate=0.02), "identify": dict(items=10, seconds=20.0, rate=0.5)}


def test_extrapolation_to_the_full_run():
    costs = dict(forward_flops=1e10, train_flops=3e10)
    full = rehearsal.extrapolate(_stages(), costs)
    assert full["convert"]["here_seconds"] == pytest.approx(2.0 + 0.01 * 5_800_000)
    assert full["landmarks"]["here_seconds"] == pytest.approx(2.0 + 0.001 * 5_800_000)
    # 300k steps of 512 at 4 img/s, plus 30 evaluations (every 10k steps) of 38,000 images at 19 img/s
    assert full["train"]["here_seconds"] == pytest.approx(153_600_000 / 4.0 + 30 * 2_000.0)
    assert full["evaluate"]["here_seconds"] == pytest.approx(2_000.0)
    one_eval = 6 * 38_000 * 1e10 / (989e12 * 0.2)
    assert full["evaluate"]["gpu_seconds"][8] == pytest.approx(one_eval)       # evaluation runs on one device
    assert full["train"]["gpu_seconds"][1] == pytest.approx(153_600_000 * 3e10 / (989e12 * 0.2) + 30 * one_eval)
    assert full["train"]["gpu_seconds"][8] == pytest.approx(153_600_000 * 3e10 / (8 * 989e12 * 0.2) + 30 * one_eval)
    assert full["export"]["here_seconds"] == 50.0 and full["export"]["gpu_seconds"] is None


def test_gpu_memory_estimate():
    costs = dict(trainable_parameters=1_000_000, other_parameters=1_000, activations=2_000_000, classes=10_000)
    expected = (4 * (3 * 1_000_000 + 1_000) + 2 * 2_000_000 * 64 + 4 * 3 * 64 * 10_000) / 2**30
    assert rehearsal.gpu_memory(costs, 64, activation_bytes=2) == pytest.approx(expected)


def test_the_run_guide_shows_every_command_of_the_rehearsal():
    with open(GUIDE, encoding="utf-8") as f:
        guide = f.read()
    joined = " ".join(guide.replace("\\\n", " ").split())
    missing = [name for name, command in rehearsal.COMMANDS.items() if " ".join(command.split()) not in joined]
    assert not missing, f"docs/paper_run.md lacks the commands of: {missing}"


@pytest.mark.slow
def test_a_tiny_rehearsal_runs_every_stage(tmp_path, capsys):
    scale = rehearsal.Scale(identities=16, images_per_identity=4, pairs=10, steps=3, batch_size=4, people=2,
                            enroll_images=1, query_images=1)
    small_network = {"model.units": (1, 1, 1, 1), "model.width": 0.25, "num_classes": 16, "log_every_secs": 0.0}
    summary = rehearsal.run_rehearsal(str(tmp_path / "run"), scale, config_overrides=small_network)
    stages = summary["stages"]
    assert list(stages) == ["convert", "landmarks", "train", "evaluate", "export", "identify"]
    assert all(stage["seconds"] > 0 for stage in stages.values())
    emore = tmp_path / "run" / "faces_emore"
    assert (emore / "property").read_text() == "16,112,112\n"
    with recordio.RecordIOReader(str(emore / "train.rec")) as reader:
        assert (len(reader), reader.num_identities) == (64, 16)
    manifest = json.loads((tmp_path / "run" / "data" / "train_ms1mv2_landmarks" / "train.manifest.json").read_text())
    assert manifest["images"] == 64 and manifest["identities"] == 16
    assert stages["train"]["steps"] == 3 and np.isfinite(stages["train"]["loss"])
    assert set(summary["evaluation"]) == {"lfw", "cfp_fp", "agedb_30"}
    assert all({"clean", "masked", "mixed"} <= set(entry["variants"]) for entry in summary["evaluation"].values())
    assert os.path.isfile(os.path.join(stages["export"]["saved_model"], "saved_model.pb"))
    assert all(os.path.isfile(path) for path in stages["export"]["onnx"].values())
    assert stages["export"]["min_cosine"] > 0.999
    assert stages["identify"]["queries"] == 2 and stages["identify"]["status"] == 0
    table = "\n".join(summary["table"])
    assert all(f"| {name} |" in table for name in stages)
    assert "| 2 x 256 |" in table
    assert "| train |" in capsys.readouterr().out
