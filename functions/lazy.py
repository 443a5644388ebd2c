"""Package exports imported on first use (PEP 562), so importing a package for one name does
not import the modules behind all the others (pydantic, SQLAlchemy, pandas): CLI start-up and
handlers pay only for what they touch."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, exports: Mapping[str, str], namespace: dict[str, Any]
) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: ``exports`` maps a name to the relative module
    that defines it; the first access imports it and caches the value in ``namespace`` (the
    package's ``globals()``), so later accesses are plain attribute reads."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        namespace[name] = value
        return value

    return __getattr__
