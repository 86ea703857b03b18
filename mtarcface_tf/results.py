"""Result files: every figure published in README comes from a run whose JSON is kept under ``docs/results/``.

One home for the record's shape (and for ``median_seconds``, the benches' timer): ``{"name", "command", "date",
"machine", "load_average_1min", "git_revision", "figures"}`` (the load average says whether other work shared the
machine while it ran). Benchmarks and the demo call :func:`save_result` with their figures (benchmarks through
:func:`report_result`); README names the file beside each figure.
"""
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time

from mtarcface_tf.atomic import write_json

DEFAULT_DIR = os.path.join("docs", "results")


def machine_description():
    """Returns a one-line description of this machine: CPU model, logical cores, memory, OS (str)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory = ""
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            kib = int(f.readline().split()[1])
        memory = f", {kib / 2**20:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return f"{cpu}, {os.cpu_count()} logical cores{memory}, {platform.system()} {platform.release()}"


def median_seconds(function, iters, warmup=3):
    """Calls ``function()`` ``warmup`` times untimed, then ``iters`` times; returns the median wall time (s, float)."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return float(statistics.median(times))


def anon_rss_bytes():
    """This process's resident anonymous memory now (int bytes, Linux): its own RAM, without the pages of
    memory-mapped files, which belong to the page cache and are shared with every process that maps them."""
    with open("/proc/self/status", encoding="ascii") as status:
        return 1024 * next(int(line.split()[1]) for line in status if line.startswith("RssAnon:"))


def git_revision(cwd=None):
    """Returns the abbreviated commit of the checkout holding ``cwd`` (str), with "-dirty" when tracked files
    outside ``DEFAULT_DIR`` differ from it (result files written by an earlier run of the same batch do not make
    the code dirty), or "unknown"."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=cwd, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":(top)",
                                  f":(top,exclude){DEFAULT_DIR}"], cwd=cwd, capture_output=True, text=True, timeout=10,
                                 check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (commit + ("-dirty" if changed else "")) if commit else "unknown"


def save_result(name, figures, out_dir=DEFAULT_DIR, command=None):
    """Writes ``out_dir/NAME.json`` (temporary name, then rename) and returns its path.

    Args:
      name: file stem, e.g. ``"pipeline"`` or ``"demo"``.
      figures: JSON-serialisable dict of the measured figures.
      out_dir: folder of result files (created when missing).
      command: the command line that produced the figures; default: this process's ``sys.argv``.
    """
    record = {
        "name": name,
        "command": command or " ".join(shlex.quote(a) for a in [os.path.basename(sys.executable)] + sys.argv),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_description(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "git_revision": git_revision(),
        "figures": figures,
    }
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{name}.json")
    return write_json(path, record, indent=1)


def report_result(name, figures, save=True, out_dir=DEFAULT_DIR):
    """A benchmark's ending: saves ``figures`` as ``out_dir/NAME.json`` (``save_result``; skipped when ``save`` is
    False) with a "saved PATH" line, then prints ``figures`` as the one JSON line that comes last.

    Returns the saved path (str), or None when not saved.
    """
    path = save_result(name, figures, out_dir) if save else None
    if path:
        print(f"saved {path}")
    print(json.dumps(figures), flush=True)
    return path
