"""The function pages' extra endpoints on the controller (API.md):

- ``GET /api/functions/{name}/metrics``: request rate, error rate, latency p50/p99 from the
  replicas' ``/metrics`` (:mod:`.metrics`), the autoscaler's lag reading, and each Kafka
  trigger's lag per partition (:mod:`.kafka_lag`; ``?kafka=0`` skips it).
- ``GET /api/functions/{name}/logs/follow?cursor=&wait=&tail=&replica=``: the log lines each
  replica wrote since ``cursor`` (an opaque string from the previous answer; none: the last
  ``tail`` lines). ``wait`` (seconds, ≤ 25) holds the request until a line arrives: a long poll,
  which a page loops on to follow the logs. A replica's log file is read from a byte offset; a
  cluster's pod logs are tailed and cut after the last line already sent.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import os
import time
from typing import Any

from aiohttp import web

from tickrun.functions.errors import BadRequestError, NotFoundError
from tickrun.functions.queryparams import int_param

from .. import api
from ..service import replica_ref
from .kafka_lag import partition_lag
from .metrics import MetricsBook

METRICS_KEY: web.AppKey[MetricsBook] = web.AppKey("tickrun_ui_metrics", MetricsBook)
MAX_WAIT_S = 25
POLL_S = 0.5
MAX_READ_BYTES = 1024 * 1024
MAX_CURSOR = 8192
CLUSTER_TAIL = 1000


async def function_metrics(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    fn = request.app[api.STORE].get_function(name)
    reconciler = request.app.get(api.RECONCILER)
    eps = reconciler.endpoints.get(name) if reconciler is not None else None
    endpoints = [(e.replica_id, e.url) for e in (eps.endpoints if eps else [])]
    body = await request.app[METRICS_KEY].summary(name, endpoints)
    reading = reconciler.lag.reading(name) if reconciler is not None else None
    body["lag"] = (
        None if reading is None else {"total": reading.lag, "partitions": reading.partitions}
    )
    if request.query.get("kafka", "1") not in ("0", "false"):
        body["kafka"] = await asyncio.to_thread(partition_lag, name, fn.spec)
    body["at"] = time.time()
    return web.json_response(body)


def _decode(raw: str | None) -> dict[str, Any]:
    if not raw:
        return {}
    if len(raw) > MAX_CURSOR:
        raise BadRequestError("cursor too long")
    try:
        data = json.loads(base64.urlsafe_b64decode(raw.encode("ascii") + b"=="))
    except (ValueError, binascii.Error, UnicodeEncodeError):
        raise BadRequestError("bad cursor: pass the one the previous answer gave") from None
    if not isinstance(data, dict):
        raise BadRequestError("bad cursor: pass the one the previous answer gave")
    return data


def _encode(cursor: dict[str, Any]) -> str:
    raw = json.dumps(cursor, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _file_lines(path: str, offset: int | None, tail: int) -> tuple[list[str], int]:
    """New complete lines of ``path`` after ``offset`` (None: its last ``tail`` lines), and the
    offset to continue from."""
    try:
        size = os.path.getsize(path)
    except OSError:
        return [], offset or 0
    if offset is None or offset > size:  # first look, or the file was truncated/replaced
        start = max(0, size - MAX_READ_BYTES)
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read(size - start)
        end = data.rfind(b"\n") + 1
        lines = data[:end].decode("utf-8", "replace").splitlines()
        if start > 0 and lines:
            lines = lines[1:]  # the first is cut
        return lines[-tail:], start + end
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(min(MAX_READ_BYTES, size - offset))
    end = data.rfind(b"\n") + 1
    if end == 0 and len(data) == MAX_READ_BYTES:  # one huge line: send what there is
        end = len(data)
    return data[:end].decode("utf-8", "replace").splitlines(), offset + end


def _digest(line: str) -> str:
    return hashlib.sha256(line.encode("utf-8", "replace")).hexdigest()[:16]


def _after(lines: list[str], last: str | None, tail: int) -> list[str]:
    if last is None:
        return lines[-tail:]
    for i in range(len(lines) - 1, -1, -1):
        if _digest(lines[i]) == last:
            return lines[i + 1 :]
    return lines  # the last line sent scrolled out of the window: all of it is new


async def _collect(
    request: web.Request, name: str, cursor: dict[str, Any], tail: int, only: str | None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    store = request.app[api.STORE]
    service = request.app[api.SERVICE]
    fn = store.get_function(name)
    out: list[dict[str, Any]] = []
    nxt: dict[str, Any] = {}
    cluster = service.clusters.get(fn.platform)
    if cluster is not None:
        states = {r.id: r.state for r in store.list_replicas(name)}
        for logs in await cluster.logs(name, CLUSTER_TAIL):
            if only and logs.pod != only:
                continue
            prev = cursor.get(logs.pod)
            lines = _after(logs.lines, prev if isinstance(prev, str) else None, tail)
            nxt[logs.pod] = _digest(logs.lines[-1]) if logs.lines else prev
            out.append({"replica": logs.pod, "state": states.get(logs.pod), "lines": lines})
        return out, nxt
    for rep in store.list_replicas(name):
        if only and rep.id != only:
            continue
        prev = cursor.get(rep.id)
        if rep.log_path:
            offset = prev if isinstance(prev, int) and prev >= 0 else None
            lines, pos = await asyncio.to_thread(_file_lines, rep.log_path, offset, tail)
            nxt[rep.id] = pos
        else:
            platform = service.platforms.get(rep.platform)
            got = await platform.logs(replica_ref(rep), CLUSTER_TAIL) if platform else []
            lines = _after(got, prev if isinstance(prev, str) else None, tail)
            nxt[rep.id] = _digest(got[-1]) if got else prev
        out.append({"replica": rep.id, "state": rep.state, "lines": lines})
    return out, nxt


async def follow_logs(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    q = request.query
    cursor = _decode(q.get("cursor"))
    tail = int_param(q, "tail", 200, lo=1, hi=10000) or 200
    wait = int_param(q, "wait", 0, lo=0, hi=MAX_WAIT_S) or 0
    only = q.get("replica") or None
    deadline = time.monotonic() + wait
    stopping = request.app[api.STOPPING]
    while True:
        replicas, nxt = await _collect(request, name, cursor, tail, only)
        if only and not replicas:
            raise NotFoundError(f"replica {only!r} of function {name!r} not found")
        fresh = any(r["lines"] for r in replicas)
        if fresh or not cursor or time.monotonic() >= deadline or stopping.is_set():
            return web.json_response({"replicas": replicas, "cursor": _encode(nxt)})
        cursor = {**cursor, **{k: v for k, v in nxt.items() if k not in cursor}}
        await asyncio.sleep(POLL_S)


def add_routes(app: web.Application) -> None:
    app[METRICS_KEY] = MetricsBook()
    app.router.add_get("/api/functions/{name}/metrics", function_metrics)
    app.router.add_get("/api/functions/{name}/logs/follow", follow_logs)


__all__ = ["add_routes", "follow_logs", "function_metrics"]
