"""Every command shown in README.md, docs/*.md, WORKSPACE.md and the docstrings of configs/, tools/ and bench/ that runs
``tools/*.py`` or ``bench/*.py`` parses with that script's real absl flags and, for ``--config=...``, its real config
(ml_collections config_flags): an unknown flag, a value that does not parse, or a missing required flag fails.
Nothing is run: each script is imported in a subprocess (not as ``__main__``), and each command's argv is parsed by
a forked child of it, so that the config-override flags of one command do not leak into the next.

How commands are found: fenced code blocks and inline code spans of the markdown files, module docstrings of the
Python files. Lines ending in ``\\`` are joined; ``&&``, ``;`` and `` | `` separate commands; ``VAR=value`` before
``python`` is an environment assignment; ``$(...)`` is replaced by a placeholder; ``[--flag]`` is an optional flag
(checked too); ``--a=X|--b=Y`` lists alternatives (each checked); ``...`` stands for "more flags";
``configs/NAME.py`` is checked with every runnable config; ``make demo ARGS=...`` is ``tools/demo.py ...``.
"""
import ast
import glob
import json
import os
import re
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = re.compile(r"^(tools|bench)/\w+\.py$")
SEPARATORS = {"&&", "||", ";", "|"}
PYTHONS = re.compile(r"^(\S*/)?python3?(\.\d+)?$")
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
MAKE_DEMO = re.compile(r"\bmake demo\b(?:\s+ARGS=(\S+|\"[^\"]*\"|'[^']*'))?")
CONFIG_PLACEHOLDER = "configs/NAME.py"

# Parses one argv per line of stdin against the flags the script defines at import; prints one JSON line each.
_DRIVER = r"""
import json, os, runpy, sys
script = sys.argv[1]
sys.path.insert(0, os.getcwd())
runpy.run_path(script, run_name="readme_command_check")
from absl import flags
for line in sys.stdin:
    argv = json.loads(line)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            sys.argv = argv
            flags.FLAGS(argv)
            message = ""
        except Exception as err:  # any parse failure is the answer, not a crash of the check
            message = f"{type(err).__name__}: {err}"
        os.write(write, message.encode())
        os._exit(0)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.close(read)
    os.waitpid(pid, 0)
    print(json.dumps(b"".join(chunks).decode()), flush=True)
"""


def _runnable_configs():
    names = []
    for path in sorted(glob.glob(os.path.join(ROOT, "configs", "*.py"))):
        if re.search(r"^def get_config\(", open(path, encoding="utf-8").read(), re.M):
            names.append(os.path.relpath(path, ROOT))
    return names


def _snippets_of_markdown(text):
    """Yields the code of fenced blocks (whole) and of inline code spans (outside blocks)."""
    outside = []
    for index, part in enumerate(re.split(r"^```[^\n]*\n", text, flags=re.M)):
        if index % 2:
            yield part
        else:
            outside.append(part)
    for part in outside:
        yield from re.findall(r"`([^`\n]+)`", part)


def _snippets_of_python(text):
    docstring = ast.get_docstring(ast.parse(text)) or ""
    yield docstring


def _lines(snippet):
    """Splits a snippet into logical lines (backslash continuations joined)."""
    return re.sub(r"\\\n", " ", snippet).splitlines()


def _alternatives(tokens):
    """Expands a token ``--a=X|--b=Y`` into one token list per alternative."""
    for index, token in enumerate(tokens):
        parts = token.split("|")
        if len(parts) > 1 and all(part.startswith("-") for part in parts[1:]):
            return [alt for part in parts for alt in _alternatives(tokens[:index] + [part] + tokens[index + 1:])]
    return [tokens]


def _commands_of_line(line):
    """Returns [(script, args)] for each command in one logical shell line that runs tools/ or bench/ scripts."""
    line = MAKE_DEMO.sub(lambda m: "python tools/demo.py " + (m.group(1) or "").strip("'\""), line)
    if not re.search(r"(tools|bench)/\w+\.py", line):
        return []
    line = re.sub(r"\$\([^()]*\)", "SUBSTITUTED", line)
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError:
        return []
    segments, current = [], []
    for token in tokens:
        if token in SEPARATORS:
            segments.append(current)
            current = []
        else:
            current.append(token)
    segments.append(current)
    commands = []
    for segment in segments:
        while segment and ENV_ASSIGNMENT.match(segment[0]):
            segment = segment[1:]
        if len(segment) < 2 or not PYTHONS.match(segment[0]) or not SCRIPT.match(segment[1]):
            continue
        args = [token.strip("[]") for token in segment[2:] if token not in ("...", "[", "]")]
        for expanded in _alternatives([a for a in args if a]):
            commands.append((segment[1], expanded))
    return commands


def _expand_config_placeholder(script, args):
    if not any(CONFIG_PLACEHOLDER in arg for arg in args):
        return [(script, args)]
    return [(script, [arg.replace(CONFIG_PLACEHOLDER, config) for arg in args]) for config in _runnable_configs()]


def find_commands(paths):
    """Returns [(where, script, args)]: ``where`` is "FILE: the logical line" for the report."""
    found = []
    for path in paths:
        text = open(path, encoding="utf-8").read()
        snippets = _snippets_of_markdown(text) if path.endswith(".md") else _snippets_of_python(text)
        for snippet in snippets:
            for line in _lines(snippet):
                for script, args in _commands_of_line(line):
                    for script_, args_ in _expand_config_placeholder(script, args):
                        found.append((f"{os.path.relpath(path, ROOT)}: {line.strip()}", script_, args_))
    return found


def parse_errors(commands):
    """Parses each command's flags with its script's real definitions; returns ["where: error"] of failures."""
    by_script = {}
    for where, script, args in commands:
        by_script.setdefault(script, []).append((where, args))
    errors = []
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    for script, items in sorted(by_script.items()):
        if not os.path.isfile(os.path.join(ROOT, script)):
            errors.extend(f"{where}: {script} does not exist" for where, _ in items)
            continue
        stdin = "".join(json.dumps([script] + args) + "\n" for _, args in items)
        proc = subprocess.run([sys.executable, "-c", _DRIVER, script], input=stdin, cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=600)
        answers = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith('"')]
        if proc.returncode or len(answers) != len(items):
            errors.append(f"{script}: the check itself failed: {proc.stderr[-2000:]}")
            continue
        errors.extend(f"{where}\n    -> {answer}" for (where, _), answer in zip(items, answers) if answer)
    return errors


DOCUMENTS = ([os.path.join(ROOT, name) for name in ("README.md", "WORKSPACE.md")]
             + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
             + sorted(glob.glob(os.path.join(ROOT, "configs", "*.py")))
             + sorted(glob.glob(os.path.join(ROOT, "tools", "*.py")))
             + sorted(glob.glob(os.path.join(ROOT, "bench", "*.py"))))


@pytest.fixture(scope="module")
def documented():
    return find_commands(DOCUMENTS)


def test_the_finder_sees_the_documented_commands(documented):
    readme = [(script, args) for where, script, args in documented if where.startswith(("README.md", "docs/"))]
    assert ("tools/train.py", ["--config=configs/paper.py", "--workdir=runs/paper", "--config.strategy=default",
                               "--config.data.train=data/ms1mv2",
                               "--config.evals.verification.bins=lfw.bin,cfp_fp.bin,agedb_30.bin"]) in readme
    assert ("tools/demo.py", ["--quick"]) in readme
    assert ("bench/train_step_jax.py", ["--batch=256"]) in readme          # env-var prefix dropped
    assert any(script == "tools/evaluate.py" and "--workdir=runs/reference" in args for script, args in readme)
    assert {"tools/recognize.py", "tools/convert.py", "tools/export.py", "tools/import_reference.py",
            "bench/pipeline.py", "bench/inference.py"} <= {script for script, _ in readme}
    docstrings = [args for where, script, args in documented if where.startswith("configs/paper.py")]
    assert ["--config=configs/paper.py", "--workdir=runs/paper", "--config.data.train=/data/ms1mv2_tfrecords",
            "--config.evals.verification.bins=/data/lfw.bin,/data/cfp_fp.bin,/data/agedb_30.bin"] in docstrings
    assert len(documented) >= 50


@pytest.mark.slow   # a subprocess per tool (TensorFlow imported in each): the largest share of the fast tier
def test_every_documented_command_parses(documented):
    errors = parse_errors(documented)
    assert not errors, "commands in the docs that do not parse:\n" + "\n".join(errors)


@pytest.mark.slow
def test_a_broken_line_is_caught(tmp_path):
    broken = tmp_path / "BROKEN.md"
    broken.write_text(
        "```\n"
        "python tools/train.py --config=configs/tiny.py --workdir=runs/tiny --no_such_flag=1\n"
        "python tools/train.py --config=configs/tiny.py --workdir=runs/tiny \\\n"
        "    --config.batch_size=many\n"
        "python tools/train.py --config=configs/tiny.py --workdir=runs/tiny --config.no_such_key=1\n"
        "FOO=1 python bench/pipeline.py --quick --batches=lots && echo done\n"
        "python tools/export.py --workdir=runs/tiny\n"
        "python tools/train.py --config=configs/tiny.py --workdir=runs/tiny   # this one is fine\n"
        "```\n", encoding="utf-8")
    commands = find_commands([str(broken)])
    assert len(commands) == 6
    errors = parse_errors(commands)
    assert len(errors) == 5, "\n".join(errors)
    for expected in ["no_such_flag", "config.batch_size", "config.no_such_key", "--batches", "export_dir"]:
        assert sum(expected in error for error in errors) == 1, expected
    assert not any("this one is fine" in error for error in errors)
