"""SQLAlchemy engines for tickrun's two SQL stores: the controller's state store and the run DB.

Both take ``TICKRUN_DB_URL``: a SQLite file by default, PostgreSQL (psycopg 3, the ``postgres``
extra) on a server. One place knows which URL means which driver, how a missing driver is
explained, how a URL is shown without its password, and how processes starting at once keep
from creating the same tables together.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from ...errors import StoreError

POSTGRES_HINT = "pip install 'tickrun[postgres]'"

# What users write, and what the URL of a managed database often says, mapped onto the one
# PostgreSQL driver tickrun ships: SQLAlchemy would pick psycopg2 for a bare postgresql://.
_POSTGRES_PREFIXES = ("postgresql://", "postgres://")

OnConnect = Callable[[Any, Any], None]


def normalize_url(url: str) -> str:
    """``postgresql://`` and ``postgres://`` mean psycopg 3; every other URL is kept as is."""
    for prefix in _POSTGRES_PREFIXES:
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    return url


def safe_url(url: str) -> str:
    """The URL with its password masked, for messages and logs."""
    try:
        return make_url(normalize_url(url)).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return url.split(":", 1)[0] + "://…"


def _password(url: str) -> str | None:
    try:
        return make_url(normalize_url(url)).password
    except (ArgumentError, ValueError):
        return None


def reason(exc: BaseException, url: str) -> str:
    """A one-line reason for a failed database call, for a message a user reads.

    The driver's own first line says what went wrong (refused, authentication failed, no such
    database); libpq never echoes a password there, and any occurrence is masked all the same.
    """
    orig = getattr(exc, "orig", None) or exc
    first = (str(orig).strip().splitlines() or [""])[0].strip()
    password = _password(url)
    if password:
        first = first.replace(password, "***")
    name = type(orig).__name__
    return f"{name}: {first[:300]}" if first else name


def create_sql_engine(url: str, *, what: str, sqlite_on_connect: OnConnect | None) -> Engine:
    """An engine for ``url`` (no connection yet). ``what`` names the store in messages.

    Raises :class:`StoreError` for a URL SQLAlchemy cannot use or a driver that is not
    installed, never showing the URL's password.
    """
    full = normalize_url(url)
    try:
        sqlite = make_url(full).get_backend_name() == "sqlite"
        # A server closes idle connections (restarts, failovers, idle timeouts): check each
        # one as it leaves the pool instead of failing the next reconcile pass.
        engine = create_engine(full, pool_pre_ping=not sqlite)
    except ModuleNotFoundError as exc:
        if (exc.name or "").startswith("psycopg"):
            raise StoreError(
                f"{what} is PostgreSQL ({safe_url(url)}) but its driver psycopg is not "
                f"installed: {POSTGRES_HINT}"
            ) from exc
        raise StoreError(
            f"cannot open {what} ({safe_url(url)}): its driver {exc.name} is not installed"
        ) from exc
    except (SQLAlchemyError, ValueError) as exc:
        raise StoreError(f"cannot open {what} ({safe_url(url)}): {reason(exc, url)}") from exc
    if sqlite and sqlite_on_connect is not None:
        event.listen(engine, "connect", sqlite_on_connect)
    return engine


def lock_schema(conn: Connection, name: str) -> None:
    """Hold a write lock until ``conn``'s transaction ends; call it first in the transaction.

    Processes that start together (the iterations of a sweep, a controller replaced in a
    rolling update) would otherwise create or migrate the same tables at once: the second
    ``CREATE TABLE`` fails ("already exists", or a unique violation in PostgreSQL's catalog).
    PostgreSQL: an advisory lock on ``name``. SQLite: the driver would begin the transaction
    lazily and leave DDL outside it, so begin it here as a writer (waits up to busy_timeout).
    """
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _lock_key(name)})
    elif conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _lock_key(name: str) -> int:
    return zlib.crc32(f"tickrun:{name}".encode())


__all__ = [
    "POSTGRES_HINT",
    "create_sql_engine",
    "lock_schema",
    "normalize_url",
    "reason",
    "safe_url",
]
