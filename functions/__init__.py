"""The function model: spec, the SDK a handler sees, the processor, runs and artifacts."""

from __future__ import annotations

from .errors import TickrunError
from .spec import FunctionSpec, load_spec

__all__ = ["FunctionSpec", "TickrunError", "load_spec"]
