"""The main job end to end in its --quick form, and the preview grid it writes."""
import json
import os
import subprocess
import sys

import numpy as np

from mtarcface_tf.data import preview

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_mask_preview_grid_pairs_clean_and_masked_rows():
    faces = np.full((6, 32, 32, 3), 128, np.uint8)
    grid, masked = preview.mask_preview_grid(faces, cols=3, probability=1.0, seed=0)
    assert grid.shape == (4 * 32, 3 * 32, 3)
    assert masked == 6
    # Masked rows differ from the clean rows above them in the lower face.
    assert np.abs(grid[32 + 24:32 + 28].astype(int) - grid[24:28].astype(int)).max() > 0


def test_quick_demo_produces_table_report_export_and_recognition(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "demo.py"), "--quick",
                             f"--output_dir={out}"], capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| synth | ArcFace |" in result.stdout and "| synth | MTArcFace |" in result.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["recognition"]["queries"] > 0
    assert 0.0 <= summary["recognition"]["identified"] <= 1.0
    assert os.path.isfile(os.path.join(summary["export"], "saved_model.pb"))
    for name in ("report.md", "synthfaces_samples.png", "reports/arcface/report.json",
                 "reports/mtarcface/report.json", "gallery.npz"):
        assert (out / name).is_file(), name
    mt_report = json.loads((out / "reports/mtarcface/report.json").read_text())
    assert set(mt_report["sets"]["synth"]["variants"]) >= {"clean", "masked", "mixed"}
    assert mt_report["sets"]["synth"]["mask_usage"] is not None
