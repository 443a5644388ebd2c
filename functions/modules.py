"""One way to import user code from a file: job handlers, hub items (and their versions).

Each file is imported under a name the caller derives from what it is (its path, its item and
version), so two files with the same stem, or two versions of one hub item, live side by side in
``sys.modules``; a file whose import raises leaves no half-initialised module behind.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

from .errors import HandlerLoadError


def import_file(path: Path, module_name: str) -> types.ModuleType:
    """The module of ``path`` as ``module_name``, imported once per process.

    Exceptions raised by the module's own code propagate unchanged: the callers word them for
    what the file is (a job handler, a hub item).
    """
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
