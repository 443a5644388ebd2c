"""``/api/secrets``: put secrets in, list their names and keys; values never come back out.

A function's env names a secret key (Nuclio's form)::

    env:
      - name: EXCHANGE_KEY
        valueFrom: {secretKeyRef: {name: exchange, key: api-key}}

and ``PUT /api/secrets/exchange`` with ``{"data": {"api-key": "..."}}`` stores the value
(the values are never returned). Replicas get them at launch.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tickrun.functions.errors import NotFoundError, SpecError

from .api import SERVICE, read_json


class SecretRequest(BaseModel):
    """A secret's keys and values (the whole secret: keys not given are removed)."""

    model_config = ConfigDict(extra="forbid")

    data: dict[str, str] = Field(description="key → value")


async def put_secret(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    raw = await read_json(request)  # deep nesting and huge integers are a 400 there too
    try:
        body = SecretRequest.model_validate(raw)
    except ValidationError as exc:
        # The message names the field, never the values (they are secrets).
        raise SpecError('invalid secret request: send {"data": {key: value, ...}}') from exc
    keys = await asyncio.to_thread(request.app[SERVICE].secrets.set, name, body.data)
    return web.json_response({"name": name, "keys": keys})


async def list_secrets(request: web.Request) -> web.Response:
    found = await asyncio.to_thread(request.app[SERVICE].secrets.keys)
    return web.json_response({"secrets": [{"name": n, "keys": k} for n, k in found.items()]})


async def get_secret(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    found = await asyncio.to_thread(request.app[SERVICE].secrets.keys)
    if name not in found:
        raise NotFoundError(f"secret {name!r} not found")
    return web.json_response({"name": name, "keys": found[name]})


async def delete_secret(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    await asyncio.to_thread(request.app[SERVICE].secrets.delete, name)
    return web.json_response({"deleted": name})


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/secrets", list_secrets)
    r.add_get("/api/secrets/{name}", get_secret)
    r.add_put("/api/secrets/{name}", put_secret)
    r.add_delete("/api/secrets/{name}", delete_secret)


def openapi_paths(op: Any, json_body: Any) -> dict[str, Any]:
    """The OpenAPI description of these routes (``op``/``json_body`` are openapi.py's helpers)."""
    name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    keys = json_body(
        {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "keys": {"type": "array", "items": {"type": "string"}},
            },
        },
        "the secret's name and keys (never its values)",
    )
    listing = json_body(
        {"type": "object", "properties": {"secrets": {"type": "array", "items": {}}}},
        "every secret's name and keys",
    )
    return {
        "/api/secrets": {"get": op("list secrets (names and keys only)", listing)},
        "/api/secrets/{name}": {
            "get": op("a secret's keys", keys, 404, params=[name]),
            "put": op(
                "create or replace a secret",
                keys,
                400,
                params=[name],
                body=SecretRequest.model_json_schema(),
            ),
            "delete": op(
                "delete a secret", json_body({"type": "object"}, "deleted"), 404, params=[name]
            ),
        },
    }
