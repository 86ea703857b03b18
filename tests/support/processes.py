"""Running the tools and scripts the way a user does: a fresh Python process from the repository root, and the
one-error-line check of a failed run. Not a test module."""
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def python_path():
    """Returns a PYTHONPATH for a child process: the repository root first (so ``tests.support`` imports there
    too), then the caller's PYTHONPATH."""
    return os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH", "")]))


def start_python(args):
    """Starts ``python ARGS...`` from the repository root in a fresh process (CPU only, quiet TF); returns the
    ``subprocess.Popen`` (text stdout/stderr pipes). Use ``.communicate(timeout=...)`` to wait."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow",
           "PYTHONPATH": python_path()}
    return subprocess.Popen([sys.executable, *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(process, timeout=180):
    """Waits for a ``start_python`` process; returns ``subprocess.CompletedProcess``."""
    stdout, stderr = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def run_python(args, timeout=180):
    """Runs ``python ARGS...`` like ``start_python`` and waits; returns ``subprocess.CompletedProcess``."""
    return finish(start_python(args), timeout)


def one_error_line(result, *names):
    """Asserts a finished tool run failed with exactly one ``error:`` line on stderr, no traceback, naming each of
    ``names``; returns that line."""
    assert result.returncode != 0, result.stdout[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    for name in names:
        assert str(name) in errors[0], errors[0]
    return errors[0]
