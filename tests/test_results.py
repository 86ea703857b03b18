"""mtarcface_tf.results: the record behind a published figure, and a benchmark's ending (saved, JSON line last)."""
import json

from mtarcface_tf import results


def test_save_result_records_the_context(tmp_path):
    path = results.save_result("x", {"a": 1}, out_dir=str(tmp_path), command="python bench/x.py")
    record = json.loads(open(path, encoding="utf-8").read())
    assert record["name"] == "x" and record["figures"] == {"a": 1} and record["command"] == "python bench/x.py"
    assert {"date", "machine", "load_average_1min", "git_revision"} <= set(record)


def test_report_result_prints_the_json_line_last(tmp_path, capsys):
    path = results.report_result("bench_x", {"img_s": 2.5}, out_dir=str(tmp_path))
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == f"saved {path}" and json.loads(lines[-1]) == {"img_s": 2.5}
    assert json.loads(open(path, encoding="utf-8").read())["figures"] == {"img_s": 2.5}
    assert results.report_result("unsaved", {"b": 1}, save=False) is None
    assert capsys.readouterr().out.strip() == '{"b": 1}'
