"""Tools keep TensorFlow's log lines out of their output unless asked (mtarcface_tf/quiet.py)."""
import os
import re
import subprocess
import sys

from mtarcface_tf import quiet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# TensorFlow 2.21's start-up lines as they reach a terminal (copied from a run), and a line of the project's own.
TF_LINES = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
    "I0000 00:00:1796233575.037930   19891 port.cc:153] oneDNN custom operations are on.\n",
    "E0000 00:00:1796233212.633555   16237 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error\n",
    "W0000 00:00:1764473590.311823    4409 signature_serialization.py:52] Function `serve` contains...\n",
]
OWN_LINE = "SynthFaces: 100%|##########| 16/16 [00:00<00:00, 43.14face/s]\n"
# Independent of quiet.CPP_LOG_LINE: any glog-style line, absl's notice, or a file TensorFlow logs from.
LOOKS_LIKE_TF = re.compile(r"^[IWEF]\d{4} |absl::InitializeLog|cudart_stub|cuda_platform|port\.cc|"
                           r"signature_serialization|fingerprinting_utils|Sharding callback", re.M)


def test_verbosity_flag_in_both_forms_and_the_environment_variable():
    assert quiet.requested_verbosity(["tool", "--verbosity=1"]) == 1
    assert quiet.requested_verbosity(["tool", "-v", "0"]) == 0
    assert quiet.requested_verbosity(["tool", "--verbose=1"]) is None
    assert quiet.tensorflow_logs_wanted(["tool", "--verbosity=0"], environ={})
    assert not quiet.tensorflow_logs_wanted(["tool", "--verbosity=-1"], environ={})
    assert not quiet.tensorflow_logs_wanted(["tool"], environ={})
    assert quiet.tensorflow_logs_wanted(["tool"], environ={quiet.ENV_VAR: "1"})


def test_cpp_log_lines_are_dropped_and_other_lines_kept():
    assert quiet.without_cpp_log_lines("".join(TF_LINES[:3]) + OWN_LINE) == OWN_LINE


def _make_synthfaces(tmp_path, *extra, env=None):
    command = [sys.executable, os.path.join(ROOT, "tools", "make_synthfaces.py"), f"--output_dir={tmp_path}",
               "--identities=3", "--images_per_identity=2", "--eval_identities=3", "--eval_pairs=4",
               "--image_size=32", "--workers=1", "--num_shards=1", *extra]
    environment = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", quiet.ENV_VAR)}
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=600,
                            env=dict(environment, **(env or {})), check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stderr


def test_a_tool_run_shows_no_tensorflow_log_line_unless_asked(tmp_path):
    assert all(LOOKS_LIKE_TF.search(line) for line in TF_LINES)
    quiet_run = _make_synthfaces(tmp_path / "quiet")
    assert not LOOKS_LIKE_TF.search(quiet_run), quiet_run
    assert "SynthFaces" in quiet_run                     # the tool's own progress stays
    # The same run with --verbosity=0 shows TensorFlow's lines: the check above can see them.
    assert LOOKS_LIKE_TF.search(_make_synthfaces(tmp_path / "loud", "--verbosity=0"))


def _imported_before_quiet(path):
    """Returns the modules (list of str) a tool imports at module level before it calls quiet_tensorflow(), and
    whether it calls it at all (bool)."""
    import ast
    with open(path, encoding="utf-8") as handle:
        body = ast.parse(handle.read()).body
    imported = []
    for node in body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) and \
                getattr(node.value.func, "id", "") == "quiet_tensorflow":
            return imported, True
        if isinstance(node, ast.ImportFrom):
            imported.append(node.module)
        elif isinstance(node, ast.Import):
            imported += [alias.name for alias in node.names]
    return imported, False


# bench scripts that import no TensorFlow: the figures runner, the tables, and the JAX-only GPU bench
NOT_TENSORFLOW = {"all.py", "tables.py", "train_step_jax.py"}


def test_every_tool_and_bench_quiets_tensorflow_before_importing_anything_else_of_the_project():
    # Spawned workers import the tool's module again, so its own call (not its caller's) keeps them quiet too.
    tools = sorted(os.path.join(ROOT, folder, name) for folder in ("tools", "bench")
                   for name in os.listdir(os.path.join(ROOT, folder))
                   if name.endswith(".py") and not (folder == "bench" and name in NOT_TENSORFLOW))
    assert tools
    for path in tools:
        imported, called = _imported_before_quiet(path)
        assert called, f"{path}: never calls quiet_tensorflow() at module level"
        others = [name for name in imported
                  if name != "mtarcface_tf.quiet" and name.split(".")[0] not in sys.stdlib_module_names]
        assert not others, f"{path}: imports {others} before quiet_tensorflow()"
