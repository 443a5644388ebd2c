"""The store: one SQLAlchemy engine (SQLite in WAL mode by default, PostgreSQL through
``TICKRUN_DB_URL``), alembic migrations at start.

Calls are short synchronous transactions; the controller runs them on its event loop because a
local SQLite write in WAL mode takes well under a millisecond (a PostgreSQL round trip on the
same network, a few hundred microseconds).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, CursorResult, Engine, delete, insert, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from tickrun.functions.errors import NotFoundError, StoreError
from tickrun.functions.runs.db.sqlengine import create_sql_engine, lock_schema, reason, safe_url
from tickrun.functions.runs.db.sqlitewal import start_connection

from .models import BuildRow, EventRow, FunctionRow, Meta, ReplicaRow, RevokedSessionRow

MIGRATIONS = Path(__file__).with_name("migrations")
# alembic's migration context is a module global: two stores migrating in one process (tests,
# the demo) must take turns. lock_schema orders processes.
_MIGRATING = threading.Lock()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL: readers never block the writer.
    start_connection(dbapi_conn, busy_timeout_ms=5_000, foreign_keys=True)


def _ensure_controller_id(conn: Connection) -> None:
    # Made under the migration lock: two controllers opening one new database at once would
    # otherwise both insert an id (PostgreSQL refuses the second; SQLite serialized them).
    found = conn.execute(select(Meta.value).where(Meta.key == "controller_id")).first()
    if found is None:
        conn.execute(insert(Meta).values(key="controller_id", value=uuid.uuid4().hex[:12]))


class Store:
    """Constructor does no I/O; :meth:`open` connects and migrates."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: Engine | None = None
        self._sessions: sessionmaker[Session] | None = None

    def open(self) -> None:
        # SQLite only: a server database has no folder or file modes of ours.
        if self.url.startswith("sqlite:///"):
            path = Path(self.url.removeprefix("sqlite:///"))
            try:
                path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                # SQLite gives its -wal and -shm files the database file's mode: 0600 for all.
                os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
                for f in (
                    path,
                    path.with_name(path.name + "-wal"),
                    path.with_name(path.name + "-shm"),
                ):
                    if f.exists():
                        f.chmod(0o600)
            except OSError as exc:
                raise StoreError(
                    f"cannot create the state folder {path.parent}: {exc.strerror}"
                ) from exc
        engine = create_sql_engine(
            self.url, what="the state store", sqlite_on_connect=_sqlite_pragmas
        )
        try:
            self._engine = engine
            self.migrate()
        except SQLAlchemyError as exc:
            self.close()
            raise StoreError(
                f"cannot open the state store ({safe_url(self.url)}): {reason(exc, self.url)}"
            ) from exc
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def migrate(self) -> None:
        """Upgrade the schema to the newest revision and give this state its controller id."""
        # alembic logs every plugin it sets up at INFO; only its warnings matter here.
        logging.getLogger("alembic").setLevel(logging.WARNING)
        from alembic import command
        from alembic.config import Config

        if self._engine is None:
            raise StoreError("the state store is not open")
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        with _MIGRATING, self._engine.begin() as conn:
            # Two controllers starting on one database migrate one after the other.
            lock_schema(conn, "controller-store")
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
            _ensure_controller_id(conn)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    @contextmanager
    def session(self) -> Iterator[Session]:
        if self._sessions is None:
            raise StoreError("the state store is not open")
        with self._sessions() as s:
            try:
                yield s
                s.commit()
            except SQLAlchemyError as exc:
                s.rollback()
                raise StoreError(f"state store error: {type(exc).__name__}") from exc

    # --- meta -----------------------------------------------------------------------------------

    def controller_id(self) -> str:
        """A stable id for this controller's state (labels its containers); made by open()."""
        with self.session() as s:
            row = s.get(Meta, "controller_id")
            if row is None:
                raise StoreError("the state store has no controller id")
            return row.value

    # --- functions ------------------------------------------------------------------------------

    def get_function(self, name: str) -> FunctionRow:
        with self.session() as s:
            row = s.get(FunctionRow, name)
            if row is None:
                raise NotFoundError(f"function {name!r} not found")
            return row

    def find_function(self, name: str) -> FunctionRow | None:
        with self.session() as s:
            return s.get(FunctionRow, name)

    def list_functions(self) -> Sequence[FunctionRow]:
        with self.session() as s:
            return s.scalars(select(FunctionRow).order_by(FunctionRow.name)).all()

    def save_function(self, row: FunctionRow) -> FunctionRow:
        row.updated_at = time.time()
        with self.session() as s:
            return s.merge(row)

    def update_function(self, name: str, **values: Any) -> FunctionRow:
        with self.session() as s:
            row = s.get(FunctionRow, name)
            if row is None:
                raise NotFoundError(f"function {name!r} not found")
            for k, v in values.items():
                setattr(row, k, v)
            row.updated_at = time.time()
            return row

    def update_function_if(self, name: str, expect: Mapping[str, Any], **values: Any) -> bool:
        """Update ``name`` only while its row still holds ``expect`` (e.g. the version, revision
        and state a status pass read before its awaits); False, and nothing written, when the
        row changed meanwhile or is gone. One conditional UPDATE: a deploy that came in since
        the read keeps its state (a pass must not mark a version ready that it never saw)."""
        where = [getattr(FunctionRow, column) == value for column, value in expect.items()]
        stmt = (
            update(FunctionRow)
            .where(FunctionRow.name == name, *where)
            .values(**values, updated_at=time.time())
            .execution_options(synchronize_session=False)
        )
        with self.session() as s:
            result = s.execute(stmt)
            return isinstance(result, CursorResult) and result.rowcount == 1

    def delete_function(self, name: str) -> None:
        with self.session() as s:
            s.execute(delete(ReplicaRow).where(ReplicaRow.function == name))
            s.execute(delete(FunctionRow).where(FunctionRow.name == name))

    # --- builds ---------------------------------------------------------------------------------

    def add_build(self, row: BuildRow) -> BuildRow:
        with self.session() as s:
            s.add(row)
            return row

    def update_build(self, build_id: str, **values: Any) -> BuildRow:
        with self.session() as s:
            row = s.get(BuildRow, build_id)
            if row is None:
                raise NotFoundError(f"build {build_id!r} not found")
            for k, v in values.items():
                setattr(row, k, v)
            return row

    def delete_builds(self, function: str) -> None:
        with self.session() as s:
            s.execute(delete(BuildRow).where(BuildRow.function == function))

    def get_build(self, build_id: str) -> BuildRow:
        with self.session() as s:
            row = s.get(BuildRow, build_id)
            if row is None:
                raise NotFoundError(f"build {build_id!r} not found")
            return row

    def list_builds(self, function: str, limit: int = 50) -> Sequence[BuildRow]:
        with self.session() as s:
            q = (
                select(BuildRow)
                .where(BuildRow.function == function)
                .order_by(BuildRow.started_at.desc())
                .limit(limit)
            )
            return s.scalars(q).all()

    # --- replicas -------------------------------------------------------------------------------

    def list_replicas(self, function: str | None = None) -> Sequence[ReplicaRow]:
        with self.session() as s:
            q = select(ReplicaRow).order_by(ReplicaRow.started_at)
            if function is not None:
                q = q.where(ReplicaRow.function == function)
            return s.scalars(q).all()

    def save_replica(self, row: ReplicaRow) -> ReplicaRow:
        with self.session() as s:
            return s.merge(row)

    def delete_replica(self, replica_id: str) -> None:
        with self.session() as s:
            s.execute(delete(ReplicaRow).where(ReplicaRow.id == replica_id))

    # --- events ---------------------------------------------------------------------------------

    def add_event(
        self,
        function: str,
        kind: str,
        message: str,
        *,
        replica: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        with self.session() as s:
            s.add(
                EventRow(
                    function=function,
                    kind=kind,
                    message=message,
                    replica=replica,
                    data=data,
                    time=time.time(),
                )
            )

    def list_events(
        self, function: str, *, after_id: int = 0, limit: int = 500
    ) -> Sequence[EventRow]:
        with self.session() as s:
            q = (
                select(EventRow)
                .where(EventRow.function == function, EventRow.id > after_id)
                .order_by(EventRow.id)
                .limit(limit)
            )
            return s.scalars(q).all()

    # --- web UI sessions logged out (controller/ui/session.py) ---------------------------------

    def revoke_session(self, nonce: str, expires: float, now: float | None = None) -> None:
        """Record a logged-out session until its cookie would have expired; rows past that
        are pruned here (so the table holds at most the logouts of one session lifetime)."""
        t = time.time() if now is None else now
        try:
            with self.session() as s:
                s.execute(delete(RevokedSessionRow).where(RevokedSessionRow.expires <= t))
                if s.get(RevokedSessionRow, nonce) is None:
                    s.add(RevokedSessionRow(nonce=nonce, expires=expires))
        except StoreError:
            # Two controllers logging the same session out at once: one insert wins.
            if nonce not in self.revoked_sessions(t):
                raise

    def revoked_sessions(self, now: float | None = None) -> dict[str, float]:
        """Nonce → expiry of every revoked session whose cookie has not expired."""
        t = time.time() if now is None else now
        with self.session() as s:
            rows = s.execute(
                select(RevokedSessionRow.nonce, RevokedSessionRow.expires).where(
                    RevokedSessionRow.expires > t
                )
            ).all()
        return {nonce: expires for nonce, expires in rows}
