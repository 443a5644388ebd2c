"""Trigger kind → the class that runs it, through the kinds registry of :mod:`..spec.triggers`.

The processor imports no trigger package itself (``functions`` sits below ``triggers``): the
kind's registration says how to load its implementation, and only kinds a function uses load.
"""

from __future__ import annotations

from ..errors import TriggerConfigError
from ..interfaces import TriggerFactory
from ..spec.triggers import trigger_kind


def trigger_class(kind: str) -> TriggerFactory:
    """The trigger implementation of ``kind``; :class:`TriggerConfigError` if it cannot load."""
    registered = trigger_kind(kind)
    try:
        return registered.load_trigger()
    except ImportError as exc:
        hint = f"; install tickrun[{registered.extra}]" if registered.extra else ""
        raise TriggerConfigError(f"trigger kind {kind!r} is not available: {exc}{hint}") from exc
