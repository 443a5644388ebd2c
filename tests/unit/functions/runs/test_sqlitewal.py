from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from tickrun.functions.runs.db.lite import LiteRunDB
from tickrun.functions.runs.db.sql import SqlRunDB
from tickrun.functions.runs.db.sqlitewal import start_connection


def _mode(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        return str(conn.execute("PRAGMA journal_mode").fetchone()[0])


def test_a_connection_waits_for_a_lock_held_while_it_starts(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("CREATE TABLE t (x INTEGER)")
    released = threading.Timer(0.5, lambda: holder.execute("COMMIT"))
    released.start()
    conn = sqlite3.connect(path, timeout=0, check_same_thread=False)
    started = time.monotonic()
    start_connection(conn, busy_timeout_ms=10_000)
    waited = time.monotonic() - started
    released.join()
    assert waited >= 0.3  # it waited for the lock rather than failing at once
    assert _mode(path) == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    conn.close()
    holder.close()


def test_a_lock_held_past_the_busy_timeout_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("CREATE TABLE t (x INTEGER)")
    conn = sqlite3.connect(path, timeout=0)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        start_connection(conn, busy_timeout_ms=200)
    holder.execute("COMMIT")
    conn.close()
    holder.close()


@pytest.mark.parametrize("kind", ["sql", "lite"])
def test_many_threads_open_one_new_run_db_together(tmp_path: Path, kind: str) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def open_and_list() -> None:
        db = SqlRunDB(url) if kind == "sql" else LiteRunDB(url)
        try:
            barrier.wait()
            db.list_runs()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_and_list) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert _mode(tmp_path / "runs.db") == "wal"
