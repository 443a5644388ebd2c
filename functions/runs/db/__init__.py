"""Where runs live: a SQL DB (SQLite locally, the controller's URL on a server) or the
controller's REST API."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...lazy import lazy_exports
from ...processes import pid_alive
from ..settings import TrackingSettings
from .base import DbLocator, RunDB, stale_reason

if TYPE_CHECKING:
    from .http import HttpRunDB
    from .lite import LiteRunDB
    from .sql import SqlRunDB

__all__ = [
    "DbLocator",
    "HttpRunDB",
    "LiteRunDB",
    "RunDB",
    "SqlRunDB",
    "open_db",
    "open_locator",
    "open_recording_db",
    "pid_alive",
    "stale_reason",
]

# Imported on first use: SqlRunDB imports SQLAlchemy, which a run recorded through
# open_recording_db (tickrun run) never needs.
_EXPORTS = {"HttpRunDB": ".http", "LiteRunDB": ".lite", "SqlRunDB": ".sql"}


__getattr__ = lazy_exports(__name__, _EXPORTS, globals())


def open_db(settings: TrackingSettings | None = None) -> RunDB:
    """The controller's API when ``TICKRUN_CONTROLLER_URL`` is set, else the SQL DB."""
    s = settings or TrackingSettings.from_env()
    if s.controller_url:
        from .http import HttpRunDB

        token = s.token.get_secret_value() if s.token else None
        return HttpRunDB(s.controller_url, token)
    from .sql import SqlRunDB

    return SqlRunDB(s.db_url, stale_after_s=s.stale_after_s)


def open_recording_db(settings: TrackingSettings | None = None) -> RunDB:
    """The DB a run is recorded in: :func:`open_db`'s, but a plain SQLite file goes through
    the stdlib driver (:class:`LiteRunDB`, same tables; no SQLAlchemy on a job's start-up)."""
    from .lite import LiteRunDB, sqlite_path

    s = settings or TrackingSettings.from_env()
    if not s.controller_url and sqlite_path(s.db_url) is not None:
        return LiteRunDB(s.db_url, stale_after_s=s.stale_after_s)
    return open_db(s)


def open_locator(loc: DbLocator, stale_after_s: float = 60.0) -> RunDB:
    if loc.kind == "http":
        from .http import HttpRunDB

        return HttpRunDB(loc.url, loc.token)
    from .sql import SqlRunDB

    return SqlRunDB(loc.url, stale_after_s=stale_after_s)
