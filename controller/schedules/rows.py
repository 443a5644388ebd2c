"""The ``schedules`` table (migration ``0004``): one row per scheduled job, its policies and
what its last firings did."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import JSON, Boolean, Float, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from ..store.models import Base


def _now() -> float:
    return time.time()


class ScheduleRow(Base):
    __tablename__ = "schedules"
    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    cron: Mapped[str] = mapped_column(String(255))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    # The JobRequest without its uid (each firing gets a fresh one), as its JSON.
    job: Mapped[dict[str, Any]] = mapped_column(JSON)
    # forbid | allow | replace (Kubernetes CronJob's concurrencyPolicy).
    concurrency: Mapped[str] = mapped_column(String(16), default="forbid")
    # skip | run-once: what a firing the controller missed (it was down) becomes.
    missed: Mapped[str] = mapped_column(String(16), default="skip")
    starting_deadline_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    # The next firing the scheduler waits for (epoch seconds).
    next_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    # The scheduled time of the last firing that started a run, and the run.
    last_fired_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_run_uid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # running | completed | error | aborted, or "not-started" (the job could not start).
    last_run_state: Mapped[str | None] = mapped_column(String(16), nullable=True)
    runs: Mapped[int] = mapped_column(Integer, default=0)
    # Firings not run: skipped under forbid while one still ran; missed while the controller
    # was down (or its loop blocked) and not caught up. The last reason covers both.
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    missed_firings: Mapped[int] = mapped_column(Integer, default=0)
    last_skipped_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_skip_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[float] = mapped_column(Float, default=_now)
    updated_at: Mapped[float] = mapped_column(Float, default=_now)
