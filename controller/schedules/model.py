"""A scheduled job as the API takes it (validated at the edge) and as it shows it.

The job is a :class:`~tickrun.functions.runs.plugins.JobRequest` without its uid (each firing
gets a fresh one), checked with the JobRequest model itself. Its runner must run the job
outside the controller's process: ``subprocess`` (the default), ``container`` or
``kubernetes``.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tickrun.functions.errors import BadRequestError
from tickrun.functions.names import DNS_LABEL
from tickrun.functions.runs.plugins import JobRequest
from tickrun.functions.spec.loader import format_validation_error

from . import cron

if TYPE_CHECKING:  # rows is SQLAlchemy: `tickrun --help` must not pay for it
    from .rows import ScheduleRow

Concurrency = Literal["forbid", "allow", "replace"]
Missed = Literal["skip", "run-once"]
NAME = DNS_LABEL
RUNNERS = ("subprocess", "container", "kubernetes")
LABEL = "tickrun.schedule"
TIME_LABEL = "tickrun.scheduled-time"
TRIGGER_LABEL = "tickrun.schedule-trigger"  # cron | manual (run now)


class ScheduleRequest(BaseModel):
    """Create a schedule: ``POST /api/schedules``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="lowercase letters, digits and '-' (at most 63)")
    cron: str = Field(
        description="5 fields, 6 with seconds first (*/5 * * * * * = every 5 s), or @hourly…"
    )
    timezone: str = Field(default="UTC", description="IANA name the cron fields are read in")
    job: dict[str, Any] = Field(
        description="the JobRequest without uid: runner, target, params, inputs, "
        "hyperparams, hyper_strategy, selector, labels, …"
    )
    concurrency: Concurrency = Field(
        default="forbid",
        description="forbid: skip a firing while the previous run runs; replace: abort it "
        "and start the new one; allow: run both",
    )
    missed: Missed = Field(
        default="skip",
        description="firings missed while the controller was down: skip them, or run-once "
        "(one run for the latest, if within starting_deadline_s)",
    )
    starting_deadline_s: float | None = Field(
        default=None,
        gt=0,
        description="run-once: a missed firing older than this is skipped (default: no limit)",
    )
    paused: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME.match(value):
            raise ValueError("use lowercase letters, digits and '-' (at most 63)")
        return value


def parse_request(raw: Any) -> tuple[ScheduleRequest, JobRequest]:
    """The request and its job, checked; any problem is a 400 naming the field."""
    try:
        req = ScheduleRequest.model_validate(raw)
    except ValidationError as exc:
        message, fields = format_validation_error(exc)
        raise BadRequestError(
            message.replace("invalid function spec", "invalid schedule"), detail=fields
        ) from exc
    cron.check(req.cron, req.timezone)
    if req.starting_deadline_s is not None and req.missed != "run-once":
        raise BadRequestError("starting_deadline_s applies to missed: run-once only")
    if "uid" in req.job:
        raise BadRequestError("job.uid: each firing gets its own run uid; leave it out")
    job = dict(req.job)
    job.setdefault("runner", "subprocess")
    try:
        request = JobRequest.model_validate({**job, "uid": "template"})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise BadRequestError(f"invalid job: {where}: {first['msg']}") from exc
    if request.runner not in RUNNERS:
        raise BadRequestError(
            f"job.runner {request.runner!r}: a scheduled job runs outside the controller's "
            f"process; use one of {', '.join(RUNNERS)}"
        )
    return req, request


def template(request: JobRequest) -> dict[str, Any]:
    """What the row keeps of a job: everything but the uid."""
    return request.model_dump(mode="json", exclude={"uid"})


def firing_request(
    row: ScheduleRow, scheduled: float, *, manual: bool = False, uid: str | None = None
) -> JobRequest:
    """The job of one firing: a fresh uid, labelled with its schedule and scheduled time."""
    job = dict(row.job)
    labels = {
        **job.get("labels", {}),
        LABEL: row.name,
        TIME_LABEL: cron.iso(scheduled),
        TRIGGER_LABEL: "manual" if manual else "cron",
    }
    return JobRequest.model_validate(
        {
            **job,
            "uid": uid or uuid.uuid4().hex,
            "name": job.get("name") or row.name,
            "labels": labels,
        }
    )


def _t(ts: float | None) -> float | None:
    return round(ts, 3) if ts is not None else None


def schedule_json(row: ScheduleRow, active: list[str] | None = None) -> dict[str, Any]:
    return {
        "name": row.name,
        "cron": row.cron,
        "timezone": row.timezone,
        "job": row.job,
        "concurrency": row.concurrency,
        "missed": row.missed,
        "starting_deadline_s": row.starting_deadline_s,
        "paused": row.paused,
        "next_at": _t(row.next_at) if not row.paused else None,
        "next": cron.iso(row.next_at) if row.next_at is not None and not row.paused else None,
        "last_fired_at": _t(row.last_fired_at),
        "last_run_uid": row.last_run_uid,
        "last_run_state": row.last_run_state,
        "runs": row.runs,
        "skipped": row.skipped,
        "missed_firings": row.missed_firings,
        "last_skipped_at": _t(row.last_skipped_at),
        "last_skip_reason": row.last_skip_reason,
        "active_runs": list(active or []),
        "created_at": _t(row.created_at),
        "updated_at": _t(row.updated_at),
    }
