"""``kind: cron`` in ``function.yaml``: a cron ``schedule`` or a fixed ``interval``.

Only pydantic here (no croniter): every spec parse imports this module.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from tickrun.functions.spec.durations import DurationS
from tickrun.functions.spec.triggers import SpecModel, TriggerSpecBase


class CronEventSpec(SpecModel):
    body: Any = None
    headers: dict[str, str] = Field(default_factory=dict)
    method: str = "POST"
    path: str = "/"


class CronAttributes(SpecModel):
    schedule: str | None = None
    interval_s: DurationS | None = Field(default=None, alias="interval", gt=0)
    event: CronEventSpec = Field(default_factory=CronEventSpec)
    concurrency_policy: Literal["Forbid", "Allow"] = Field(
        default="Forbid", alias="concurrencyPolicy"
    )
    timezone: str = "UTC"

    @model_validator(mode="after")
    def _one_of(self) -> CronAttributes:
        if (self.schedule is None) == (self.interval_s is None):
            raise ValueError("set exactly one of 'schedule' (cron syntax) or 'interval'")
        if self.schedule is not None:
            fields = self.schedule.split()
            if not (self.schedule.startswith("@") or len(fields) in (5, 6)):
                raise ValueError(
                    f"schedule {self.schedule!r} is not cron syntax "
                    "(5 or 6 fields, or @hourly/@daily/…)"
                )
        return self


class CronTriggerSpec(TriggerSpecBase):
    kind: Literal["cron"]
    attributes: CronAttributes
