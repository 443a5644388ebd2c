"""The function model: spec, the SDK a handler sees, the processor, runs and artifacts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import TickrunError

if TYPE_CHECKING:
    from .spec import FunctionSpec, load_spec

__all__ = ["FunctionSpec", "TickrunError", "load_spec"]


def __getattr__(name: str) -> Any:
    # The spec is pydantic (~100 ms to import): `import tickrun.functions.errors` (every CLI
    # command, every handler's `tickrun.functions.settings`) must not pay for it.
    if name in ("FunctionSpec", "load_spec"):
        from . import spec

        return getattr(spec, name)
    raise AttributeError(f"module 'tickrun.functions' has no attribute {name!r}")
