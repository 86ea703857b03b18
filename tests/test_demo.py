"""The main job end to end in its --quick form, and the preview grid it writes."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from mtarcface_tf import demo
from mtarcface_tf.data import preview
from mtarcface_tf.faces import detect

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_mask_preview_grid_pairs_clean_and_masked_rows():
    faces = np.full((6, 32, 32, 3), 128, np.uint8)
    grid, masked = preview.mask_preview_grid(faces, cols=3, probability=1.0, seed=0)
    assert grid.shape == (4 * 32, 3 * 32, 3)
    assert masked == 6
    # Masked rows differ from the clean rows above them in the lower face.
    assert np.abs(grid[32 + 24:32 + 28].astype(int) - grid[24:28].astype(int)).max() > 0


def test_recognition_photos_are_scenes_with_the_faces_of_unseen_people(tmp_path):
    from mtarcface_tf.configs import demo_mtarcface
    settings = dict(people=2, enrol_photos=2, probe_photos=1, scene_size=200, face_fraction=0.5)
    photos = demo.write_recognition_photos(demo_mtarcface.get_config(), str(tmp_path), settings)
    assert sorted(os.listdir(photos["enrol"])) == ["person_00", "person_01"]
    assert [truth for _, truth in photos["probes"]] == ["person_00", "person_01"]
    enrol = os.path.join(photos["enrol"], "person_00", "0.jpg")
    for path in [enrol] + [path for path, _ in photos["probes"]]:
        assert detect.read_image_rgb(path).shape == (200, 200, 3)
    assert len(os.listdir(os.path.join(photos["enrol"], "person_01"))) == 2


def _check_demo_outputs(out, stdout):
    """Asserts what every demo run writes: the table, both reports with all variants, the export, the gallery."""
    assert "| synth | ArcFace |" in stdout and "| synth | MTArcFace |" in stdout
    summary = json.loads((out / "summary.json").read_text())
    recognition = summary["recognition"]
    # Photos went through the detector: faces were found in the unmasked and in the masked scenes.
    assert recognition["queries"] > 0 and recognition["probes_found"] > 0 and recognition["enrol_found"] > 0
    assert os.path.isfile(os.path.join(summary["export"], "saved_model.pb"))
    for name in ("report.md", "synthfaces_samples.png", "reports/arcface/report.json",
                 "reports/mtarcface/report.json", "gallery/gallery.db"):
        assert (out / name).is_file(), name
    for model in ("arcface", "mtarcface"):
        report = json.loads((out / f"reports/{model}/report.json").read_text())
        assert set(report["sets"]["synth"]["variants"]) == {"clean", "masked", "mixed", "combined"}
    assert json.loads((out / "reports/mtarcface/report.json").read_text())["sets"]["synth"]["mask_usage"]
    figures = demo.headline_figures({name: json.loads((out / f"reports/{demo.slug(name)}/report.json").read_text())
                                     for name in ("ArcFace", "MTArcFace")})
    for model in figures.values():   # what bench/quick_demo.py reads
        assert 0 <= model["clean"]["accuracy"] <= 1 and -2 <= demo.mask_accuracy_drop(model) <= 2


@pytest.mark.slow   # a minute; the fast tier keeps the demo's parts (tests of each stage's library)
def test_tiny_demo_runs_the_whole_path_in_process(tmp_path, monkeypatch, capsys):
    # The demo's every stage on a few images and two steps per model, one after the other in this process; the
    # claim that masks cost MTArcFace less than ArcFace is bench/quick_demo.py's (a distribution, not a test).
    monkeypatch.setitem(demo.demo_configs.QUICK, "steps", 2)
    monkeypatch.setitem(demo.demo_configs.QUICK, "identities", 8)
    monkeypatch.setitem(demo.demo_configs.QUICK, "images_per_identity", 4)
    monkeypatch.setitem(demo.demo_configs.QUICK, "eval_identities", 6)
    monkeypatch.setitem(demo.demo_configs.QUICK, "eval_pairs", 40)
    # Few photos in small scenes (as seeded, RetinaFace finds 4 of the 8 unmasked and 6 of the 8 masked faces; in
    # 224-pixel scenes it finds none of the unmasked ones).
    monkeypatch.setattr(demo.demo_configs, "RECOGNITION", dict(people=4, enrol_photos=2, probe_photos=2,
                                                                scene_size=320, face_fraction=0.5))
    summary = demo.run_demo(str(tmp_path), quick=True, parallel=False)
    out = tmp_path / demo.QUICK_DIR
    assert summary["steps"] == 2 and summary["output_dir"] == str(out)
    print(summary["table"])
    _check_demo_outputs(out, capsys.readouterr().out)
    assert json.loads((out / "reports/mtarcface/report.json").read_text())["sets"]["synth"]["pairs"] == 40


@pytest.mark.slow
def test_quick_demo_command_produces_table_report_export_and_recognition(tmp_path):
    # `tools/demo.py --quick` as a user runs it: both models trained side by side in two processes.
    out = tmp_path / "demo"
    result = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "demo.py"), "--quick",
                             f"--output_dir={out}"], capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    _check_demo_outputs(out / demo.QUICK_DIR, result.stdout)   # a quick run keeps to its own subdirectory
    assert "Masked people identified" in result.stdout


def test_quick_and_full_runs_keep_separate_directories_and_other_settings_start_afresh(tmp_path, capsys):
    full, quick = demo.demo_configs.get_configs(), demo.demo_configs.get_configs(quick=True)
    assert demo.run_directory(str(tmp_path)) == str(tmp_path)
    assert demo.run_directory(str(tmp_path), quick=True) == str(tmp_path / demo.QUICK_DIR)
    demo.prepare_run_directory(str(tmp_path), full)
    (tmp_path / "arcface").mkdir()
    (tmp_path / "synthfaces").mkdir()
    (tmp_path / "notes.txt").write_text("mine")
    demo.prepare_run_directory(str(tmp_path), full)          # same settings: everything kept (resumed)
    assert (tmp_path / "arcface").is_dir() and "afresh" not in capsys.readouterr().out
    changed = demo.demo_configs.get_configs()
    changed["MTArcFace"].data.synthetic.identities += 1
    demo.prepare_run_directory(str(tmp_path), changed)
    assert "starting afresh" in capsys.readouterr().out
    assert not (tmp_path / "arcface").exists() and not (tmp_path / "synthfaces").exists()
    assert (tmp_path / "notes.txt").read_text() == "mine"     # not the demo's: left alone
    assert quick["MTArcFace"].num_steps < full["MTArcFace"].num_steps
