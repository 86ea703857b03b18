"""Lazy attribute loading for subpackage ``__init__`` files (no import-time side effects)."""
import importlib


def lazy_exports(package_name, exports):
    """Returns a module ``__getattr__`` that imports ``exports[name]`` (a submodule) on first access.

    Args:
      package_name: the subpackage's ``__name__``.
      exports: dict mapping a public name to the submodule (relative, e.g. ``"recordio"``) defining it.
    """

    def __getattr__(name):
        if name not in exports:
            raise AttributeError(f"module {package_name!r} has no attribute {name!r}")
        module = importlib.import_module(f"{package_name}.{exports[name]}")
        return getattr(module, name)

    return __getattr__
