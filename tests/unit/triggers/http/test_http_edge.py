"""The replica's HTTP edge over real loopback sockets: bodies the runtime refuses, responses the
server frames, and clients that are slow, idle or too many (an in-process worker)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.rawhttp import read_response
from tickrun.functions import httpserver
from tickrun.functions.processor.worker import Worker, WorkerConfig

HANDLERS = """
import asyncio


def echo(context, event):
    body = event.body
    return {"type": type(body).__name__, "size": len(body) if isinstance(body, bytes) else None}


def bad_headers(context, event):
    return context.Response(
        body="ok",
        headers={"X-Split": "a\\r\\nSet-Cookie: x=1", "X Bad": "v", "Content-Length": "999",
                 "Transfer-Encoding": "chunked", "X-Request-Id": "handler", "X-Good": "yes",
                 "content-type": "application/xml"},
        content_type="text/plain", status_code=200)


def bad_status(context, event):
    return context.Response(body="x", status_code=101)  # a final 1xx cannot be framed


async def slow(context, event):
    await asyncio.sleep(1.5)
    return "slow"
"""

MakeWorker = Callable[..., Awaitable[int]]


@pytest.fixture(autouse=True)
def fresh_warning_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    # The budget is per second and process-wide: earlier tests must not eat this test's lines.
    monkeypatch.setattr(httpserver, "_WARNINGS", httpserver._Budget(httpserver.WARNINGS_PER_S))


@pytest.fixture(scope="module")
def function_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("edge")
    (path / "edge_handlers.py").write_text(HANDLERS)
    return path


@pytest.fixture
async def make_worker(function_dir: Path) -> AsyncIterator[MakeWorker]:
    workers: list[Worker] = []

    async def _make(handler: str, **attributes: Any) -> int:
        trigger = {"kind": "http", "maxWorkers": 8, "attributes": attributes}
        spec = {
            "metadata": {"name": "edge"},
            "spec": {"handler": f"edge_handlers:{handler}", "triggers": {"http": trigger}},
        }
        w = Worker(WorkerConfig(function_dir=str(function_dir), spec=spec, port=0))
        await w.start()
        workers.append(w)
        return int(w.port)

    yield _make
    for w in workers:
        await w.stop()


async def _post(port: int, body: bytes, ctype: str = "application/json") -> tuple[int, Any, str]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"http://127.0.0.1:{port}/", data=body, headers={"Content-Type": ctype}) as resp,
    ):
        return resp.status, await resp.json(), resp.headers["X-Request-Id"]


async def _get_status(port: int) -> int:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/") as resp:
        return resp.status


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"[" * 5000 + b"]" * 5000, "nested too deeply"),
        (b'{"a":' * 3000 + b"1" + b"}" * 3000, "nested too deeply"),
        (b"[" * 100_000, "nested too deeply"),
        (b'{"n": ' + b"9" * 5000 + b"}", "number too large"),
        (b"-" + b"1" * 100_000, "number too large"),
    ],
)
async def test_json_that_cannot_be_decoded_safely_is_a_400(
    make_worker: MakeWorker, body: bytes, why: str
) -> None:
    port = await make_worker("echo")
    status, payload, rid = await _post(port, body)
    assert status == 400
    assert why in payload["error"] and payload["request_id"] == rid


@pytest.mark.parametrize(
    "body", [b'{"s": "\xff"}', b"\xc0\xaf{}", b"{not json", b'{"big": 123456789012345678901234567}']
)
async def test_other_json_bodies_reach_the_handler(make_worker: MakeWorker, body: bytes) -> None:
    port = await make_worker("echo")
    status, payload, _ = await _post(port, body)
    assert status == 200
    # Not JSON (invalid UTF-8 included) stays bytes, as in Nuclio; big-but-sane integers decode.
    assert payload["type"] == ("dict" if b"big" in body else "bytes")


async def test_unsendable_and_framing_headers_from_a_handler_are_dropped(
    make_worker: MakeWorker, caplog: pytest.LogCaptureFixture
) -> None:
    port = await make_worker("bad_headers")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for rid in ("one", "two"):  # keep-alive still framed correctly on the second request
        writer.write(f"GET / HTTP/1.1\r\nHost: x\r\nX-Request-Id: {rid}\r\n\r\n".encode())
        resp = await asyncio.wait_for(read_response(reader), 10)
        assert (resp.status, resp.body) == (200, b"ok")
        assert resp.values("X-Request-Id") == [rid]
        assert resp.values("Content-Length") == ["2"]
        assert resp.values("Content-Type") == ["text/plain; charset=utf-8"]
        assert resp.values("X-Good") == ["yes"]
        for gone in ("Set-Cookie", "X-Split", "Transfer-Encoding", "X Bad"):
            assert resp.values(gone) == []
    writer.close()
    dropped = [r for r in caplog.records if r.getMessage().startswith("dropped response headers")]
    assert dropped and getattr(dropped[0], "headers", None) == ["X-Split", "X Bad"]


async def test_an_unframeable_status_is_the_handlers_error(make_worker: MakeWorker) -> None:
    port = await make_worker("bad_status")
    status, payload, rid = await _post(port, b"", "text/plain")
    assert status == 500 and "101" in payload["error"] and payload["request_id"] == rid


async def test_connect_is_refused(make_worker: MakeWorker) -> None:
    port = await make_worker("echo")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
    resp = await asyncio.wait_for(read_response(reader), 10)
    assert resp.status == 405 and json.loads(resp.body)["request_id"]
    writer.close()


async def _closed_after(reader: asyncio.StreamReader, limit_s: float) -> float:
    start = time.monotonic()
    assert await asyncio.wait_for(reader.read(), limit_s) == b""
    return time.monotonic() - start


async def test_unfinished_headers_time_out_but_the_server_serves_on(
    make_worker: MakeWorker,
) -> None:
    port = await make_worker("echo", readHeaderTimeout="300ms", keepAliveTimeout="30s")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # and never the rest
    assert await _closed_after(reader, 5) < 2
    writer.close()
    status, payload, _ = await _post(port, b"{}")
    assert (status, payload["type"]) == (200, "dict")


async def test_a_kept_alive_connection_gets_a_fresh_header_timeout_per_request(
    make_worker: MakeWorker,
) -> None:
    port = await make_worker("echo", readHeaderTimeout="400ms", keepAliveTimeout="30s")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await asyncio.wait_for(read_response(reader), 5)).status == 200
    await asyncio.sleep(0.8)  # idle past the header timeout: still open (keep-alive rules)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")
    assert await _closed_after(reader, 5) < 2  # headers begun, never finished
    writer.close()


async def test_idle_keep_alive_is_closed(make_worker: MakeWorker) -> None:
    port = await make_worker("echo", keepAliveTimeout="500ms")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await asyncio.wait_for(read_response(reader), 5)).status == 200
    assert await _closed_after(reader, 5) < 2
    writer.close()


async def test_a_stalled_body_gets_408(make_worker: MakeWorker) -> None:
    port = await make_worker("echo", readTimeout="300ms")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly this")
    resp = await asyncio.wait_for(read_response(reader), 5)
    assert resp.status == 408 and json.loads(resp.body)["request_id"]
    assert await _closed_after(reader, 5) < 3.5  # after a short drain of what may still come
    writer.close()


async def test_idle_connections_make_room_at_the_connection_cap(make_worker: MakeWorker) -> None:
    port = await make_worker("echo", maxConnections=4, readHeaderTimeout="30s")
    idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(12)]
    await asyncio.sleep(0.1)
    status, _, _ = await _post(port, b"{}")  # evicts the oldest idle connection
    assert status == 200
    closed = 0
    for reader, writer in idle:
        with contextlib.suppress(TimeoutError):  # still open
            closed += await asyncio.wait_for(reader.read(), 0.2) == b""
        writer.close()
    assert closed >= 9  # 12 idle and one served: no more than 4 were ever open together


async def test_busy_connections_at_the_cap_refuse_newcomers_with_503(
    make_worker: MakeWorker,
) -> None:
    port = await make_worker("slow", maxConnections=2)
    busy = [asyncio.create_task(_get_status(port)) for _ in range(2)]
    await asyncio.sleep(0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    resp = await asyncio.wait_for(read_response(reader), 5)
    assert resp.status == 503 and resp.values("Retry-After") == ["1"]
    writer.close()
    assert await asyncio.gather(*busy) == [200, 200]


async def test_a_malformed_request_is_one_short_warning_without_credentials(
    make_worker: MakeWorker, caplog: pytest.LogCaptureFixture
) -> None:
    port = await make_worker("echo")
    caplog.set_level(logging.DEBUG)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    raw = b"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cr3t\r\nX-Bad: a\x01b\r\n\r\n"
    writer.write(raw)
    resp = await asyncio.wait_for(read_response(reader), 5)
    writer.close()
    assert resp.status == 400
    body = json.loads(resp.body)
    assert body["request_id"] == resp.values("X-Request-Id")[0] and body["error"]
    records = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(records) == 1 and records[0].getMessage() == "malformed request"
    text = str(vars(records[0]))
    assert "s3cr3t" not in text and "Authorization" not in text and len(text) < 1024
    assert records[0].exc_info is None


@pytest.mark.parametrize("coding", [b"gzip", b"deflate"])
async def test_a_body_its_encoding_cannot_decode_is_a_400_mid_request(
    make_worker: MakeWorker, caplog: pytest.LogCaptureFixture, coding: bytes
) -> None:
    port = await make_worker("echo")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\nContent-Encoding: " + coding
    writer.write(head + b"\r\n\r\n")
    await writer.drain()
    await asyncio.sleep(0.1)  # the handler is already reading when the garbage arrives
    writer.write(b"not-gzipped!")
    resp = await asyncio.wait_for(read_response(reader), 5)
    assert resp.status == 400 and "cannot be read" in json.loads(resp.body)["error"]
    assert await _closed_after(reader, 5) < 3.5
    writer.close()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_client_leaving_mid_body_logs_no_error(
    make_worker: MakeWorker, caplog: pytest.LogCaptureFixture
) -> None:
    port = await make_worker("echo")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\npart")
    await writer.drain()
    await asyncio.sleep(0.1)
    writer.transport.abort()
    await asyncio.sleep(0.2)
    status, _, _ = await _post(port, b"{}")  # and the worker serves on
    assert status == 200
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_chunk_garbage_mid_body_is_a_400_at_once(
    make_worker: MakeWorker, caplog: pytest.LogCaptureFixture
) -> None:
    port = await make_worker("echo", readTimeout="30s")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel")
    await writer.drain()
    await asyncio.sleep(0.1)
    start = time.monotonic()
    writer.write(b"loXX\r\n0\r\n\r\n")  # the chunk is longer than its size said
    resp = await asyncio.wait_for(read_response(reader), 5)
    assert resp.status == 400 and time.monotonic() - start < 2  # not after the read timeout
    assert "cannot be read" in json.loads(resp.body)["error"]
    writer.close()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
