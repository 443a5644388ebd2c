"""When a cron trigger fires: a cron ``schedule`` (croniter) or a fixed ``interval``.

Cron expressions have 5 fields (minute precision) or 6 with seconds *first*, as in Nuclio's
robfig/cron (``*/5 * * * * *`` = every 5 s); ``@hourly``-style shortcuts work too. Times are
computed in the trigger's ``timezone`` (default UTC).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from tickrun.functions.errors import TriggerConfigError

from .spec import CronTriggerSpec


@dataclass(frozen=True, slots=True)
class CronConfig:
    name: str
    schedule: str | None
    interval_s: float | None
    timezone: dt.tzinfo
    allow_overlap: bool
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    method: str = "POST"
    path: str = "/"

    @classmethod
    def from_spec(cls, spec: CronTriggerSpec) -> CronConfig:
        a = spec.attributes
        try:
            tz: dt.tzinfo = ZoneInfo(a.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise TriggerConfigError(f"cron timezone {a.timezone!r} is unknown") from exc
        if a.schedule is not None and not croniter.is_valid(
            a.schedule, second_at_beginning=has_seconds(a.schedule)
        ):
            raise TriggerConfigError(f"cron schedule {a.schedule!r} is not valid cron syntax")
        return cls(
            name=spec.name or "cron",
            schedule=a.schedule,
            interval_s=a.interval_s,
            timezone=tz,
            allow_overlap=a.concurrency_policy == "Allow",
            body=a.event.body,
            headers=dict(a.event.headers),
            method=a.event.method,
            path=a.event.path,
        )

    def next_fire(self, after: dt.datetime) -> dt.datetime:
        """The first fire time strictly after ``after`` (an aware datetime), in UTC."""
        if self.interval_s is not None:
            return after + dt.timedelta(seconds=self.interval_s)
        assert self.schedule is not None
        it = croniter(
            self.schedule,
            after.astimezone(self.timezone),
            second_at_beginning=has_seconds(self.schedule),
        )
        nxt: dt.datetime = it.get_next(dt.datetime)
        return nxt.astimezone(dt.UTC)


def has_seconds(schedule: str) -> bool:
    """Six fields: croniter's seconds-first form (the cron trigger and controller schedules)."""
    return not schedule.startswith("@") and len(schedule.split()) == 6
