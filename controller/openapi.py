"""The controller's OpenAPI 3.1 description, served at ``/api/openapi.json``.

Hand-kept paths (a test validates the document and checks every route is described) with
request bodies from the pydantic models the handlers validate with.
"""

from __future__ import annotations

from typing import Any

from tickrun import __version__
from tickrun.functions.settings import PLATFORMS

from . import secrets_api
from .api import DeployRequest, ScaleRequest
from .schedules import api as schedules_api
from .ui.openapi import openapi_paths as ui_openapi_paths

OPENAPI_PATH = "/api/openapi.json"

_ERROR = {"$ref": "#/components/schemas/Error"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "invalid request or spec",
        401: "missing or wrong bearer token",
        404: "not found",
        409: "conflicts with the current state",
        429: "too many wrong tokens from this address: retry after Retry-After seconds",
        502: "no replica answered",
        503: "no ready replica",
    }
    return {str(c): _json(_ERROR, text[c]) for c in codes}


_OBJ: dict[str, Any] = {"type": "object"}
_INVOKE_METHODS = ("get", "post", "put", "patch", "delete")
_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}


def _op(
    summary: str,
    ok: dict[str, Any],
    *errors: int,
    params: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
    ok_code: str = "200",
) -> dict[str, Any]:
    # 429: a client address that sent too many wrong tokens is refused for a while (auth.py).
    responses = {ok_code: ok, **_errors(401, 429, *errors)}
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if params:
        op["parameters"] = params
    if body:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return op


def _registry_paths() -> dict[str, Any]:
    """The model registry's routes, mounted with the runs API when tracking is installed."""
    try:
        from tickrun.functions.runs import registry_api
    except ImportError:
        return {}
    return registry_api.openapi_paths(_op, _json)


def document() -> dict[str, Any]:
    deploy = {"$ref": "#/components/schemas/DeployRequest"}
    accepted = _json(
        {
            "type": "object",
            "properties": {
                "function": {"$ref": "#/components/schemas/Function"},
                "build": {"$ref": "#/components/schemas/Build"},
                "warnings": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "spec fields the platform accepts without acting on them",
                },
            },
        },
        "accepted: the build runs",
    )
    fn = _json({"$ref": "#/components/schemas/Function"}, "the function")

    def qint(name: str, text: str) -> dict[str, Any]:
        return {
            "name": name,
            "in": "query",
            "required": False,
            "description": text,
            "schema": {"type": "integer"},
        }

    paths: dict[str, Any] = {
        "/healthz": {
            "get": {
                "summary": "liveness (no token needed)",
                "security": [],
                "responses": {"200": _json(_OBJ, "alive")},
            }
        },
        OPENAPI_PATH: {
            "get": {
                "summary": "this document",
                "security": [],
                "responses": {"200": _json(_OBJ, "OpenAPI document")},
            }
        },
        "/api/version": {
            "get": _op(
                "the controller's version and platforms",
                _json(
                    {
                        "type": "object",
                        "required": ["version", "platforms", "default_platform"],
                        "properties": {
                            "version": {"type": "string"},
                            "platforms": {
                                "type": "array",
                                "items": {"type": "string", "enum": list(PLATFORMS)},
                            },
                            "default_platform": {"type": "string", "enum": list(PLATFORMS)},
                            "isolation": {
                                "type": "object",
                                "description": "per platform: how replicas are kept from the "
                                "controller's secrets (mechanism: bubblewrap | container | none)",
                            },
                        },
                    },
                    "version",
                ),
            )
        },
        "/api/functions": {
            "get": _op(
                "list functions",
                _json(
                    {
                        "type": "object",
                        "properties": {
                            "functions": {
                                "type": "array",
                                "items": {"$ref": "#/components/schemas/Function"},
                            }
                        },
                    },
                    "list",
                ),
            ),
            "post": _op(
                "create or update a function (build and deploy)",
                accepted,
                400,
                409,
                body=deploy,
                ok_code="202",
            ),
        },
        "/api/functions/{name}": {
            "get": _op("get a function", fn, 404, params=[_NAME]),
            "put": _op(
                "update a function; without code the stored code is kept",
                accepted,
                400,
                404,
                409,
                params=[_NAME],
                body=deploy,
                ok_code="202",
            ),
            "delete": _op(
                "delete a function and stop all its replicas",
                _json(_OBJ, "deleted"),
                404,
                params=[_NAME],
            ),
        },
        "/api/functions/{name}/scale": {
            "put": _op(
                "set a fixed replica count (replicas; 0 stops the function) or autoscaled bounds "
                "(minReplicas and maxReplicas): no build and no new version, running replicas "
                "are not restarted; records a scale event",
                _json(
                    {
                        "type": "object",
                        "properties": {
                            "function": {"$ref": "#/components/schemas/Function"},
                            "scale": {
                                "type": "object",
                                "description": "the spec's replica fields before and after",
                                "properties": {"from": _OBJ, "to": _OBJ},
                            },
                        },
                    },
                    "scaled",
                ),
                400,
                404,
                409,
                params=[_NAME],
                body={"$ref": "#/components/schemas/ScaleRequest"},
            )
        },
        "/api/functions/{name}/events": {
            "get": _op(
                "events/history of a function",
                _json(_OBJ, "events"),
                400,
                404,
                params=[
                    _NAME,
                    qint("after", "only events with a larger id"),
                    qint("limit", "at most this many"),
                ],
            )
        },
        "/api/functions/{name}/logs": {
            "get": _op(
                "logs of each replica",
                _json(_OBJ, "log lines per replica"),
                400,
                404,
                params=[
                    _NAME,
                    qint("tail", "last N lines"),
                    {
                        "name": "replica",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string"},
                    },
                ],
            )
        },
        "/api/functions/{name}/builds": {
            "get": _op("builds of a function", _json(_OBJ, "builds"), 404, params=[_NAME])
        },
        "/api/functions/{name}/export": {
            "get": _op(
                "the function's spec as function.yaml content",
                _json(_OBJ, "spec"),
                404,
                params=[_NAME],
            )
        },
        "/api/builds/{id}": {
            "get": _op(
                "a build",
                _json({"$ref": "#/components/schemas/Build"}, "build"),
                404,
                params=[
                    {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
            )
        },
        "/api/builds/{id}/log": {
            "get": _op(
                "a build's log; follow=1 streams until the build ends",
                {
                    "description": "log text",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                404,
                params=[
                    {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}},
                    {
                        "name": "follow",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "enum": ["0", "1", "true", "false"]},
                    },
                ],
            )
        },
        "/fn/{name}": {
            m: _op(
                "invoke the function at its root path through the gateway",
                {"description": "the function's own response"},
                404,
                502,
                503,
                params=[_NAME],
            )
            for m in _INVOKE_METHODS
        },
        "/fn/{name}/{path}": {
            m: _op(
                "invoke the function through the gateway (balanced over ready replicas)",
                {"description": "the function's own response"},
                404,
                502,
                503,
                params=[
                    _NAME,
                    {"name": "path", "in": "path", "required": True, "schema": {"type": "string"}},
                ],
            )
            for m in _INVOKE_METHODS
        },
    }
    paths.update(secrets_api.openapi_paths(_op, _json))
    paths.update(schedules_api.openapi_paths(_op, _json))
    paths.update(_registry_paths())
    paths.update(ui_openapi_paths(_op, _json))
    schemas: dict[str, Any] = {
        "Error": {
            "type": "object",
            "required": ["error", "detail"],
            "properties": {
                "error": {"type": "string"},
                "detail": {"type": "string"},
                "fields": {"type": "array", "items": {"type": "object"}},
                # Also in the X-Request-Id header of every answer: quote it when reporting.
                "request_id": {"type": "string"},
            },
        },
        "DeployRequest": DeployRequest.model_json_schema(),
        "ScaleRequest": ScaleRequest.model_json_schema(by_alias=True),
        "Replica": {
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "state": {"type": "string", "enum": ["starting", "ready", "failed"]},
                "port": {"type": "integer"},
                "pid": {"type": ["integer", "null"]},
                "container": {"type": ["string", "null"]},
                "restarts": {"type": "integer"},
                "exit_code": {"type": ["integer", "null"]},
                "exit": {
                    "description": "why the replica last stopped: its exit code by name "
                    "(ok, failure, restart, config, signal N) and, when the processor said, "
                    "a reason (e.g. handler-load-error) with a one-line detail",
                    "type": ["object", "null"],
                    "properties": {
                        "code": {"type": ["integer", "null"]},
                        "name": {"type": "string"},
                        "reason": {"type": "string"},
                        "detail": {"type": "string"},
                    },
                },
                "not_ready": {
                    "description": "a starting replica's /readyz reason, e.g. "
                    "'triggers-not-ready: waiting for trigger(s): ticks'",
                    "type": ["string", "null"],
                },
            },
        },
        "Build": {
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "state": {"type": "string", "enum": ["running", "succeeded", "failed", "aborted"]},
                "cached": {"type": "boolean"},
                "duration_s": {"type": ["number", "null"]},
            },
        },
        "Function": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "platform": {"type": "string"},
                "state": {
                    "type": "string",
                    "enum": ["building", "deploying", "ready", "error", "deleting"],
                },
                "url": {"type": "string"},
                "port": {"type": ["integer", "null"]},
                "port_host": {"type": ["string", "null"]},
                "version": {"type": "integer"},
                "replicas": {
                    "type": "object",
                    "properties": {
                        "desired": {"type": "integer"},
                        "min": {"type": "integer"},
                        "max": {"type": "integer"},
                        "ready": {"type": "integer"},
                        "items": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/Replica"},
                        },
                    },
                },
                "scale": {
                    "type": ["object", "null"],
                    "description": "the autoscaler's last count, why, and the Kafka lag it read",
                    "properties": {
                        "desired": {"type": "integer"},
                        "reason": {"type": "string"},
                        "lag": {"type": ["integer", "null"]},
                        "partitions": {"type": ["integer", "null"]},
                    },
                },
                "spec": {"type": "object"},
            },
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "tickrun controller",
            "version": __version__,
            "description": "Deploy, scale and invoke tickrun functions.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }
