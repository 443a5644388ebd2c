"""Where runs live: a SQL DB (SQLite locally, the controller's URL on a server) or the
controller's REST API."""

from __future__ import annotations

from ...processes import pid_alive
from ..settings import TrackingSettings
from .base import DbLocator, RunDB, stale_reason
from .http import HttpRunDB
from .sql import SqlRunDB

__all__ = [
    "DbLocator",
    "HttpRunDB",
    "RunDB",
    "SqlRunDB",
    "open_db",
    "open_locator",
    "pid_alive",
    "stale_reason",
]


def open_db(settings: TrackingSettings | None = None) -> RunDB:
    """The controller's API when ``TICKRUN_CONTROLLER_URL`` is set, else the SQL DB."""
    s = settings or TrackingSettings.from_env()
    if s.controller_url:
        token = s.token.get_secret_value() if s.token else None
        return HttpRunDB(s.controller_url, token)
    return SqlRunDB(s.db_url, stale_after_s=s.stale_after_s)


def open_locator(loc: DbLocator, stale_after_s: float = 60.0) -> RunDB:
    if loc.kind == "http":
        return HttpRunDB(loc.url, loc.token)
    return SqlRunDB(loc.url, stale_after_s=stale_after_s)
