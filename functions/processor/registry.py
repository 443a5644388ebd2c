"""Trigger kinds → implementing classes.

``functions`` must not import ``triggers`` (the dependency runs the other way), so kinds are
named here as import paths and loaded only when a function uses them.
"""

from __future__ import annotations

import importlib
from typing import Any

from ..errors import TriggerConfigError

TRIGGER_CLASSES: dict[str, str] = {
    "http": "tickrun.triggers.http:HttpTrigger",
    "kafka-cluster": "tickrun.triggers.kafka:KafkaTrigger",
    "cron": "tickrun.triggers.cron:CronTrigger",
}


def trigger_class(kind: str) -> Any:
    target = TRIGGER_CLASSES.get(kind)
    if target is None:
        raise TriggerConfigError(
            f"unknown trigger kind {kind!r} (known: {', '.join(sorted(TRIGGER_CLASSES))})"
        )
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        extra = {"kafka-cluster": "kafka", "cron": "cron"}.get(kind)
        hint = f"; install tickrun[{extra}]" if extra else ""
        raise TriggerConfigError(f"trigger kind {kind!r} is not available: {exc}{hint}") from exc
    return getattr(module, attr)
