"""Keeps TensorFlow's own log lines out of the tools' output (ground floor: imports no TensorFlow).

TensorFlow writes C++ log lines (CUDA probing, oneDNN notes, "Sharding callback duration"), Python INFO/WARNING
lines through the ``tensorflow`` logger (``signature_serialization``, ``fingerprinting_utils``) and Python warnings;
Keras adds its own. Between the project's lines they bury what a user needs. ``quiet_tensorflow``, called by every
tool before anything imports TensorFlow, turns them off unless the user asks for them with ``--verbosity=0`` (or
higher: absl's flag, INFO) or ``MTARCFACE_TF_LOGS=1``. The project's own lines, progress bars and errors stay.
"""
import importlib.abc
import importlib.util
import logging
import os
import re
import sys
import tempfile
import warnings

ENV_VAR = "MTARCFACE_TF_LOGS"           # "1": show TensorFlow's logs (set by --verbosity >= 0, inherited by children)
QUIET_CPP_LEVEL = "3"                   # TF_CPP_MIN_LOG_LEVEL: drop C++ INFO, WARNING and ERROR lines
LIBRARY_LOGGERS = ("tensorflow", "keras", "absl.tensorflow", "h5py", "jax")
LIBRARY_MODULES = r"(tensorflow|keras|tf_keras|tensorboard|google\.protobuf|jax)(\.|$)"
VERBOSITY_FLAGS = ("--verbosity", "-v")
# A C++ log line (glog/absl format "I0000 00:00:... file.cc:12] ..."), absl's pre-initialisation notice, and the
# second line of TensorFlow's CPU-instructions note.
CPP_LOG_LINE = re.compile(r"^([IWEF]\d{4} [\d:.]+ +\d+ \S+:\d+\]|WARNING: All log messages before "
                          r"absl::InitializeLog\(\)|To enable the following instructions: )")


def requested_verbosity(argv):
    """Returns the value (int) of absl's ``--verbosity`` / ``-v`` flag in ``argv`` (list of str), or None.

    Both ``--verbosity=N`` and ``--verbosity N`` forms are read; an unparsable value counts as not given.
    """
    for index, arg in enumerate(argv):
        for flag in VERBOSITY_FLAGS:
            if arg.startswith(flag + "="):
                value = arg[len(flag) + 1:]
            elif arg == flag and index + 1 < len(argv):
                value = argv[index + 1]
            else:
                continue
            try:
                return int(value)
            except ValueError:
                return None
    return None


def tensorflow_logs_wanted(argv=None, environ=None):
    """Returns True (bool) when the user asked for TensorFlow's logs: ``MTARCFACE_TF_LOGS=1`` in ``environ``
    (default ``os.environ``) or ``--verbosity`` >= 0 in ``argv`` (default ``sys.argv``)."""
    environ = os.environ if environ is None else environ
    verbosity = requested_verbosity(sys.argv if argv is None else argv)
    return environ.get(ENV_VAR) == "1" or (verbosity is not None and verbosity >= 0)


def quiet_tensorflow(argv=None):
    """Turns TensorFlow's and Keras' log lines and Python warnings off for this process and its children, unless
    ``tensorflow_logs_wanted(argv)``; then records that choice in ``MTARCFACE_TF_LOGS`` for child processes.

    Call it before TensorFlow is imported (the C++ level is read once, at import). A ``TF_CPP_MIN_LOG_LEVEL`` the
    user set is kept. Returns True (bool) when the logs were turned off.
    """
    if tensorflow_logs_wanted(argv):
        os.environ[ENV_VAR] = "1"
        return False
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", QUIET_CPP_LEVEL)
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietTensorFlowImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowImport())
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=LIBRARY_MODULES)
    return True


def without_cpp_log_lines(text):
    """Returns ``text`` (str) without the lines that ``CPP_LOG_LINE`` matches."""
    return "".join(line for line in text.splitlines(keepends=True) if not CPP_LOG_LINE.match(line))


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Imports ``tensorflow`` with file descriptor 2 captured: its shared libraries log a few lines while loading,
    before ``TF_CPP_MIN_LOG_LEVEL`` applies (absl prints everything until it is initialised). Whatever else was
    written meanwhile is passed on, and everything when the import fails."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _CapturingLoader(spec.loader)
        return spec


class _CapturingLoader(importlib.abc.Loader):
    """Runs another loader's ``exec_module`` with file descriptor 2 written to a temporary file."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        sys.stderr.flush()
        saved = os.dup(2)
        failed = True
        with tempfile.TemporaryFile(mode="w+b") as captured:
            os.dup2(captured.fileno(), 2)
            try:
                self.loader.exec_module(module)
                failed = False
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
                os.close(saved)
                captured.seek(0)
                text = captured.read().decode("utf-8", "replace")
                sys.stderr.write(text if failed else without_cpp_log_lines(text))
                sys.stderr.flush()
