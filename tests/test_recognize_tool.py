"""tools/recognize.py end to end in subprocesses: enroll, identify a folder with bad files, clear one-line errors."""
import csv
import json
import os

import cv2
import numpy as np
import pytest
import tensorflow as tf

from mtarcface_tf.export.saved_model import export_saved_model
from tests.support import processes, tiny

SIZE = 32

# Fresh-process tool runs: the slow tier (the libraries behind them are tested in the fast one).
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Runs every CLI case (independent ones side by side); returns dict case -> CompletedProcess, plus paths."""
    root = tmp_path_factory.mktemp("cli")
    model, _ = tiny.build_tiny_model(input_size=SIZE)
    export = export_saved_model(model, root / "export" / "1")
    faces = tiny.random_faces(6, SIZE, seed=3)
    for index, face in enumerate(faces[:4]):
        tiny.write_png(root / "people" / f"p{index // 2}" / f"{index}.png", face)
    (root / "people" / "p1" / "broken.jpg").write_bytes(b"not a jpeg")
    tiny.write_png(root / "queries" / "a.png", faces[0])
    tiny.write_png(root / "queries" / "b.png", faces[4])
    (root / "queries" / "corrupt.png").write_bytes(b"\x89PNG garbage")
    (root / "bad.mp4").write_bytes(b"not a video")
    model_arg, gallery = f"--model={root / 'export'}", f"--gallery={root / 'g.npz'}"
    tool = "tools/recognize.py"
    parallel = {
        "enroll": [tool, "enroll", model_arg, gallery, f"--images={root / 'people'}", "--aligned"],
        "bad_video": [tool, "identify", model_arg, gallery, f"--input={root / 'bad.mp4'}", "--aligned"],
        "bad_model": [tool, "verify", f"--model={root / 'people'}", str(root / "queries" / "a.png"),
                      str(root / "queries" / "b.png")],
        "unreadable": [tool, "identify", model_arg, gallery, f"--input={root / 'queries' / 'corrupt.png'}"],
        "verify": [tool, "verify", model_arg, "--aligned", str(root / "queries" / "a.png"),
                   str(root / "queries" / "a.png")],
    }
    started = {name: processes.start_python(args) for name, args in parallel.items()}
    results = {name: processes.finish(process) for name, process in started.items()}
    output_dir = root / "out"
    identify = [tool, "identify", model_arg, gallery, "--aligned", "--threshold=-1", f"--output_dir={output_dir}"]
    results["identify"] = processes.run_python(identify + [f"--input={root / 'queries'}"])
    expected = _expected_matches(export, faces[:4], {"a.png": faces[0], "b.png": faces[4]})
    # A threshold between the enrolled face's similarity and the stranger's: a.png is p0, b.png is unknown.
    threshold = (expected["a.png"][1] + expected["b.png"][1]) / 2
    strict = [tool, "identify", model_arg, gallery, "--aligned", f"--threshold={threshold}",
              f"--output_dir={root / 'out_strict'}", f"--input={root / 'queries'}"]
    results["identify_strict"] = processes.run_python(strict)
    return {"results": results, "root": root, "output_dir": output_dir, "export": export, "expected": expected}


def _expected_matches(export, enrolled, queries):
    """{query name: (nearest person, cosine)} computed here from the export's embeddings with numpy.

    ``enrolled`` are p0's two images then p1's two; each person's template is the renormalized mean of the
    normalized embeddings (the gallery's documented rule).
    """
    serve = tf.saved_model.load(str(export)).signatures["serving_default"]

    def embed(images):
        vectors = serve(images=tf.constant(np.asarray(images)))["embedding"].numpy()
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    people = embed(enrolled).reshape(2, 2, -1).mean(axis=1)
    people /= np.linalg.norm(people, axis=1, keepdims=True)
    names = list(queries)
    cosines = embed([queries[name] for name in names]) @ people.T
    return {name: (f"p{int(np.argmax(row))}", float(np.max(row))) for name, row in zip(names, cosines)}


def _assert_one_line_error(result, name):
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and name in errors[0], result.stderr[-2000:]


def test_enroll_skips_and_counts_a_broken_image(runs):
    result = runs["results"]["enroll"]
    assert result.returncode == 0, result.stderr[-2000:]
    assert "enrolled 2 people from 4 images" in result.stdout and "1 images failed" in result.stdout
    assert "broken.jpg" in result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"enrolled": {"p0": 2, "p1": 2}, "failed": 1}


def test_identify_folder_completes_despite_a_corrupt_file(runs):
    result = runs["results"]["identify"]
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"inputs": 3, "failed": 1, "faces": 2}
    assert "corrupt.png" in result.stderr
    with open(runs["output_dir"] / "results.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    by_file = {os.path.basename(row["source"]): row for row in rows}
    for name, (person, similarity) in runs["expected"].items():
        assert by_file[name]["identity"] == person
        assert float(by_file[name]["similarity"]) == pytest.approx(similarity, abs=1e-4)
    assert runs["expected"]["a.png"][0] == "p0"
    assert by_file["a.png"]["mask"] in ("mask", "no_mask") and by_file["corrupt.png"]["error"]
    assert len(json.loads((runs["output_dir"] / "results.json").read_text())) == 3
    annotated = cv2.imread(str(runs["output_dir"] / "a.png"))
    assert annotated is not None and annotated.shape == (SIZE, SIZE, 3)


def test_identify_calls_a_face_below_the_threshold_unknown(runs):
    expected = runs["expected"]
    assert expected["a.png"][1] > expected["b.png"][1] + 1e-3   # the fixture separates them
    result = runs["results"]["identify_strict"]
    assert result.returncode == 0, result.stderr[-2000:]
    with open(runs["root"] / "out_strict" / "results.csv", encoding="utf-8") as handle:
        identities = {os.path.basename(row["source"]): row["identity"] for row in csv.DictReader(handle)}
    assert identities["a.png"] == "p0" and identities["b.png"] == "unknown"


def test_verify_same_image(runs):
    result = runs["results"]["verify"]
    assert result.returncode == 0, result.stderr[-2000:]
    verdict = json.loads(result.stdout.strip().splitlines()[-1])
    assert verdict["same"] and verdict["similarity"] == pytest.approx(1.0, abs=1e-5)


def test_clear_errors(runs):
    _assert_one_line_error(runs["results"]["bad_video"], "bad.mp4")
    _assert_one_line_error(runs["results"]["bad_model"], "people")
    _assert_one_line_error(runs["results"]["unreadable"], "corrupt.png")
