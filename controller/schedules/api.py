"""``/api/schedules…``: create, list, show, pause, resume, delete, run now (bearer token, as
the rest of the API)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..api import read_json
from .model import ScheduleRequest, parse_request, schedule_json
from .scheduler import Scheduler

SCHEDULER: web.AppKey[Scheduler] = web.AppKey("scheduler", Scheduler)


def _json(scheduler: Scheduler, name: str) -> dict[str, Any]:
    return schedule_json(scheduler.schedules.get(name), scheduler.active(name))


async def create_schedule(request: web.Request) -> web.Response:
    scheduler = request.app[SCHEDULER]
    req, job = parse_request(await read_json(request))
    row = scheduler.create(req, job)
    return web.json_response(schedule_json(row), status=201)


async def list_schedules(request: web.Request) -> web.Response:
    scheduler = request.app[SCHEDULER]
    rows = scheduler.schedules.list()
    return web.json_response(
        {"schedules": [schedule_json(r, scheduler.active(r.name)) for r in rows]}
    )


async def get_schedule(request: web.Request) -> web.Response:
    return web.json_response(_json(request.app[SCHEDULER], request.match_info["name"]))


async def delete_schedule(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    request.app[SCHEDULER].delete(name)
    return web.json_response({"deleted": name})


async def pause_schedule(request: web.Request) -> web.Response:
    scheduler = request.app[SCHEDULER]
    name = request.match_info["name"]
    scheduler.pause(name)
    return web.json_response(_json(scheduler, name))


async def resume_schedule(request: web.Request) -> web.Response:
    scheduler = request.app[SCHEDULER]
    name = request.match_info["name"]
    scheduler.resume(name)
    return web.json_response(_json(scheduler, name))


async def run_schedule(request: web.Request) -> web.Response:
    scheduler = request.app[SCHEDULER]
    name = request.match_info["name"]
    uid = await scheduler.run_now(name)
    return web.json_response({"run_uid": uid, "schedule": _json(scheduler, name)}, status=202)


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/schedules", list_schedules)
    r.add_post("/api/schedules", create_schedule)
    r.add_get("/api/schedules/{name}", get_schedule)
    r.add_delete("/api/schedules/{name}", delete_schedule)
    r.add_post("/api/schedules/{name}/pause", pause_schedule)
    r.add_post("/api/schedules/{name}/resume", resume_schedule)
    r.add_post("/api/schedules/{name}/run", run_schedule)


def openapi_paths(op: Any, json_body: Any) -> dict[str, Any]:
    """The OpenAPI description of these routes (``op``/``json_body`` are openapi.py's helpers)."""
    name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    schedule = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "cron": {"type": "string"},
            "timezone": {"type": "string"},
            "job": {"type": "object"},
            "concurrency": {"type": "string", "enum": ["forbid", "allow", "replace"]},
            "missed": {"type": "string", "enum": ["skip", "run-once"]},
            "starting_deadline_s": {"type": ["number", "null"]},
            "paused": {"type": "boolean"},
            "next_at": {"type": ["number", "null"], "description": "next firing, epoch s"},
            "last_fired_at": {"type": ["number", "null"]},
            "last_run_uid": {"type": ["string", "null"]},
            "last_run_state": {
                "type": ["string", "null"],
                "description": "running, completed, error, aborted or not-started",
            },
            "runs": {"type": "integer"},
            "skipped": {"type": "integer", "description": "firings skipped under forbid"},
            "missed_firings": {
                "type": "integer",
                "description": "firings missed while the controller was down",
            },
            "last_skip_reason": {"type": ["string", "null"]},
            "active_runs": {"type": "array", "items": {"type": "string"}},
        },
    }
    one = json_body(schedule, "the schedule")
    listing = json_body(
        {"type": "object", "properties": {"schedules": {"type": "array", "items": schedule}}},
        "every schedule",
    )
    started = json_body(
        {
            "type": "object",
            "properties": {"run_uid": {"type": "string"}, "schedule": schedule},
        },
        "the run started",
    )
    return {
        "/api/schedules": {
            "get": op("list scheduled jobs", listing),
            "post": op(
                "schedule a job (a JobRequest without uid, on a cron expression)",
                json_body(schedule, "created"),
                400,
                409,
                body=ScheduleRequest.model_json_schema(),
                ok_code="201",
            ),
        },
        "/api/schedules/{name}": {
            "get": op("a schedule, its next firing and last run", one, 404, params=[name]),
            "delete": op(
                "delete a schedule (running runs finish)",
                json_body({"type": "object"}, "deleted"),
                404,
                params=[name],
            ),
        },
        "/api/schedules/{name}/pause": {
            "post": op("stop firing until resumed", one, 404, params=[name])
        },
        "/api/schedules/{name}/resume": {
            "post": op("fire again from the next time on", one, 404, params=[name])
        },
        "/api/schedules/{name}/run": {
            "post": op(
                "run now (409 under forbid while a run runs)",
                started,
                404,
                409,
                params=[name],
                ok_code="202",
            )
        },
    }


def mount(app: web.Application, scheduler: Scheduler) -> None:
    """Routes now; the scheduler starts after the store opened and stops (draining its runs)
    before it closes: the last startup hook, a shutdown hook."""
    app[SCHEDULER] = scheduler
    add_routes(app)

    async def start(app: web.Application) -> None:
        await scheduler.start()

    async def stop(app: web.Application) -> None:
        await scheduler.stop()

    app.on_startup.append(start)
    app.on_shutdown.append(stop)
