"""export/report_file.py: report.json's one reader and writer (eval writes it, exports read its threshold)."""
import pytest

from mtarcface_tf.export import report_file
from mtarcface_tf.export.saved_model import ExportError, read_report_threshold

REPORT = {"model": "m", "far_target": 1e-3, "sets": {}, "recommended_threshold": {"cosine_similarity": 0.3}}


def test_round_trip_and_the_threshold_reader(tmp_path):
    path = tmp_path / report_file.REPORT_FILE
    report_file.write_report_file(path, REPORT)
    assert report_file.read_report(path) == REPORT
    assert read_report_threshold(path) == {"cosine_similarity": 0.3}
    assert read_report_threshold(tmp_path / "absent.json") is None


@pytest.mark.parametrize("text, required, match", [
    ("{not json", (), "not a JSON report"),
    ("[1, 2]", (), "missing an object"),
    ('{"model": "m"}', report_file.REPORT_KEYS, "far_target"),
])
def test_what_is_not_a_report_is_named(tmp_path, text, required, match):
    path = tmp_path / "r.json"
    path.write_text(text)
    with pytest.raises(report_file.ReportFileError, match=match):
        report_file.read_report(path, required)


def test_a_minimal_report_gives_its_threshold_and_a_broken_one_an_export_error(tmp_path):
    (tmp_path / "min.json").write_text('{"recommended_threshold": {"squared_distance": 1.2}}')
    assert read_report_threshold(tmp_path / "min.json") == {"squared_distance": 1.2}
    (tmp_path / "bad.json").write_text('[]')
    with pytest.raises(ExportError, match="bad.json.*--report"):
        read_report_threshold(tmp_path / "bad.json")
