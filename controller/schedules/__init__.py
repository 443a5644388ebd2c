"""Scheduled jobs: a tracked-run ``JobRequest`` fired by the controller on a cron schedule.

- ``cron.py``: the schedule's times (croniter, the cron trigger's syntax: 5 fields, or 6 with
  seconds first, or ``@hourly``-style; a timezone);
- ``model.py``: the API's request (validated at the edge) and a schedule's JSON;
- ``rows.py`` / ``store.py``: the ``schedules`` table and its access through the controller's
  store (migration ``0004``);
- ``launcher.py``: one firing's job in its own process, through the job runners of
  ``controller/jobs.py`` (``tickrun run --runner …``), abortable;
- ``scheduler.py``: the loop that fires them (concurrency and missed-firing policies);
- ``api.py``, ``cli.py``: ``/api/schedules…`` and ``tickrun schedules …``.
"""

from __future__ import annotations
