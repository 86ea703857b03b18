"""mtarcface_tf.progress: a tqdm bar on a terminal, whole lines at most every few seconds in a log."""
import glob
import io
import os
import re

from mtarcface_tf import progress as progress_lib


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def _run(stream, items, seconds_per_item, monkeypatch):
    """Iterates ``items`` under a fake clock that advances ``seconds_per_item`` per item; returns the output."""
    now = [0.0]
    monkeypatch.setattr("tqdm.std.time", lambda: now[0])
    for _ in progress_lib.progress_bar(range(items), desc="work", file=stream):
        now[0] += seconds_per_item
    return stream.getvalue()


def test_a_log_gets_whole_lines_every_few_seconds(monkeypatch):
    # 1,000 items of 0.1 s: 100 s of work -> about 100 / PLAIN_EVERY_SECS lines, not 1,000 redraws.
    text = _run(io.StringIO(), 1000, 0.1, monkeypatch)
    assert "\r" not in text
    lines = text.splitlines()
    expected = 100 / progress_lib.PLAIN_EVERY_SECS
    assert expected * 0.5 <= len(lines) <= expected * 1.5 + 2, lines
    assert all(line.startswith("work:") for line in lines)
    assert "1000/1000" in lines[-1]


def test_a_terminal_gets_a_bar(monkeypatch):
    text = _run(_Terminal(), 50, 0.1, monkeypatch)
    assert "\r" in text and "50/50" in text


def test_a_stream_without_isatty_is_not_a_terminal():
    assert not progress_lib.is_terminal(object())


def test_progress_has_one_home():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    users = [path for folder in ("mtarcface_tf", "tools", "bench")
             for path in glob.glob(os.path.join(root, folder, "**", "*.py"), recursive=True)
             if re.search(r"^\s*(from tqdm|import tqdm)", open(path, encoding="utf-8").read(), re.M)]
    assert [os.path.relpath(path, root) for path in users] == [os.path.join("mtarcface_tf", "progress.py")]
