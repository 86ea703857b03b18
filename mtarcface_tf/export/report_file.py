"""``report.json``, the evaluation report applications take their threshold from: its name, its keys, reading and
writing. The one home of the file format: ``eval/report.py`` writes it, exports and workdirs read its threshold."""
import json
import os

from mtarcface_tf.atomic import write_json

REPORT_FILE = "report.json"
REPORT_KEYS = ("model", "far_target", "sets", "recommended_threshold")


class ReportFileError(ValueError):
    """A file that is not a report.json (not JSON, not an object, or keys missing); the message names it."""


def read_report(path, required=REPORT_KEYS):
    """Returns the dict of a report.json.

    Args:
      path: the file (str or PathLike).
      required: keys it must hold (``()`` to accept any JSON object, e.g. to read only the threshold).

    Raises:
      FileNotFoundError: no file at ``path``. ReportFileError: not JSON, not an object, or a ``required`` key missing.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: report not found (write one with tools/evaluate.py)")
    try:
        with open(path, encoding="utf-8") as handle:
            report = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ReportFileError(f"{path}: not a JSON report ({error}); re-run tools/evaluate.py") from error
    missing = [key for key in required if not isinstance(report, dict) or key not in report]
    if missing or not isinstance(report, dict):
        raise ReportFileError(f"{path}: not a report.json of tools/evaluate.py (missing {missing or 'an object'})")
    return report


def write_report_file(path, report):
    """Writes the report dict (JSON-serialisable) to ``path`` atomically, indented. Returns ``path`` (str)."""
    return write_json(path, report, indent=2)
