"""The controller's HTTP edge in-process (a real socket, the real app): the connection cap and its
eviction order, the head and keep-alive deadlines, malformed requests answered in JSON with one
short WARNING and no token, and bad input on the API answered 400/401, never 500."""

from __future__ import annotations

import asyncio
import json
import logging
import resource
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from tests.support.rawhttp import closed_by_server
from tickrun.controller.app import GUARD, create_app
from tickrun.controller.edge import connection_budget, make_runner
from tickrun.controller.settings import Settings
from tickrun.functions import httpserver
from tickrun.functions.httpserver import HardenedSite
from tickrun.functions.httpserver_guard import ConnectionGuard

TOKEN = "sekret-token-0123456789"
AUTH = f"Authorization: Bearer {TOKEN}\r\n".encode()


@dataclass(eq=False)
class FakeConn:
    idle: bool
    evicted: list[FakeConn] = field(default_factory=list)

    def between_requests(self) -> bool:
        return self.idle

    def evict(self) -> None:
        self.evicted.append(self)

    def stalled(self, now: float) -> bool:
        return False


async def test_guard_evicts_the_oldest_idle_connection_and_refuses_when_all_are_busy() -> None:
    guard = ConnectionGuard(3, header_timeout_s=1, keepalive_timeout_s=1)
    log: list[FakeConn] = []
    busy, idle_old, idle_new = FakeConn(False, log), FakeConn(True, log), FakeConn(True, log)
    for conn in (busy, idle_old, idle_new):
        assert guard.admit(conn)
    newcomer = FakeConn(False, log)
    assert guard.admit(newcomer) and log == [idle_old]  # the oldest idle one, not the busy one
    assert guard.admit(FakeConn(False, log)) and log == [idle_old, idle_new]
    assert not guard.admit(FakeConn(True, log))  # every slot serves a request: refused
    assert guard.open_count == 3
    guard.release(busy)
    assert guard.admit(FakeConn(True, log)) and guard.open_count == 3
    guard.close()


def test_connection_budget_follows_the_fd_limit() -> None:
    assert connection_budget(1000, 256) == 96  # two descriptors a connection, 64 kept back
    assert connection_budget(50, 100_000) == 50
    assert connection_budget(1000, resource.RLIM_INFINITY) == 1000
    assert connection_budget(1000, 10) == 8  # never below a usable minimum


@dataclass
class Edge:
    port: int
    app: web.Application

    async def open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)

    async def exchange(self, raw: bytes) -> tuple[int, dict[str, str], bytes]:
        reader, writer = await self.open()
        try:
            writer.write(raw)
            await writer.drain()
            return await read_response(reader)
        finally:
            writer.close()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


@pytest.fixture
async def edge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Edge]:
    # A fresh warning budget: earlier tests may have spent this second's.
    monkeypatch.setattr(httpserver, "_WARNINGS", httpserver._Budget(httpserver.WARNINGS_PER_S))
    settings = Settings(
        state_dir=tmp_path / "state",
        cache_dir=tmp_path / "cache",
        token=TOKEN,
        container_engine="podman",
        function_ports=False,
        header_timeout_s=0.5,
        keepalive_timeout_s=1.0,
        body_timeout_s=1.0,
        max_connections=8,
    )
    app = create_app(settings)
    runner = make_runner(app, app[GUARD])
    await runner.setup()
    site = HardenedSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield Edge(runner.addresses[0][1], app)
    finally:
        await runner.cleanup()


async def test_half_open_flood_does_not_lock_out_healthz_or_the_api(edge: Edge) -> None:
    flood = []
    for _ in range(30):  # far past the cap of 8
        reader, writer = await edge.open()
        writer.write(b"GET /healthz HT")  # a request line, never finished
        flood.append((reader, writer))
    await asyncio.sleep(0.05)
    status, _, body = await edge.exchange(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200 and json.loads(body)["status"] == "ok"
    status, _, _ = await edge.exchange(
        b"GET /api/functions HTTP/1.1\r\nHost: x\r\n" + AUTH + b"\r\n"
    )
    assert status == 200
    assert edge.app[GUARD].open_count <= 8
    evicted = [await closed_by_server(r, 0.2) for r, _ in flood[:20]]
    assert all(evicted)  # the oldest half-open ones made room
    for _, writer in flood:
        writer.close()


async def test_unfinished_head_and_idle_keep_alive_are_closed(edge: Edge) -> None:
    reader, writer = await edge.open()  # sends nothing at all: half-open from the start
    assert await closed_by_server(reader, 1.0)
    writer.close()

    reader, writer = await edge.open()
    for piece in (b"GET /hea", b"lthz HTTP/1.1\r\n", b"Host: x\r\n"):  # trickled, never done
        writer.write(piece)
        await asyncio.sleep(0.15)
    assert await closed_by_server(reader, 1.0)  # within the 0.5 s head deadline (+ slack)
    writer.close()

    reader, writer = await edge.open()
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await read_response(reader))[0] == 200
    assert not await closed_by_server(reader, 0.5)  # kept alive for a while…
    assert await closed_by_server(reader, 1.5)  # …then closed once idle past 1 s
    writer.close()


async def test_when_every_slot_serves_a_request_a_newcomer_gets_a_503(edge: Edge) -> None:
    head = b"POST /api/functions HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n" + AUTH + b"\r\n"
    busy = []
    for _ in range(8):  # the cap: each one mid-body, so none may be evicted
        reader, writer = await edge.open()
        writer.write(head + b'{"spec"')
        busy.append((reader, writer))
    await asyncio.sleep(0.1)
    reader, writer = await edge.open()
    status, headers, body = await read_response(reader)
    assert status == 503 and json.loads(body)["error"] == "too many open connections"
    assert headers["connection"] == "close" and await closed_by_server(reader, 1.0)
    writer.close()
    for r, w in busy:
        assert not r.at_eof()  # the requests being served were left alone
        w.close()


async def test_a_stalled_body_is_closed_a_slow_one_is_not(edge: Edge) -> None:
    head = b"POST /api/functions HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n" + AUTH + b"\r\n"
    reader, writer = await edge.open()
    writer.write(head + b'{"spec": ')  # then nothing
    assert await closed_by_server(reader, 3.0)  # the 1 s body timeout (swept each second)
    writer.close()

    reader, writer = await edge.open()
    writer.write(head)
    for _ in range(5):  # 2.5 s in all, never 1 s without a byte
        writer.write(b"        ")
        await asyncio.sleep(0.5)
    assert (await read_response(reader))[0] == 400  # answered (blank JSON), not cut off
    writer.close()


async def test_malformed_request_is_json_and_one_short_warning_without_the_token(
    edge: Edge, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    raws = [
        b"GET /api/functions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + TOKEN.encode()
        + b"\x00\r\n\r\n",
        b"GET /api/functions HTTP/1.1\nHost: x\n" + AUTH.replace(b"\r\n", b"\n") + b"X: \x7f\n\n",
        b"GET /api/functions HTTP/1.1\r\n" + AUTH + b"X: " + b"a" * 9000 + b"\r\n\r\n",
    ]
    for raw in raws:
        caplog.clear()
        status, headers, body = await edge.exchange(raw)
        assert status == 400
        payload = json.loads(body)
        assert payload["error"] == "BadRequest" and payload["request_id"] == headers["x-request-id"]
        assert TOKEN.encode() not in body and b"Traceback" not in body
        records = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(records) == 1 and records[0].levelno == logging.WARNING
        line = caplog.text
        assert TOKEN not in line and len(line) <= 1024 and "\n" not in line.rstrip("\n")


async def test_bad_input_on_the_api_is_400_or_401_never_500(edge: Edge) -> None:
    def req(method: str, target: str, *, body: bytes = b"", extra: bytes = AUTH) -> bytes:
        head = f"{method} {target} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
        return head.encode() + extra + b"\r\n" + body

    cases: list[tuple[bytes, int]] = [
        (req("GET", "/api/functions", extra=AUTH + AUTH), 401),  # duplicated
        (req("GET", "/api/functions", extra=b"Authorization: Bearer \xff\xfe\xc3\r\n"), 401),
        (req("GET", "/api/functions", extra=b"Authorization: Bearer \xc3\xa9t\xc3\xa9\r\n"), 401),
        (req("GET", "/api/functions/x/events?after=99999999999999999999999"), 400),
        (req("GET", "/api/functions/x/events?limit=-5"), 400),
        (req("GET", "/api/functions/x/logs?tail=1e99"), 400),
        (req("POST", "/api/functions", body=b"[" * 100_000 + b"]" * 100_000), 400),
        (req("POST", "/api/functions", body=b'{"spec": ' + b"9" * 10_000 + b"}"), 400),
        (req("POST", "/api/functions", body=b'{"spec": "\xff\xfe"}'), 400),
        (req("PUT", "/api/secrets/s", body=b'{"data": ' * 50_000 + b"}" * 50_000), 400),
        (
            b"POST /api/functions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            + AUTH
            + b"\r\n5\r\nhello\r\nzz\r\n",
            400,
        ),
    ]
    for raw, expected in cases:
        status, headers, body = await edge.exchange(raw)
        assert status == expected, (raw[:80], status, body)
        payload = json.loads(body)
        assert payload["error"] and payload["request_id"] == headers["x-request-id"]
