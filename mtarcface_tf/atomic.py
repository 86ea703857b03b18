"""Writers that never leave a half-written file or folder: write under a temporary name, rename when complete.

The ground floor (standard library only): every writer of the package goes through these, so a crash or an
interrupt leaves either the old file or the new one, never a truncated one.
"""
import contextlib
import json
import os
import shutil
import tempfile

TEMP_SUFFIX = ".tmp"


def temp_path_for(path, suffix=""):
    """Returns the temporary name ``path`` is written under: ``path + ".tmp" + suffix`` (str)."""
    return os.fspath(path) + TEMP_SUFFIX + suffix


@contextlib.contextmanager
def atomic_path(path, suffix=""):
    """Yields a temporary path beside ``path`` to write to; renames it onto ``path`` when the block completes.

    Args:
      path: the final file path (str or PathLike); its folder must exist.
      suffix: appended to the temporary name, for writers that choose the format by extension (".png").

    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    temp = temp_path_for(path, suffix)
    try:
        yield temp
        os.replace(temp, os.fspath(path))
    except BaseException:
        if os.path.exists(temp):
            os.remove(temp)
        raise


@contextlib.contextmanager
def atomic_open(path, mode="w", **open_kwargs):
    """Opens a temporary file beside ``path`` (``open(temp, mode, **open_kwargs)``) and renames it onto ``path``
    when the block completes; text modes default to UTF-8. Yields the file object."""
    if "b" not in mode:
        open_kwargs.setdefault("encoding", "utf-8")
    with atomic_path(path) as temp:
        with open(temp, mode, **open_kwargs) as handle:
            yield handle


def write_text(path, text):
    """Writes the str ``text`` to ``path`` (UTF-8) atomically. Returns ``path`` (str)."""
    with atomic_open(path) as handle:
        handle.write(text)
    return os.fspath(path)


def write_bytes(path, payload):
    """Writes the bytes ``payload`` to ``path`` atomically. Returns ``path`` (str)."""
    with atomic_open(path, "wb") as handle:
        handle.write(payload)
    return os.fspath(path)


def write_json(path, value, indent=2):
    """Writes ``value`` (anything ``json.dump`` takes) to ``path`` atomically, ``indent`` spaces per level and a
    final newline. Returns ``path`` (str)."""
    return write_text(path, json.dumps(value, indent=indent) + "\n")


@contextlib.contextmanager
def atomic_directory(path):
    """Yields a new empty folder to fill; renames it to ``path`` when the block completes.

    Args:
      path: the final folder (str or PathLike); must not exist when the block ends. Its parent is created.

    The folder is made inside a hidden ``mkdtemp`` folder beside ``path`` (same file system, so the rename is
    atomic; made with ``os.makedirs``, so it gets the usual permissions rather than mkdtemp's 0700). On an
    exception, or after the rename, the hidden folder and whatever is left in it are removed.
    """
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    holder = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}{TEMP_SUFFIX}-", dir=parent)
    try:
        target = os.path.join(holder, os.path.basename(path) or "out")
        os.makedirs(target)
        yield target
        os.rename(target, path)
    finally:
        shutil.rmtree(holder, ignore_errors=True)
