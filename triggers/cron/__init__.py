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
"""

from __future__ import annotations

from .config import CronConfig
from .trigger import CronTrigger

__all__ = ["CronConfig", "CronTrigger"]
