"""Progress of long work, one home for it: a tqdm bar on a terminal; plain lines every few seconds otherwise.

A bar redraws itself with carriage returns, which fills a log file (``make demo > log``) with thousands of
updates; when the stream is not a terminal the same tqdm object prints one whole line per update instead, at most
every ``PLAIN_EVERY_SECS`` seconds, plus the final line.
"""
import sys

from tqdm import tqdm

PLAIN_EVERY_SECS = 5.0    # a log line this often is readable in a log and shows the job is alive


class _WholeLines:
    """A stream adaptor for tqdm: writes each status as one line; drops the bare '\\r' and padding it redraws with."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text):
        line = text.strip()
        if line:
            self.stream.write(line + "\n")
            self.stream.flush()

    def flush(self):
        self.stream.flush()


def is_terminal(stream):
    """True when ``stream`` (a text stream; may lack ``isatty``) is an interactive terminal."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def progress_bar(iterable=None, **kwargs):
    """Returns ``tqdm(iterable, **kwargs)``, printing plain lines when its stream is not a terminal.

    Args:
      iterable: what to iterate over (or None with ``total=`` and manual ``update``), as for tqdm.
      **kwargs: tqdm's keyword arguments (``total``, ``desc``, ``unit``, ``disable``, ``file``, ...).
    """
    stream = kwargs.pop("file", None) or sys.stderr
    if is_terminal(stream):
        return tqdm(iterable, file=stream, **kwargs)
    kwargs.update(mininterval=max(kwargs.get("mininterval", 0), PLAIN_EVERY_SECS), ascii=True)
    return tqdm(iterable, file=_WholeLines(stream), **kwargs)
