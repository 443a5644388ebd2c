"""The run DB on SQLAlchemy: a SQLite file (WAL) locally, the controller's DB URL on a server
(PostgreSQL through psycopg 3).

Two tables of our own, ``tickrun_runs`` and ``tickrun_artifacts`` (plus the model registry's,
``registry_sql.py``), created idempotently (under a lock on PostgreSQL: a sweep's iterations
open the DB together; a DB made before a table existed gains it on its next open). Each row keeps
the full record as JSON beside the columns we filter on, so the record can grow without migrations.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    bindparam,
    select,
    update,
)
from sqlalchemy.exc import SQLAlchemyError

from ...errors import BadRequestError, NotFoundError, StoreError
from ..records import ArtifactRecord, RunBatch, RunRecord, RunState
from . import schema
from .base import DbLocator, RunDB, stale_reason
from .registry_base import ModelRegistry
from .registry_sql import SqlModelRegistry, registry_metadata
from .rows import RUN_VALUES, RunKey, artifact_row, latest_runs, plan_run_writes, run_row
from .schema import TableDef
from .sqlengine import create_sql_engine, lock_schema, reason, safe_url
from .sqlitewal import start_connection

metadata = MetaData()

_TYPES: dict[str, Any] = {"int": Integer, "float": Float, "text": Text}


def _table(t: TableDef) -> Table:
    """The SQLAlchemy table of a :mod:`.schema` description (the one source of the schema)."""
    return Table(
        t.name,
        metadata,
        *(
            Column(
                c.name,
                String(c.length) if c.type == "str" else _TYPES[c.type],
                primary_key=c.primary_key,
                nullable=c.nullable,
                index=c.index,
            )
            for c in t.columns
        ),
    )


runs_table = _table(schema.RUNS)
labels_table = _table(schema.LABELS)
artifacts_table = _table(schema.ARTIFACTS)

_LIVE = (RunState.CREATED.value, RunState.RUNNING.value)

# Built once: a run is flushed often (every commit() of a job), and building and cache-keying
# a fresh SQLAlchemy statement per flush cost more than SQLite's own work.
_SELECT_STATES = select(runs_table.c.uid, runs_table.c.iteration, runs_table.c.state).where(
    runs_table.c.uid.in_(bindparam("uids", expanding=True))
)
_SELECT_BODY = select(runs_table.c.body).where(
    and_(runs_table.c.uid == bindparam("k_uid"), runs_table.c.iteration == bindparam("k_iter"))
)
_UPDATE_RUN = (
    update(runs_table)
    .where(
        and_(runs_table.c.uid == bindparam("k_uid"), runs_table.c.iteration == bindparam("k_iter"))
    )
    .values({c: bindparam(f"v_{c}") for c in RUN_VALUES})
)
_ARTIFACT_KEY = ("project", "uid", "iteration", "key")
_UPDATE_ARTIFACT = (
    update(artifacts_table)
    .where(and_(*(artifacts_table.c[c] == bindparam(f"k_{c}") for c in _ARTIFACT_KEY)))
    .values({c.name: bindparam(f"v_{c.name}") for c in artifacts_table.c})
)
_INSERT_ARTIFACT = artifacts_table.insert()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL: readers never block the run's writer.
    start_connection(dbapi_conn, busy_timeout_ms=15_000)


class SqlRunDB(RunDB):
    """Constructor does no I/O; the engine and tables come on first use."""

    def __init__(self, url: str, *, stale_after_s: float = 60.0) -> None:
        self.url = url
        self.stale_after_s = stale_after_s
        self._engine: Engine | None = None
        self._lock = threading.Lock()
        self._last_stale_check = 0.0

    @property
    def engine(self) -> Engine:
        with self._lock:
            if self._engine is None:
                self._engine = self._open()
            return self._engine

    def _open(self) -> Engine:
        engine = create_sql_engine(self.url, what="the run DB", sqlite_on_connect=_sqlite_pragmas)
        try:
            if self.url.startswith("sqlite:///"):
                path = self.url[len("sqlite:///") :]
                if path and path != ":memory:":
                    Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
            with engine.begin() as conn:
                lock_schema(conn, "run-db")
                metadata.create_all(conn, checkfirst=True)
                registry_metadata.create_all(conn, checkfirst=True)
        except (SQLAlchemyError, OSError) as exc:
            engine.dispose()
            raise StoreError(
                f"cannot open the run DB ({safe_url(self.url)}): {reason(exc, self.url)}"
            ) from exc
        return engine

    def locator(self) -> DbLocator:
        return DbLocator("sql", self.url)

    def registry(self) -> ModelRegistry:
        # Made per call, not kept: a SqlRunDB stays picklable (no closure in its state).
        return SqlModelRegistry(lambda: self.engine, self)

    def close(self) -> None:
        with self._lock:
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None

    # -- writes --------------------------------------------------------------------------------

    def apply(self, batch: RunBatch) -> None:
        if not batch.runs and not batch.artifacts:
            return
        try:
            with self.engine.begin() as conn:
                self._write_runs(conn, batch.runs)
                self._write_artifacts(conn, batch.artifacts)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot write runs to the run DB: {type(exc).__name__}") from exc

    def _write_runs(self, conn: Any, runs: list[RunRecord]) -> None:
        if not runs:
            return
        latest = latest_runs(runs)
        states = {
            (row.uid, row.iteration): row.state
            for row in conn.execute(_SELECT_STATES, {"uids": sorted({u for u, _ in latest})})
        }

        def stored_body(k: RunKey) -> str:
            body: str = conn.execute(_SELECT_BODY, {"k_uid": k[0], "k_iter": k[1]}).scalar_one()
            return body

        plan = plan_run_writes(latest, states, stored_body)
        if plan.inserts:
            conn.execute(runs_table.insert(), plan.inserts)
        if plan.updates:
            conn.execute(
                _UPDATE_RUN,
                [
                    {"k_uid": r["uid"], "k_iter": r["iteration"]}
                    | {f"v_{c}": r[c] for c in RUN_VALUES}
                    for r in plan.updates
                ],
            )
        t = labels_table
        for uid, iteration in plan.stale_labels:
            conn.execute(t.delete().where(and_(t.c.uid == uid, t.c.iteration == iteration)))
        if rows := plan.label_rows():
            conn.execute(t.insert(), rows)

    def _write_artifacts(self, conn: Any, arts: list[ArtifactRecord]) -> None:
        for a in arts:
            row = artifact_row(a)
            params = {f"v_{k}": v for k, v in row.items()}
            params.update({f"k_{k}": row[k] for k in _ARTIFACT_KEY})
            # A re-logged key replaces the record, as the object itself was replaced.
            if conn.execute(_UPDATE_ARTIFACT, params).rowcount == 0:
                conn.execute(_INSERT_ARTIFACT, [row])

    # -- reads ---------------------------------------------------------------------------------

    def _maybe_mark_stale(self) -> None:
        now = time.monotonic()
        if now - self._last_stale_check >= 1.0:
            self._last_stale_check = now
            self.mark_stale()

    def get_run(self, uid: str, iteration: int = 0) -> RunRecord:
        self._maybe_mark_stale()
        try:
            with self.engine.connect() as conn:
                row = conn.execute(
                    select(runs_table.c.body).where(
                        and_(runs_table.c.uid == uid, runs_table.c.iteration == iteration)
                    )
                ).first()
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read the run DB: {type(exc).__name__}") from exc
        if row is None:
            suffix = f" iteration {iteration}" if iteration else ""
            raise NotFoundError(f"run {uid}{suffix} not found")
        return RunRecord.from_trusted_json(row.body)

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
        self._maybe_mark_stale()
        q = select(runs_table.c.body)
        if label:
            key, sep, value = label.partition("=")
            if not sep or not key:
                raise BadRequestError(f"label query must be key=value, got {label[:100]!r}")
            lt = labels_table
            q = q.join(
                lt, and_(lt.c.uid == runs_table.c.uid, lt.c.iteration == runs_table.c.iteration)
            ).where(and_(lt.c.key == key, lt.c.value == value))
        if project:
            q = q.where(runs_table.c.project == project)
        if uid:
            q = q.where(runs_table.c.uid == uid)
        elif not iterations:
            q = q.where(runs_table.c.iteration == 0)
        if state:
            q = q.where(runs_table.c.state == state)
        if name:
            q = q.where(runs_table.c.name == name)
        q = q.order_by(runs_table.c.created_at.desc(), runs_table.c.iteration).limit(limit)
        try:
            with self.engine.connect() as conn:
                return [RunRecord.from_trusted_json(r.body) for r in conn.execute(q)]
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read the run DB: {type(exc).__name__}") from exc

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
        t = artifacts_table
        q = select(t.c.body)
        for col, val in ((t.c.project, project), (t.c.uid, uid), (t.c.key, key), (t.c.kind, kind)):
            if val:
                q = q.where(col == val)
        if iteration is not None:
            q = q.where(t.c.iteration == iteration)
        q = q.order_by(t.c.created_at.desc()).limit(limit)
        try:
            with self.engine.connect() as conn:
                return [ArtifactRecord.from_trusted_json(r.body) for r in conn.execute(q)]
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read the run DB: {type(exc).__name__}") from exc

    def mark_stale(self, now: float | None = None) -> list[RunRecord]:
        t = time.time() if now is None else now
        try:
            with self.engine.begin() as conn:
                rows = conn.execute(
                    select(runs_table.c.body).where(runs_table.c.state.in_(_LIVE))
                ).all()
                marked = []
                for row in rows:
                    run = RunRecord.from_trusted_json(row.body)
                    reason = stale_reason(run, self.stale_after_s, t)
                    if reason is None:
                        continue
                    dead = self.aborted(run, reason, t)
                    conn.execute(
                        update(runs_table)
                        .where(
                            and_(
                                runs_table.c.uid == run.uid,
                                runs_table.c.iteration == run.iteration,
                                runs_table.c.state.in_(_LIVE),
                            )
                        )
                        .values(**run_row(dead))
                    )
                    marked.append(dead)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot update the run DB: {type(exc).__name__}") from exc
        return marked


__all__ = ["SqlRunDB", "artifacts_table", "labels_table", "metadata", "runs_table"]
