"""Bad input to tools/export.py, convert.py, preview_masks.py and make_synthfaces.py: one line naming the file
and the fix, no traceback, nothing half-written; each case runs the real tool in a fresh process (side by side)."""
import os

import numpy as np
import pytest

from mtarcface_tf.data.bin_pairs import save_bin
from tests.support import processes, tiny

# Fresh-process tool runs: the slow tier (the libraries behind them are tested in the fast one).
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Runs every case; returns (dict case -> CompletedProcess, root)."""
    root = tmp_path_factory.mktemp("bad")
    model, config = tiny.build_tiny_model()
    workdir = tiny.save_workdir(model, config, root / "run")
    save_bin(str(root / "pairs.bin"), np.zeros((2, 32, 32, 3), np.uint8), [True])
    (root / "a_file").write_text("not a folder")
    (root / "tflite_export" / "tflite").mkdir(parents=True)
    (root / "tflite_export" / "tflite" / "1").write_text("in the way of the TFLite folder of version 1")
    convert = ["tools/convert.py", "--source=bin", f"--input={root / 'pairs.bin'}", "--workers=1"]
    export = ["tools/export.py", f"--workdir={workdir}"]
    cases = {
        "convert_into_a_file": convert + [f"--output_dir={root / 'a_file'}"],
        "convert_under_a_file": convert + [f"--output_dir={root / 'a_file' / 'out'}"],
        "export_missing_report": export + [f"--export_dir={root / 'exp'}", f"--report={root / 'nope.json'}"],
        "export_into_a_file": export + [f"--export_dir={root / 'a_file'}"],
        "export_tflite_fails": export + [f"--export_dir={root / 'tflite_export'}", "--tflite"],
        "preview_under_a_file": ["tools/preview_masks.py", f"--output={root / 'a_file' / 'grid.png'}", "--rows=2",
                                 "--cols=1", "--image_size=32"],
        "synthfaces_into_a_file": ["tools/make_synthfaces.py", f"--output_dir={root / 'a_file'}", "--identities=2",
                                   "--images_per_identity=1", "--eval_identities=0", "--eval_pairs=0",
                                   "--workers=1"],
    }
    started = {name: processes.start_python(args) for name, args in cases.items()}
    return {name: processes.finish(process, timeout=300) for name, process in started.items()}, root


def test_convert_output_dir_that_is_a_file(runs):
    results, root = runs
    processes.one_error_line(results["convert_into_a_file"], root / "a_file", "--output_dir")
    processes.one_error_line(results["convert_under_a_file"], root / "a_file", "--output_dir")
    assert (root / "a_file").read_text() == "not a folder"


def test_export_explicit_report_must_exist(runs):
    results, root = runs
    processes.one_error_line(results["export_missing_report"], root / "nope.json", "--report")
    assert not (root / "exp").exists()


def test_export_dir_that_is_a_file(runs):
    results, root = runs
    processes.one_error_line(results["export_into_a_file"], root / "a_file", "--export_dir")


def test_tflite_failure_says_the_saved_model_is_fine(runs):
    results, root = runs
    line = processes.one_error_line(results["export_tflite_fails"], "TFLite", root / "tflite_export" / "1")
    assert "complete and usable" in line
    assert (root / "tflite_export" / "1" / "saved_model.pb").is_file()
    assert (root / "tflite_export" / "tflite" / "1").read_text().startswith("in the way")
    assert not any(name.startswith(".") for name in os.listdir(root / "tflite_export"))


def test_preview_and_synthfaces_outputs_under_a_file(runs):
    results, root = runs
    processes.one_error_line(results["preview_under_a_file"], root / "a_file", "--output")
    processes.one_error_line(results["synthfaces_into_a_file"], root / "a_file", "--output_dir")
