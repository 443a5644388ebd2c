"""The one module loader for user code: function handlers, job handlers and hub items.

A function's handler module is imported by name from its folder (:func:`import_from`); a job file
or a hub item version by path (:func:`import_file`), under a name the caller derives from what it
is (its path, its item and version), so two files with the same stem, or two versions of one hub
item, live side by side in ``sys.modules``. A module whose import raises leaves no
half-initialised module behind. Errors propagate unchanged: each caller words them for what the
code is (a handler, a job, a hub item).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path

from .errors import HandlerLoadError


def on_path(directory: Path) -> None:
    """Put ``directory`` first on ``sys.path``: the code's sibling imports work as in a script."""
    if str(directory) not in sys.path:
        sys.path.insert(0, str(directory))


def import_from(directory: Path, module_name: str) -> types.ModuleType:
    """``module_name`` (``main``, ``pkg.handler``) imported with ``directory`` on the path."""
    on_path(directory)
    return importlib.import_module(module_name)


def import_file(path: Path, module_name: str, *, siblings: bool = False) -> types.ModuleType:
    """The module of ``path`` as ``module_name``, imported once per process; with ``siblings``
    its folder goes on the path first."""
    if siblings:
        on_path(path.parent)
    module = sys.modules.get(module_name)
    if module is not None:
        return module
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise HandlerLoadError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module
