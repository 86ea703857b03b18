"""README's and docs' tables come from the result files, and every result file from a commit of this history."""
import glob
import importlib.util
import json
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("bench_tables", os.path.join(ROOT, "bench", "tables.py"))
tables = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tables)
RESULT_FILES = sorted(glob.glob(os.path.join(ROOT, "docs", "results", "*.json")))


def _git(*args):
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)


@pytest.mark.parametrize("page", tables.pages(ROOT), ids=lambda p: os.path.relpath(p, ROOT))
def test_every_marked_table_is_what_its_result_files_give(page):
    with open(page, encoding="utf-8") as handle:
        text = handle.read()
    for match in tables.BLOCK.finditer(text):
        assert match.group("name") in tables.TABLES, f"{page}: unknown table {match.group('name')!r}"
    assert tables.rendered(text) == text, (f"{os.path.relpath(page, ROOT)}: a table differs from docs/results; "
                                           "run python bench/tables.py (or bench/all.py to re-measure)")


def test_readme_has_marked_tables():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        assert len(tables.BLOCK.findall(handle.read())) >= 2


def test_a_changed_figure_is_caught(tmp_path):
    page = "<!-- table:mask_placement -->\n" + tables.mask_placement_table() + "\n<!-- /table -->\n"
    assert tables.rendered(page) == page
    assert tables.rendered(page.replace("100.0%", "99.0%", 1)) == page


@pytest.mark.parametrize("path", RESULT_FILES, ids=os.path.basename)
def test_result_file_names_a_revision_of_this_history(path):
    if _git("rev-parse", "HEAD").returncode != 0 or _git("rev-parse", "--is-shallow-repository").stdout.strip() \
            == "true":
        pytest.skip("needs the full git history")
    with open(path, encoding="utf-8") as handle:
        record = json.load(handle)
    for key in ("command", "date", "machine", "load_average_1min", "git_revision", "figures"):
        assert key in record, f"{path}: no {key}"
    revision = record["git_revision"].removesuffix("-dirty")
    assert _git("merge-base", "--is-ancestor", revision, "HEAD").returncode == 0, (
        f"{os.path.basename(path)}: revision {record['git_revision']} is not an ancestor of HEAD; regenerate it "
        f"(python bench/all.py --only={record['name']}) or drop it")
