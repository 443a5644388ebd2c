"""A schedule's firing times: cron syntax read by croniter, as the cron trigger reads it.

5 fields (minute precision), 6 with seconds *first* (``*/5 * * * * *`` = every 5 s, Nuclio's
robfig/cron order, the same as ``triggers/cron``), or ``@hourly``-style shortcuts; computed in
the schedule's timezone, returned as epoch seconds.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tickrun.functions.errors import BadRequestError

MAX_CRON_CHARS = 255


def zone(name: str) -> dt.tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise BadRequestError(f"timezone {name[:64]!r} is unknown (use an IANA name)") from exc


def check(cron: str, timezone: str = "UTC") -> None:
    """A 400 naming the problem unless ``cron`` is a schedule croniter can run."""
    from croniter import croniter

    from tickrun.triggers.cron.config import has_seconds

    zone(timezone)
    fields = cron.split()
    if len(cron) > MAX_CRON_CHARS or not (cron.startswith("@") or len(fields) in (5, 6)):
        raise BadRequestError(
            f"cron {cron[:80]!r} is not cron syntax: 5 fields (minute hour day month weekday), "
            "6 with seconds first, or @hourly/@daily/…"
        )
    if not croniter.is_valid(cron, second_at_beginning=has_seconds(cron)):
        raise BadRequestError(f"cron {cron[:80]!r} is not valid cron syntax")


def next_after(cron: str, timezone: str, after: float) -> float:
    """The first firing strictly after ``after`` (epoch seconds)."""
    from croniter import croniter

    from tickrun.triggers.cron.config import has_seconds

    tz = zone(timezone)
    start = dt.datetime.fromtimestamp(after, tz)
    it = croniter(cron, start, second_at_beginning=has_seconds(cron))
    nxt: dt.datetime = it.get_next(dt.datetime)
    return nxt.timestamp()


def iso(ts: float) -> str:
    """``ts`` as an ISO 8601 UTC time (seconds precision), for labels and output."""
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def previous_at_or_before(cron: str, timezone: str, at: float) -> float:
    """The newest firing at or before ``at`` (epoch seconds)."""
    from croniter import croniter

    from tickrun.triggers.cron.config import has_seconds

    tz = zone(timezone)
    # croniter's get_prev is strictly before its start: start just after ``at``.
    start = dt.datetime.fromtimestamp(at + 0.001, tz)
    it = croniter(cron, start, second_at_beginning=has_seconds(cron))
    prev: dt.datetime = it.get_prev(dt.datetime)
    return prev.timestamp()
