"""FramedResponse sends exactly what ``web.Response`` sends, over a real loopback socket."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from tickrun.functions.httpresponse import FramedResponse

_DATE = re.compile(rb"\r\nDate: [^\r]*")

Make = Callable[[type[web.Response]], web.Response]
# Serve one connection: the handler answers with make(cls); the raw bytes that came back.
Serve = Callable[[Make, type[web.Response], bytes], Awaitable[bytes]]

CASES: dict[str, tuple[bytes, Make]] = {
    "GET, text": (
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        lambda cls: cls(body=b"ok", headers={"Content-Type": "text/plain; charset=utf-8"}),
    ),
    "no content type": (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", lambda cls: cls(body=b"\x00\x01")),
    "empty body": (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", lambda cls: cls(body=b"")),
    "no body at all": (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", lambda cls: cls()),
    "a status and headers": (
        b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi",
        lambda cls: cls(body=b'{"a":1}', status=418, headers={"X-A": "1", "X-B": "2"}),
    ),
    "HEAD": (b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n", lambda cls: cls(body=b"ok")),
    "204": (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", lambda cls: cls(body=b"", status=204)),
    "304": (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", lambda cls: cls(status=304)),
    "client closes": (
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        lambda cls: cls(body=b"ok"),
    ),
    "HTTP/1.0": (b"GET / HTTP/1.0\r\n\r\n", lambda cls: cls(body=b"ok")),
    "HTTP/1.0 keep-alive": (
        b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        lambda cls: cls(body=b"ok"),
    ),
    "own Content-Length": (
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        lambda cls: cls(body=b"ok", headers={"Content-Length": "2"}),
    ),
    "own Server and Date": (
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        lambda cls: cls(body=b"ok", headers={"Server": "fn", "Date": "then"}),
    ),
    "forced close": (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", lambda cls: _closing(cls(body=b"ok"))),
    "a text body": (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", lambda cls: cls(text="héllo")),
    "a reason": (
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        lambda cls: cls(body=b"ok", status=299, reason="Fine"),
    ),
}


def _closing(resp: web.Response) -> web.Response:
    resp.force_close()
    return resp


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    runners: list[web.ServerRunner] = []

    async def one(make: Make, cls: type[web.Response], request: bytes) -> bytes:
        async def handler(_: web.BaseRequest) -> web.StreamResponse:
            return make(cls)

        runner = web.ServerRunner(web.Server(handler, access_log=None))
        runners.append(runner)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        await writer.drain()
        # One response, then whatever follows within a moment (nothing, or the close).
        data = b""
        while b"\r\n\r\n" not in data:
            data += await asyncio.wait_for(reader.read(65536), 5)
        try:
            while chunk := await asyncio.wait_for(reader.read(65536), 0.2):
                data += chunk
        except TimeoutError:
            pass
        writer.close()
        return _DATE.sub(b"\r\nDate: -", data)  # the header kept, its moment not

    yield one
    for runner in runners:
        await runner.cleanup()


@pytest.mark.parametrize("case", list(CASES))
async def test_the_bytes_on_the_wire_are_aiohttp_s(case: str, serve: Serve) -> None:
    request, make = CASES[case]
    made: list[web.Response] = []

    def recording(cls: type[web.Response]) -> web.Response:
        made.append(make(cls))
        return made[-1]

    expected = await serve(make, web.Response, request)
    got = await serve(recording, FramedResponse, request)
    assert got == expected
    assert got.startswith(b"HTTP/1.")
    # The cases aiohttp must answer itself go its way; the rest take the short path.
    assert getattr(made[-1], "_framed", None) is (case not in AIOHTTP_S)


AIOHTTP_S = {
    "no body at all",
    "HEAD",
    "204",
    "304",
    "HTTP/1.0",
    "HTTP/1.0 keep-alive",
    "own Content-Length",
}


async def test_the_short_path_answers_the_common_case_and_keeps_the_connection(
    serve: Serve,
) -> None:
    made: list[web.Response] = []

    def make(cls: type[web.Response]) -> web.Response:
        made.append(cls(body=b"ok", headers={"Content-Type": "text/plain"}))
        return made[-1]

    got = await serve(
        make, FramedResponse, b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    # Two pipelined requests, two complete answers on one connection: the framing holds.
    assert got.count(b"HTTP/1.1 200 OK\r\n") == 2
    assert got.count(b"Content-Length: 2\r\n") == 2
    assert got.endswith(b"\r\n\r\nok")
    assert b"Connection: close" not in got
    assert len(made) == 2 and all(isinstance(r, FramedResponse) and r._framed for r in made)
    # aiohttp's bookkeeping after the answer, as web.Response leaves it (its output size).
    plain: list[web.Response] = []

    def make_plain(cls: type[web.Response]) -> web.Response:
        plain.append(make(cls))
        return plain[-1]

    await serve(make_plain, web.Response, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    framed = made[:2]
    assert [r.body_length for r in framed] == [plain[0].body_length] * 2
    assert all(r.prepared and r.keep_alive for r in framed)


async def test_an_application_s_requests_take_aiohttp_s_path() -> None:
    # web.Request sends the application's on_response_prepare signal: aiohttp's path does.
    from aiohttp.test_utils import make_mocked_request

    resp = FramedResponse(body=b"ok")
    await resp.prepare(make_mocked_request("GET", "/"))
    assert resp.prepared and not resp._framed
