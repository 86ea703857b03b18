"""Imports run one way: every module of the package (and the configs) imports only its own layer or layers below.

The order (WORKSPACE.md, "Layout"): atomic / images / faces / results / progress / search -> data -> model ->
configs -> export -> eval -> train -> inference -> demo, rehearsal. Every import statement counts, including those
inside functions.
"""
import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "mtarcface_tf"
# Lower rank = lower layer. A module may import its own layer and any layer of lower rank, nothing above.
LAYERS = {"": 0, "atomic": 0, "images": 0, "faces": 0, "results": 0, "progress": 0, "quiet": 0, "search": 0,
          "data": 1, "model": 2, "configs": 3, "export": 4, "eval": 5, "train": 6, "inference": 7, "demo": 8,
          "rehearsal": 8}


def _modules():
    """Yields (dotted module name, file path) of every module of the package and of configs/."""
    roots = [(os.path.join(REPO, PACKAGE), PACKAGE), (os.path.join(REPO, "configs"), f"{PACKAGE}.configs")]
    for root, prefix in roots:
        for folder, _, files in os.walk(root):
            for name in sorted(files):
                if not name.endswith(".py"):
                    continue
                relative = os.path.relpath(os.path.join(folder, name), root)[:-3].split(os.sep)
                if relative[-1] == "__init__":
                    relative = relative[:-1]
                yield ".".join([prefix, *relative]), os.path.join(folder, name)


def layer_of(module):
    """Returns the layer name of a dotted name inside the package ("" for the package itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def imported_modules(module, source):
    """Returns the dotted names of the package that ``source`` (the text of ``module``, not an ``__init__``)
    imports, anywhere in it (function-level imports too)."""
    parts = module.split(".")
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:   # relative import: resolve against the importing module's package
                anchor = parts[:len(parts) - node.level]
                base = ".".join(anchor + ([base] if base else []))
            # "from mtarcface_tf import data" imports the subpackage data.
            names += [f"{base}.{alias.name}" if base == PACKAGE else base for alias in node.names]
    return [name for name in names if name == PACKAGE or name.startswith(PACKAGE + ".")]


def upward_imports(module, source):
    """Returns ["module -> imported (layer -> layer)", ...] for each import of a higher layer."""
    own = LAYERS[layer_of(module)]
    return [f"{module} -> {name} ({layer_of(module) or PACKAGE} -> {layer_of(name)})"
            for name in imported_modules(module, source) if LAYERS[layer_of(name)] > own]


def test_every_layer_is_known():
    unknown = sorted({layer_of(module) for module, _ in _modules()} - set(LAYERS))
    assert not unknown, f"add these to LAYERS (and WORKSPACE.md's layout): {unknown}"


def test_no_module_imports_a_higher_layer():
    modules = list(_modules())
    assert len(modules) > 40
    violations = []
    for module, path in modules:
        with open(path, encoding="utf-8") as handle:
            violations += upward_imports(module, handle.read())
    assert not violations, "upward imports:\n" + "\n".join(violations)


@pytest.mark.parametrize("module, source", [
    ("mtarcface_tf.data.convert", "def f():\n    from mtarcface_tf.inference.recognizer import FaceRecognizer\n"),
    ("mtarcface_tf.eval.evaluator", "import mtarcface_tf.train.trainer\n"),
    ("mtarcface_tf.model.build", "from mtarcface_tf import configs\n"),
    ("mtarcface_tf.export.embedder", "from ..train import checkpoints\n"),
])
def test_the_check_sees_upward_imports(module, source):
    assert len(upward_imports(module, source)) == 1


def test_the_check_allows_own_and_lower_layers():
    source = ("from mtarcface_tf.data import pipeline\nfrom mtarcface_tf.model.workdir import load_model\n"
              "from mtarcface_tf.export import saved_model\nfrom . import embedder\n")
    assert upward_imports("mtarcface_tf.export.embedder", source) == []
