"""The controller's tables: functions, builds, replicas, events, revoked UI sessions (SQLAlchemy 2
declarative)."""

from __future__ import annotations

import json
import time
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from tickrun.functions.spec import FunctionSpec, parse_spec


class Base(DeclarativeBase):
    pass


@lru_cache(maxsize=1024)
def _spec_of(text: str) -> FunctionSpec:
    return parse_spec(json.loads(text))


class SpecColumn(TypeDecorator[FunctionSpec]):
    """A function spec kept as the model's JSON (its Nuclio-shaped mapping).

    The edge (CLI, API) validated the spec before it was stored, so a row hands back the model.
    Reconcile passes load every row a few times a second: a spec seen before comes from a cache
    keyed by its JSON text instead of being validated again. Callers treat it as read-only (it is
    shared between rows holding the same spec).
    """

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if not isinstance(value, FunctionSpec):
            raise TypeError(f"a function row's spec must be a FunctionSpec, not {type(value)}")
        return value.to_yaml_dict()

    def process_result_value(self, value: Any, dialect: Dialect) -> FunctionSpec | None:
        if value is None:
            return None
        return _spec_of(json.dumps(value, sort_keys=True, separators=(",", ":")))

    def coerce_compared_value(self, op: Any, value: Any) -> Any:
        return self.impl_instance


def _now() -> float:
    return time.time()


class Meta(Base):
    """Key/value facts about this controller (its id, used to label containers it owns)."""

    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class FunctionRow(Base):
    __tablename__ = "functions"
    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    spec: Mapped[FunctionSpec] = mapped_column(SpecColumn)
    platform: Mapped[str] = mapped_column(String(16))
    version: Mapped[int] = mapped_column(Integer, default=1)
    # building → deploying → ready | error; deleting while replicas stop.
    state: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text, default="")
    code_hash: Mapped[str] = mapped_column(String(64))
    # What replicas run: {"image", "code_dir"} (container) or {"python", "build_dir", "code_dir"}.
    image: Mapped[str | None] = mapped_column(String(255), nullable=True)
    artifact: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # Hash of everything a replica's behaviour depends on; replicas of another revision are
    # replaced (rolling) and scaling alone never changes it.
    revision: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[float] = mapped_column(Float, default=_now)
    updated_at: Mapped[float] = mapped_column(Float, default=_now)
    # The function's own TCP port on the controller host (portgateway.py); kept across restarts.
    gateway_port: Mapped[int | None] = mapped_column(Integer, nullable=True)

    def seen(self) -> dict[str, Any]:
        """What a status pass read of the row, for ``Store.update_function_if``: a deploy
        moves the version (and the state), a build or a model binding the revision."""
        return {"version": self.version, "revision": self.revision, "state": self.state}


class BuildRow(Base):
    __tablename__ = "builds"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    function: Mapped[str] = mapped_column(String(63), index=True)
    version: Mapped[int] = mapped_column(Integer)
    platform: Mapped[str] = mapped_column(String(16))
    content_hash: Mapped[str] = mapped_column(String(64))
    # running | succeeded | failed | aborted (its function was deleted while it ran)
    state: Mapped[str] = mapped_column(String(16))
    cached: Mapped[bool] = mapped_column(Boolean, default=False)
    artifact: Mapped[str | None] = mapped_column(Text, nullable=True)
    log_path: Mapped[str] = mapped_column(Text)
    message: Mapped[str] = mapped_column(Text, default="")
    started_at: Mapped[float] = mapped_column(Float, default=_now)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class ReplicaRow(Base):
    __tablename__ = "replicas"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    function: Mapped[str] = mapped_column(
        String(63), ForeignKey("functions.name", ondelete="CASCADE"), index=True
    )
    revision: Mapped[str] = mapped_column(String(64))
    platform: Mapped[str] = mapped_column(String(16))
    port: Mapped[int] = mapped_column(Integer)
    # starting → ready; stopping; failed (exited, waiting for restart).
    state: Mapped[str] = mapped_column(String(16))
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # /proc start time of pid, so a recycled pid is never mistaken for our replica (clock ticks
    # since boot: more than 32 bits after ~248 days of uptime).
    pid_start: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    container: Mapped[str | None] = mapped_column(String(128), nullable=True)
    log_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    restarts: Mapped[int] = mapped_column(Integer, default=0)
    restart_at: Mapped[float] = mapped_column(Float, default=0.0)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    started_at: Mapped[float] = mapped_column(Float, default=_now)
    ready_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class EventRow(Base):
    __tablename__ = "events"
    __table_args__ = (Index("ix_events_function_id", "function", "id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    function: Mapped[str] = mapped_column(String(63))
    time: Mapped[float] = mapped_column(Float, default=_now)
    kind: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)
    replica: Mapped[str | None] = mapped_column(String(64), nullable=True)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class RevokedSessionRow(Base):
    """A web UI session logged out before its cookie expired (``controller/ui/session.py``):
    kept here, not per process, so every controller sharing this store refuses the cookie.
    Rows whose cookie has expired anyway are pruned."""

    __tablename__ = "ui_revoked_sessions"
    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires: Mapped[float] = mapped_column(Float, index=True)
