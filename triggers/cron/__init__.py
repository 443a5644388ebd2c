"""The cron trigger (``kind: cron``): ``schedule`` (cron syntax) or ``interval``.

::

    triggers:
      every-minute:
        kind: cron
        attributes:
          schedule: "*/1 * * * *"      # or  interval: 30s
          concurrencyPolicy: Forbid    # default; Allow lets runs overlap
          event:
            body: {"job": "retrain"}
            headers: {"X-Job": "retrain"}

The package registers the kind (:data:`KIND`) with only its spec model imported; croniter loads
with the trigger, when a function runs one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tickrun.functions.interfaces import TriggerFactory
from tickrun.functions.spec.triggers import TriggerKind

from ..base import lazy_exports
from .spec import CronTriggerSpec

if TYPE_CHECKING:
    from .config import CronConfig
    from .trigger import CronTrigger

__all__ = ["KIND", "CronConfig", "CronTrigger", "CronTriggerSpec"]


def _load_trigger() -> TriggerFactory:
    from .trigger import CronTrigger

    return CronTrigger


KIND = TriggerKind(name="cron", spec=CronTriggerSpec, load_trigger=_load_trigger, extra="cron")


__getattr__ = lazy_exports(__name__, {"CronTrigger": ".trigger", "CronConfig": ".config"})
