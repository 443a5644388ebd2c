"""tickrun: an event-driven serverless runtime for quantitative-trading ML.

Sub-packages: :mod:`tickrun.functions` (spec, SDK, processor, runs, artifacts),
:mod:`tickrun.triggers` (http, kafka, cron), :mod:`tickrun.controller` (API, builder, platforms,
gateway, CLI), :mod:`tickrun.hub` (``hub://`` functions).
"""

from __future__ import annotations

from typing import Any

from tickrun.functions.errors import TickrunError
from tickrun.functions.runs import REGISTRY_NAMES

__version__ = "0.1.0"
# The model registry (tickrun.functions.runs.registry), imported on first use.
_REGISTRY = REGISTRY_NAMES
# Pipelines (tickrun.functions.pipelines), imported on first use too.
_PIPELINES = ("Pipeline", "pipeline")
__all__ = ["TickrunError", "__version__", "import_function", *_PIPELINES, *_REGISTRY]


def __getattr__(name: str) -> Any:
    # Imported lazily so `import tickrun.functions` stays light for handlers.
    if name == "import_function":
        from tickrun.hub import import_function

        return import_function
    if name in _PIPELINES:
        from tickrun.functions import pipelines

        return getattr(pipelines, name)
    if name in _REGISTRY:
        from tickrun.functions.runs import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'tickrun' has no attribute {name!r}")
