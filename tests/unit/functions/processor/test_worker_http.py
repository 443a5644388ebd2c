"""The processor's worker serving the HTTP trigger, over real loopback HTTP (in-process)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tickrun.functions.processor.worker import Worker, WorkerConfig

FORMS = Path(__file__).resolve().parents[3] / "fixtures" / "functions" / "forms"

MakeWorker = Callable[..., Awaitable[str]]


def spec_for(
    handler: str, *, triggers: dict[str, Any] | None = None, **spec: Any
) -> dict[str, Any]:
    return {
        "metadata": {"name": "forms"},
        "spec": {
            "handler": f"forms:{handler}",
            "triggers": triggers or {"http": {"kind": "http", "maxWorkers": 4}},
            **spec,
        },
    }


@pytest.fixture
async def make_worker() -> AsyncIterator[MakeWorker]:
    workers: list[Worker] = []

    async def _make(handler: str, **kwargs: Any) -> str:
        w = Worker(WorkerConfig(function_dir=str(FORMS), spec=spec_for(handler, **kwargs), port=0))
        await w.start()
        workers.append(w)
        return f"http://127.0.0.1:{w.port}"

    yield _make
    for w in workers:
        await w.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.mark.parametrize(
    ("handler", "status", "ctype", "body"),
    [
        ("text", 200, "text/plain; charset=utf-8", b"hello"),
        ("raw_bytes", 200, "text/plain; charset=utf-8", b"\x00\x01binary"),
        ("as_dict", 200, "application/json", b'{"a":1,"nested":{"b":[1,2]}}'),
        ("as_list", 200, "application/json", b'[1,"two",3.5]'),
        ("tuple_text", 201, "text/plain; charset=utf-8", b"created"),
        ("tuple_json", 202, "application/json", b'{"accepted":true}'),
        ("response_obj", 418, "application/json", b'{"teapot":true}'),
        ("response_csv", 200, "text/csv; charset=utf-8", b"a,b\n1,2\n"),
        ("with_status", 409, "text/plain; charset=utf-8", b"already exists"),
        ("stream", 200, "text/plain; charset=utf-8", b"chunk0;chunk1;chunk2;"),
    ],
)
async def test_every_nuclio_return_form(
    make_worker: MakeWorker,
    http: aiohttp.ClientSession,
    handler: str,
    status: int,
    ctype: str,
    body: bytes,
) -> None:
    url = await make_worker(handler)
    async with http.post(url + "/", data=b"x") as resp:
        assert resp.status == status
        assert resp.headers["Content-Type"] == ctype
        assert await resp.read() == body
        assert len(resp.headers["X-Request-Id"]) >= 16


async def test_response_headers_pass_through(
    make_worker: MakeWorker, http: aiohttp.ClientSession
) -> None:
    url = await make_worker("response_obj")
    async with http.get(url) as resp:
        assert resp.headers["X-Custom"] == "yes"


async def test_async_handler(make_worker: MakeWorker, http: aiohttp.ClientSession) -> None:
    url = await make_worker("async_dict")
    async with http.get(url) as resp:
        assert resp.status == 200
        assert await resp.json() == {"async": True, "worker": 0}


async def test_event_fields_and_json_body(
    make_worker: MakeWorker, http: aiohttp.ClientSession
) -> None:
    url = await make_worker("event_fields")
    headers = {"X-Test": "t1", "X-Request-Id": "req-123"}
    async with http.put(url + "/a/b?x=1&y=two", json={"k": [1, 2]}, headers=headers) as resp:
        got = await resp.json()
        assert resp.headers["X-Request-Id"] == "req-123"
    assert got["body"] == {"k": [1, 2]}  # JSON decoded as nuclio-sdk does
    assert got["content_type"].startswith("application/json")
    assert got["method"] == "PUT"
    assert got["path"] == "/a/b"
    assert got["fields"] == {"x": "1", "y": "two"}
    assert got["url"].endswith("/a/b?x=1&y=two")
    assert got["id"] == "req-123"
    assert got["has_timestamp"] is True
    assert got["trigger"] == ["http", "http"]
    assert got["header"] == "t1"
    assert got["size"] == len(b'{"k": [1, 2]}')


async def test_invalid_json_body_stays_bytes(
    make_worker: MakeWorker, http: aiohttp.ClientSession
) -> None:
    url = await make_worker("event_fields")
    async with http.post(url, data=b"{not json", headers={"Content-Type": "application/json"}) as r:
        assert r.status == 200
        assert (await r.json())["body"] == {"bytes": 9}


async def test_unsafe_request_id_is_replaced(
    make_worker: MakeWorker, http: aiohttp.ClientSession
) -> None:
    url = await make_worker("text")
    async with http.get(url, headers={"X-Request-Id": "bad id\twith spaces"}) as resp:
        assert resp.headers["X-Request-Id"] != "bad id\twith spaces"


async def test_init_context_runs_once_and_user_data_persists(
    make_worker: MakeWorker, http: aiohttp.ClientSession
) -> None:
    url = await make_worker("user_data")
    for _ in range(3):
        async with http.get(url) as resp:
            assert (await resp.json())["init_calls"] >= 1
    async with http.get(url) as resp:
        first = (await resp.json())["init_calls"]
    async with http.get(url) as resp:
        assert (await resp.json())["init_calls"] == first


async def test_handler_error_is_500_without_traceback_or_message(
    make_worker: MakeWorker, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    url = await make_worker("fails")
    async with http.get(url) as resp:
        assert resp.status == 500
        body = await resp.json()
        text = json.dumps(body)
    assert set(body) == {"error", "request_id"}
    assert body["request_id"] == resp.headers["X-Request-Id"]
    assert "ValueError" in body["error"]
    assert "hunter2" not in text and "Traceback" not in text
    # ...but the operator's log has the traceback, tied to the request id.
    logged = [r for r in caplog.records if r.getMessage() == "handler raised"]
    assert logged and logged[0].exc_info is not None
    assert getattr(logged[0], "event_id", None) == body["request_id"]
    # The worker keeps serving.
    async with http.get(url) as resp:
        assert resp.status == 500


async def test_invalid_status_from_handler_is_500(
    make_worker: MakeWorker, http: aiohttp.ClientSession
) -> None:
    url = await make_worker("bad_status")
    async with http.get(url) as resp:
        assert resp.status == 500


async def test_body_over_limit_is_413(make_worker: MakeWorker, http: aiohttp.ClientSession) -> None:
    triggers = {"http": {"kind": "http", "attributes": {"maxRequestBodySize": 1024}}}
    url = await make_worker("event_fields", triggers=triggers)
    async with http.post(url, data=b"x" * 1024) as resp:
        assert resp.status == 200
    async with http.post(url, data=b"x" * 1025) as resp:
        assert resp.status == 413
        assert "limit" in (await resp.json())["error"]

    async def chunks() -> AsyncIterator[
        bytes
    ]:  # no Content-Length: the limit applies while streaming
        for _ in range(8):
            yield b"y" * 512

    async with http.post(url, data=chunks()) as resp:
        assert resp.status == 413


async def test_large_body_streamed(make_worker: MakeWorker, http: aiohttp.ClientSession) -> None:
    triggers = {"http": {"kind": "http", "attributes": {"maxRequestBodySize": 64 * 1024 * 1024}}}
    url = await make_worker("event_fields", triggers=triggers)
    payload = b"z" * (20 * 1024 * 1024)
    async with http.post(url, data=payload) as resp:
        assert resp.status == 200
        assert (await resp.json())["body"] == {"bytes": len(payload)}


async def test_event_timeout_is_504_and_worker_keeps_serving(
    make_worker: MakeWorker, http: aiohttp.ClientSession
) -> None:
    for handler in ("slow_sync", "slow_async"):
        url = await make_worker(handler, eventTimeout="300ms")
        async with http.get(url + "?s=2") as resp:
            assert resp.status == 504
            assert "timeout" in (await resp.json())["error"]
        async with http.get(url + "?s=0.01") as resp:
            assert resp.status == 200


async def test_no_free_worker_is_503(make_worker: MakeWorker, http: aiohttp.ClientSession) -> None:
    triggers = {
        "http": {"kind": "http", "maxWorkers": 1, "workerAvailabilityTimeoutMilliseconds": 100}
    }
    url = await make_worker("slow_async", triggers=triggers)
    slow = asyncio.create_task(http.get(url + "?s=1"))
    await asyncio.sleep(0.2)
    async with http.get(url + "?s=0") as resp:
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "1"
    first = await slow
    assert first.status == 200
    first.release()


async def test_malformed_http_is_4xx_and_server_survives(
    make_worker: MakeWorker, http: aiohttp.ClientSession
) -> None:
    url = await make_worker("text")
    port = int(url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GARBAGE /\x00 HTTP/9.9\r\nBad Header\r\n\r\n")
    await writer.drain()
    line = await reader.readline()
    writer.close()
    assert line.startswith(b"HTTP/1.") and b" 400 " in line
    async with http.get(url) as resp:
        assert resp.status == 200


async def test_keep_alive_reuses_connection(make_worker: MakeWorker) -> None:
    url = await make_worker("text")
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(5):
            async with session.get(url) as resp:
                assert resp.headers.get("Connection", "").lower() != "close"
                await resp.read()
        # One pooled connection served all five requests.
        assert len(connector._conns) == 1  # noqa: SLF001


async def test_control_endpoints(make_worker: MakeWorker, http: aiohttp.ClientSession) -> None:
    url = await make_worker("text")
    async with http.get(url) as resp:
        await resp.read()
    async with http.get(url + "/healthz", headers={"X-Request-Id": "probe-1"}) as resp:
        assert resp.status == 200
        assert resp.headers["X-Request-Id"] == "probe-1"
    async with http.get(url + "/readyz") as resp:
        assert resp.status == 200
        body = await resp.json()
        assert body["ready"] is True and body["status"] == "ready"
        assert resp.headers["X-Request-Id"], "a fresh id when the caller sent none"
    async with http.get(url + "/metrics", headers={"X-Request-Id": "not <safe>"}) as resp:
        assert resp.headers["X-Request-Id"] not in ("", "not <safe>")
    async with http.get(url + "/metrics") as resp:
        text = await resp.text()
    ok = re.search(
        r'tickrun_events_total\{function="forms",kind="http",outcome="ok",trigger="http"\} (\S+)',
        text,
    )
    assert ok and float(ok.group(1)) >= 1
    assert "tickrun_event_duration_seconds_bucket" in text
    assert "tickrun_events_in_flight" in text


async def test_readyz_says_why_it_is_not_ready(http: aiohttp.ClientSession) -> None:
    w = Worker(WorkerConfig(function_dir=str(FORMS), spec=spec_for("text"), port=0))
    await w.start()
    try:
        w._draining = True  # noqa: SLF001 - the state stop() enters, while still serving
        async with http.get(f"http://127.0.0.1:{w.port}/readyz") as resp:
            assert resp.status == 503
            body = await resp.json()
        assert body == {"ready": False, "status": "draining", "reason": "draining"}
    finally:
        w._draining = False  # noqa: SLF001
        await w.stop()


async def test_nuclio_logger_fields_reach_the_log(
    make_worker: MakeWorker, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    url = await make_worker("log_with")
    async with http.get(url) as resp:
        assert await resp.text() == "logged"
    rec = next(r for r in caplog.records if r.getMessage() == "handled")
    assert getattr(rec, "with") == {"symbol": "BTCUSDT", "price": 42000.5}


async def test_keep_alive_timeout_closes_idle_connections(make_worker: MakeWorker) -> None:
    url = await make_worker(
        "text",
        triggers={"http": {"kind": "http", "attributes": {"keepAliveTimeout": "300ms"}}},
    )
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n")[0]
    length = int(re.search(rb"Content-Length: (\d+)", head, re.I).group(1))  # type: ignore[union-attr]
    await reader.readexactly(length)
    loop = asyncio.get_running_loop()
    idle_from = loop.time()
    # The server closes the idle connection after keepAliveTimeout (aiohttp's default is 75 s).
    async with asyncio.timeout(5):
        assert await reader.read() == b""
    assert loop.time() - idle_from < 3
    writer.close()
