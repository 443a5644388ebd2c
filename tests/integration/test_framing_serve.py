"""The server frames responses itself: Nuclio's echo-headers function, which copies the request's
headers (``Content-Length``, ``Transfer-Encoding``, ``Connection``, ``X-Request-Id``…) into its
response, served by a real ``tickrun serve`` and spoken to over raw keep-alive sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support.processes import ServedFunction
from tests.support.rawhttp import RawResponse, read_response

EXAMPLE = Path(__file__).resolve().parents[2] / "functions" / "examples" / "echo_headers"
HOP_BY_HOP = ("transfer-encoding", "connection", "keep-alive", "upgrade", "te", "trailer")


@pytest.fixture(scope="module")
def served() -> Iterator[ServedFunction]:
    fn = ServedFunction(EXAMPLE).start()
    yield fn
    fn.terminate()


@pytest.fixture
async def conn(
    served: ServedFunction,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    yield reader, writer
    writer.close()


def _request(rid: str, body: bytes, *, chunked: bool = False, extra: str = "") -> bytes:
    head = f"POST /echo HTTP/1.1\r\nHost: fn\r\nX-Request-Id: {rid}\r\nConnection: keep-alive\r\n"
    head += "Keep-Alive: timeout=60\r\nTE: trailers\r\nProxy-Authorization: Basic eDp5\r\n" + extra
    if not chunked:
        return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    parts = [body[i : i + 65_536] for i in range(0, len(body), 65_536)]
    framed = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
    return (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + framed


def _check(resp: RawResponse, rid: str) -> None:
    assert resp.status == 201
    assert resp.body == b"response body"
    assert resp.values("Content-Length") == [str(len(b"response body"))]
    assert resp.values("X-Request-Id") == [rid]
    assert resp.values("h1") == ["v1"]
    assert resp.values("Content-Type") == ["text/plain; charset=utf-8"]
    for name in HOP_BY_HOP:
        assert resp.values(name) == [], name
    assert not any(k.lower().startswith("proxy-") for k, _ in resp.headers)


@pytest.mark.parametrize(
    ("size", "chunked"),
    [(0, False), (11, False), (5 << 20, False), (3 << 20, True), (7, True)],
    ids=["empty", "small", "5MiB", "chunked-3MiB", "chunked-small"],
)
async def test_keep_alive_survives_copied_framing_headers(
    conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], size: int, chunked: bool
) -> None:
    reader, writer = conn
    body = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    for n in range(3):  # the same connection, again and again
        rid = f"req-{size}-{chunked}-{n}"
        writer.write(_request(rid, body, chunked=chunked))
        await writer.drain()
        _check(await asyncio.wait_for(read_response(reader), 30), rid)


async def test_pipelined_requests_each_get_their_own_framed_answer(
    conn: tuple[asyncio.StreamReader, asyncio.StreamWriter],
) -> None:
    reader, writer = conn
    writer.write(
        _request("p1", b"a" * 1000)
        + _request("p2", b"b" * 70_000, chunked=True)
        + _request("p3", b"")
    )
    await writer.drain()
    for rid in ("p1", "p2", "p3"):
        _check(await asyncio.wait_for(read_response(reader), 30), rid)


async def test_one_request_id_even_when_the_request_sent_two(
    conn: tuple[asyncio.StreamReader, asyncio.StreamWriter],
) -> None:
    reader, writer = conn
    writer.write(_request("first", b"{}", extra="x-request-id: second\r\n"))
    await writer.drain()
    _check(await asyncio.wait_for(read_response(reader), 30), "first")


async def test_connection_close_from_the_client_still_closes(
    conn: tuple[asyncio.StreamReader, asyncio.StreamWriter],
) -> None:
    # The handler copies "Connection: close" into its answer; the server, not the header, acts.
    reader, writer = conn
    raw = b"GET / HTTP/1.1\r\nHost: fn\r\nX-Request-Id: c1\r\nConnection: close\r\n\r\n"
    writer.write(raw)
    await writer.drain()
    resp = await asyncio.wait_for(read_response(reader), 30)
    assert resp.status == 201 and resp.values("X-Request-Id") == ["c1"]
    assert resp.values("Content-Length") == ["13"]
    assert await asyncio.wait_for(reader.read(), 10) == b""  # closed after the answer
