"""Function specs: Nuclio's ``function.yaml`` subset as typed, validated models.

Each trigger kind's spec model lives in its package (``tickrun.triggers.<kind>.spec``) and is
found through :func:`trigger_kinds`; ``TriggerSpec`` is the union of them.
"""

from __future__ import annotations

from typing import Any

from .durations import DurationS, parse_duration_s
from .function import BuildSpec, EnvVar, FunctionSpec, Metadata, Resources, Spec
from .loader import default_spec, load_spec, load_spec_text, parse_spec
from .triggers import TriggerSpec, TriggerSpecBase, trigger_kind, trigger_kinds

__all__ = [
    "BuildSpec",
    "DurationS",
    "EnvVar",
    "FunctionSpec",
    "Metadata",
    "Resources",
    "Spec",
    "TriggerSpec",
    "TriggerSpecBase",
    "default_spec",
    "load_spec",
    "load_spec_text",
    "parse_duration_s",
    "parse_spec",
    "trigger_kind",
    "trigger_kinds",
]


def __getattr__(name: str) -> Any:
    # The processor reads its HTTP port's settings from the http kind's model, and names it
    # as this package always exported it; resolved through the registry, not an import of
    # tickrun.triggers (which sits beside the runtime, not below it).
    if name == "HttpTriggerSpec":
        return trigger_kind("http").spec
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
