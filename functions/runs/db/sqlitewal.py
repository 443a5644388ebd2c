"""How every SQLite connection of tickrun's stores starts: a busy timeout, then WAL.

Only the standard library here: the run DB's light path (:mod:`.lite`) opens SQLite without
SQLAlchemy, and a CLI start-up should not pay for importing it.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

_RETRY_S = 0.05


def start_connection(conn: Any, *, busy_timeout_ms: int, foreign_keys: bool = False) -> None:
    """Set up a new DBAPI connection (``sqlite3.Connection``) of a store.

    The busy timeout comes first, so that every later statement, these pragmas included, waits
    for another connection's lock instead of failing. WAL is switched on only when the file is
    not in WAL already (it is persistent): the switch needs the database to itself, and a switch
    that meets other connections fails with "database is locked" at once, which the busy handler
    does not cover; it is retried until the busy timeout. Seen in CI: a pipeline's threads and a
    reader opening one new run DB together under load.
    """
    cur = conn.cursor()
    try:
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        deadline = time.monotonic() + busy_timeout_ms / 1000
        while True:
            try:
                if str(cur.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                    cur.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(_RETRY_S)
        # WAL with NORMAL sync is durable across a process kill (only an OS crash can lose the
        # last transactions).
        cur.execute("PRAGMA synchronous=NORMAL")
        if foreign_keys:
            cur.execute("PRAGMA foreign_keys=ON")
    finally:
        cur.close()
