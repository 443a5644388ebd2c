"""The embedded SQLite run DB through the stdlib ``sqlite3`` driver: what a run records with.

Importing SQLAlchemy costs a job 100-380 ms of start-up (more than the rest of ``tickrun run``
together), yet recording a run is a handful of statements on one file: create the tables if
needed, mark dead runs aborted, upsert the run and its artifact records. :class:`LiteRunDB`
does those with ``sqlite3`` on the very tables :class:`~.sql.SqlRunDB` uses: the tables come
from the same description (:mod:`.schema`, worded as SQLAlchemy words them), the rows and the
insert/update/label rules from :mod:`.rows`. Queries (``list_runs``, ``list_artifacts``) and
the model registry go to a :class:`~.sql.SqlRunDB` on the same file, made on first use: one
query language, and PostgreSQL keeps SQLAlchemy altogether (:func:`.open_recording_db`).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import NotFoundError, StoreError
from ..records import ArtifactRecord, RunBatch, RunRecord, RunState
from .base import DbLocator, RunDB, stale_reason
from .rows import RUN_VALUES, RunKey, artifact_row, latest_runs, plan_run_writes, run_row
from .schema import ARTIFACTS, LABELS, RUN_TABLES, RUNS
from .sqlitewal import start_connection

if TYPE_CHECKING:
    from .registry_base import ModelRegistry
    from .sql import SqlRunDB

SQLITE_PREFIX = "sqlite:///"
_LIVE = (RunState.CREATED.value, RunState.RUNNING.value)
_RUN_COLS = tuple(c.name for c in RUNS.columns)
_ART_COLS = tuple(c.name for c in ARTIFACTS.columns)
_LABEL_COLS = tuple(c.name for c in LABELS.columns)


# Statements are put together from schema.py's names (constants, never input); every value
# is a bound parameter.
def _q(name: str) -> str:
    return f'"{name}"'


def _insert(table: str, cols: tuple[str, ...]) -> str:
    names, values = ", ".join(map(_q, cols)), ", ".join(f":{c}" for c in cols)
    return f"INSERT INTO {table} ({names}) VALUES ({values})"  # noqa: S608


def _update(table: str, cols: tuple[str, ...], where: str) -> str:
    sets = ", ".join(f"{_q(c)} = :{c}" for c in cols)
    return f"UPDATE {table} SET {sets} WHERE {where}"  # noqa: S608


def _select(table: str, cols: str, where: str) -> str:
    return f"SELECT {cols} FROM {table} WHERE {where}"  # noqa: S608


_RUN_KEY = "uid = :uid AND iteration = :iteration"
_INSERT_RUN = _insert(RUNS.name, _RUN_COLS)
_UPDATE_RUN = _update(RUNS.name, RUN_VALUES, _RUN_KEY)
_UPDATE_STALE = _update(RUNS.name, RUN_VALUES, f"{_RUN_KEY} AND state IN (:live0, :live1)")
_SELECT_BODY = _select(RUNS.name, "body", "uid = ? AND iteration = ?")
_SELECT_LIVE = _select(RUNS.name, "body", "state IN (?, ?)")
_INSERT_LABEL = _insert(LABELS.name, _LABEL_COLS)
_DELETE_LABELS = f"DELETE FROM {LABELS.name} WHERE uid = ? AND iteration = ?"  # noqa: S608
_INSERT_ARTIFACT = _insert(ARTIFACTS.name, _ART_COLS)
_UPDATE_ARTIFACT = _update(
    ARTIFACTS.name,
    _ART_COLS,
    'project = :project AND uid = :uid AND iteration = :iteration AND "key" = :key',
)


def sqlite_path(url: str) -> str | None:
    """The file of a plain ``sqlite:///path`` URL; None for anything else (another database,
    ``:memory:``, URL query options): those stay with SQLAlchemy."""
    if not url.startswith(SQLITE_PREFIX) or "?" in url:
        return None
    path = url[len(SQLITE_PREFIX) :]
    return path if path and path != ":memory:" else None


class LiteRunDB(RunDB):
    """A run DB on the SQLite file of ``url`` (``sqlite:///path``). No I/O until first use."""

    def __init__(self, url: str, *, stale_after_s: float = 60.0) -> None:
        path = sqlite_path(url)
        if path is None:
            raise StoreError(f"the sqlite3 run DB needs a sqlite:///path URL, not {url[:100]!r}")
        self.url = url
        self.path = path
        self.stale_after_s = stale_after_s
        self._conn: sqlite3.Connection | None = None
        self._sql: SqlRunDB | None = None
        # One connection, shared by the job's thread and the tracker's flusher.
        self._lock = threading.RLock()
        self._last_stale_check = 0.0

    # -- plumbing ------------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = self._open()
        return self._conn

    def _open(self) -> sqlite3.Connection:
        try:
            Path(self.path).expanduser().parent.mkdir(parents=True, exist_ok=True)
            # Autocommit mode: transactions are begun here, explicitly, as writers.
            conn = sqlite3.connect(
                self.path, timeout=15, isolation_level=None, check_same_thread=False
            )
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open the run DB ({self.url}): {_reason(exc)}") from exc
        try:
            # As SqlRunDB's connections: WAL (readers never block the writer), NORMAL sync.
            start_connection(conn, busy_timeout_ms=15_000)
            # Processes starting together must not create the tables together (lock_schema).
            conn.execute("BEGIN IMMEDIATE")
            for table in RUN_TABLES:
                for ddl in table.sqlite_ddl():
                    conn.execute(ddl)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            conn.close()
            raise StoreError(f"cannot open the run DB ({self.url}): {_reason(exc)}") from exc
        return conn

    @contextmanager
    def _write(self, what: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StoreError(f"cannot {what} the run DB: {type(exc).__name__}") from exc

    def sql(self) -> SqlRunDB:
        """The SQLAlchemy DB on the same file, for queries and the model registry."""
        with self._lock:
            if self._sql is None:
                from .sql import SqlRunDB

                self._sql = SqlRunDB(self.url, stale_after_s=self.stale_after_s)
            return self._sql

    def locator(self) -> DbLocator:
        return DbLocator("sql", self.url)

    def registry(self) -> ModelRegistry:
        return self.sql().registry()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            if self._sql is not None:
                self._sql.close()

    # -- writes --------------------------------------------------------------------------------

    def apply(self, batch: RunBatch) -> None:
        if not batch.runs and not batch.artifacts:
            return
        with self._write("write runs to") as conn:
            if batch.runs:
                self._write_runs(conn, batch.runs)
            for a in batch.artifacts:
                row = artifact_row(a)
                # A re-logged key replaces the record, as the object itself was replaced.
                if conn.execute(_UPDATE_ARTIFACT, row).rowcount == 0:
                    conn.execute(_INSERT_ARTIFACT, row)

    @staticmethod
    def _write_runs(conn: sqlite3.Connection, runs: list[RunRecord]) -> None:
        latest = latest_runs(runs)
        uids = sorted({u for u, _ in latest})
        marks = ", ".join("?" * len(uids))
        states: dict[RunKey, str] = {
            (uid, it): state
            for uid, it, state in conn.execute(
                _select(RUNS.name, "uid, iteration, state", f"uid IN ({marks})"), uids
            )
        }

        def stored_body(k: RunKey) -> str:
            body: str = conn.execute(_SELECT_BODY, k).fetchone()[0]
            return body

        plan = plan_run_writes(latest, states, stored_body)
        if plan.inserts:
            conn.executemany(_INSERT_RUN, plan.inserts)
        if plan.updates:
            conn.executemany(_UPDATE_RUN, plan.updates)
        if plan.stale_labels:
            conn.executemany(_DELETE_LABELS, plan.stale_labels)
        if rows := plan.label_rows():
            conn.executemany(_INSERT_LABEL, rows)

    def mark_stale(self, now: float | None = None) -> list[RunRecord]:
        t = time.time() if now is None else now
        # Every run's start and the API's reads come here, and almost always nothing is stale:
        # a plain read (WAL: no lock) decides whether the writer's lock is needed at all.
        with self._lock:
            try:
                live = self._connection().execute(_SELECT_LIVE, _LIVE).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"cannot read the run DB: {type(exc).__name__}") from exc
        if not any(self._stale(body, t) for (body,) in live):
            return []
        marked = []
        with self._write("update") as conn:
            # Again under the lock: a heartbeat since the read may have brought a run back.
            for (body,) in conn.execute(_SELECT_LIVE, _LIVE).fetchall():
                found = self._stale(body, t)
                if found is None:
                    continue
                dead = self.aborted(*found, t)
                conn.execute(_UPDATE_STALE, {**run_row(dead), "live0": _LIVE[0], "live1": _LIVE[1]})
                marked.append(dead)
        return marked

    def _stale(self, body: str, now: float) -> tuple[RunRecord, str] | None:
        run = RunRecord.from_trusted_json(body)
        reason = stale_reason(run, self.stale_after_s, now)
        return None if reason is None else (run, reason)

    # -- reads ---------------------------------------------------------------------------------

    def get_run(self, uid: str, iteration: int = 0) -> RunRecord:
        now = time.monotonic()
        if now - self._last_stale_check >= 1.0:
            self._last_stale_check = now
            self.mark_stale()
        with self._lock:
            try:
                row = self._connection().execute(_SELECT_BODY, (uid, iteration)).fetchone()
            except sqlite3.Error as exc:
                raise StoreError(f"cannot read the run DB: {type(exc).__name__}") from exc
        if row is None:
            suffix = f" iteration {iteration}" if iteration else ""
            raise NotFoundError(f"run {uid}{suffix} not found")
        return RunRecord.from_trusted_json(row[0])

    def list_runs(
        self,
        project: str | None = None,
        *,
        uid: str | None = None,
        state: str | None = None,
        name: str | None = None,
        iterations: bool = False,
        limit: int = 100,
        label: str | None = None,
    ) -> list[RunRecord]:
        return self.sql().list_runs(
            project,
            uid=uid,
            state=state,
            name=name,
            iterations=iterations,
            limit=limit,
            label=label,
        )

    def list_artifacts(
        self,
        project: str | None = None,
        *,
        uid: str | None = None,
        iteration: int | None = None,
        key: str | None = None,
        kind: str | None = None,
        limit: int = 1000,
    ) -> list[ArtifactRecord]:
        return self.sql().list_artifacts(
            project, uid=uid, iteration=iteration, key=key, kind=kind, limit=limit
        )

    def __getstate__(self) -> dict[str, Any]:
        # A process it is sent to opens its own connection.
        return {"url": self.url, "stale_after_s": self.stale_after_s}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["url"], stale_after_s=state["stale_after_s"])  # type: ignore[misc]


def _reason(exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


__all__ = ["LiteRunDB", "sqlite_path"]
