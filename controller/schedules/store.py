"""The schedules table through the controller's :class:`~tickrun.controller.store.Store`
(its sessions, so SQLite and PostgreSQL alike); short synchronous transactions."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from tickrun.functions.errors import ConflictError, NotFoundError, StoreError

from ..store import Store
from .rows import ScheduleRow


class ScheduleStore:
    """Constructor does no I/O (the store opens at the controller's start)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def add(self, row: ScheduleRow) -> ScheduleRow:
        row.created_at = row.updated_at = time.time()
        try:
            with self.store.session() as s:
                if s.get(ScheduleRow, row.name) is not None:
                    raise ConflictError(
                        f"schedule {row.name!r} exists: delete it first, or pick another name"
                    )
                s.add(row)
                return row
        except StoreError as exc:
            # Two creates racing past the check: the primary key refuses the second.
            if isinstance(exc.__cause__, IntegrityError):
                raise ConflictError(f"schedule {row.name!r} exists") from exc
            raise

    def get(self, name: str) -> ScheduleRow:
        with self.store.session() as s:
            row = s.get(ScheduleRow, name)
            if row is None:
                raise NotFoundError(f"schedule {name!r} not found")
            return row

    def find(self, name: str) -> ScheduleRow | None:
        with self.store.session() as s:
            return s.get(ScheduleRow, name)

    def list(self) -> Sequence[ScheduleRow]:
        with self.store.session() as s:
            return s.scalars(select(ScheduleRow).order_by(ScheduleRow.name)).all()

    def update(self, name: str, **values: Any) -> ScheduleRow:
        with self.store.session() as s:
            row = s.get(ScheduleRow, name)
            if row is None:
                raise NotFoundError(f"schedule {name!r} not found")
            for k, v in values.items():
                setattr(row, k, v)
            row.updated_at = time.time()
            return row

    def count_skip(
        self, name: str, at: float, reason: str, *, missed: int = 0
    ) -> ScheduleRow | None:
        """A firing skipped (forbid), or ``missed`` firings missed, and why; None when the
        schedule was deleted meanwhile."""
        with self.store.session() as s:
            row = s.get(ScheduleRow, name)
            if row is None:
                return None
            if missed:
                row.missed_firings += missed
            else:
                row.skipped += 1
            row.last_skipped_at = at
            row.last_skip_reason = reason
            row.updated_at = time.time()
            return row

    def delete(self, name: str) -> None:
        with self.store.session() as s:
            row = s.get(ScheduleRow, name)
            if row is None:
                raise NotFoundError(f"schedule {name!r} not found")
            s.delete(row)

    def record_start(self, name: str, scheduled: float, uid: str) -> None:
        with self.store.session() as s:
            row = s.get(ScheduleRow, name)
            if row is None:
                return
            row.last_fired_at = scheduled
            row.last_run_uid = uid
            row.last_run_state = "running"
            row.runs += 1
            row.updated_at = time.time()

    def record_end(self, name: str, uid: str, state: str) -> None:
        """The run ``uid`` ended in ``state``; kept only if it is still the schedule's last run
        (an older run ending after a newer one started changes nothing)."""
        with self.store.session() as s:
            row = s.get(ScheduleRow, name)
            if row is None or row.last_run_uid != uid:
                return
            row.last_run_state = state
            row.updated_at = time.time()
