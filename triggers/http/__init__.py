"""The HTTP trigger (aiohttp): the processor's HTTP port, ``kind: http``.

The package registers the kind (:data:`KIND`) with only its spec model imported; the trigger
and its config load when a function runs one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tickrun.functions.interfaces import TriggerFactory
from tickrun.functions.spec.triggers import TriggerKind

from ..base import lazy_exports
from .spec import HttpTriggerSpec

if TYPE_CHECKING:
    from .config import HttpConfig
    from .trigger import HttpTrigger

__all__ = ["KIND", "HttpConfig", "HttpTrigger", "HttpTriggerSpec"]


def _load_trigger() -> TriggerFactory:
    from .trigger import HttpTrigger

    return HttpTrigger


KIND = TriggerKind(name="http", spec=HttpTriggerSpec, load_trigger=_load_trigger)


__getattr__ = lazy_exports(__name__, {"HttpTrigger": ".trigger", "HttpConfig": ".config"})
