"""The /fn/ gateway's lean client against scripted replicas (raw asyncio servers that answer
exact bytes), so each framing, keep-alive reuse, the resend on a connection closed while idle,
interim 1xx answers and refused connections are seen byte for byte."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from tickrun.controller.upstream import ConnectFailed, Upstream, UpstreamBroken

Answer = Callable[[bytes, int], bytes | None]  # (request head, n-th request on the connection)


class Replica:
    """Answers each request head with ``answer(head, n)``; None closes the connection."""

    def __init__(self, answer: Answer, close_after: bool = False) -> None:
        self.answer = answer
        self.close_after = close_after
        self.connections = 0
        self.heads: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        n = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        await reader.readexactly(int(line.split(b":")[1]))
                self.heads.append(head)
                out = self.answer(head, n)
                n += 1
                if out is None:
                    break
                writer.write(out)
                await writer.drain()
                if self.close_after or b"connection: close" in out.lower():
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    @property
    def addr(self) -> tuple[str, int]:
        assert self.server is not None
        return "127.0.0.1", self.server.sockets[0].getsockname()[1]


Serve = Callable[..., Awaitable[Replica]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[asyncio.Server] = []

    async def start(answer: Answer, close_after: bool = False) -> Replica:
        replica = Replica(answer, close_after)
        replica.server = await asyncio.start_server(replica._serve, "127.0.0.1", 0)
        servers.append(replica.server)
        return replica

    yield start
    for server in servers:
        server.close()


def head(method: str = "GET") -> bytes:
    return f"{method} /x?q=1 HTTP/1.1\r\nHost: r\r\nX-A: b\r\n\r\n".encode()


def ok(body: bytes, extra: str = "") -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


async def test_small_bodies_come_whole_and_the_connection_is_reused(serve: Serve) -> None:
    replica = await serve(lambda h, n: ok(f"answer {n}".encode(), "X-Seen: 1\r\n"))
    up = Upstream()
    for n in range(3):
        reply, conn = await up.exchange(replica.addr, head(), None, head_request=False)
        assert (reply.status, reply.reason, reply.body) == (200, "OK", f"answer {n}".encode())
        assert reply.headers.getall("X-Seen") == ["1"]
        up.release(replica.addr, conn)
    assert replica.connections == 1
    assert replica.heads[0] == head()
    up.close()


async def test_chunked_close_delimited_and_large_bodies_stream(serve: Serve) -> None:
    big = bytes(range(256)) * 8192  # 2 MiB: over the whole-body limit
    chunked = (
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    answers = [chunked, ok(big), b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil close"]
    replica = await serve(lambda h, n: answers[n] if n < len(answers) else None)
    up = Upstream()
    got = []
    for _ in answers:
        reply, conn = await up.exchange(replica.addr, head(), None, head_request=False)
        assert reply.body is None
        got.append(
            (reply.status, reply.length, b"".join([c async for c in up.stream(replica.addr, conn)]))
        )
    assert got == [(201, None, b"hello world"), (200, len(big), big), (200, None, b"until close")]
    # chunked and sized bodies kept the connection; the close-delimited one ended it
    assert replica.connections == 1
    reply, conn = await up.exchange(replica.addr, head(), None, head_request=False)
    assert replica.connections == 2  # a fresh connection: the last one was not pooled
    up.close()


async def test_head_204_and_interim_answers_have_no_body(serve: Serve) -> None:
    def answer(h: bytes, n: int) -> bytes:
        if h.startswith(b"HEAD"):
            return b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"
        if n == 1:
            return b"HTTP/1.1 204 No Content\r\n\r\n"
        return b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"final")

    replica = await serve(answer)
    up = Upstream()
    statuses = []
    for method in ("HEAD", "GET", "POST"):
        reply, conn = await up.exchange(
            replica.addr, head(method), b"", head_request=method == "HEAD"
        )
        statuses.append((reply.status, reply.body))
        up.release(replica.addr, conn)
    assert statuses == [(200, b""), (204, b""), (200, b"final")]
    assert replica.connections == 1  # no body was mistaken for the next answer
    up.close()


async def test_a_connection_closed_while_idle_is_resent_once_fresh(serve: Serve) -> None:
    # The first connection answers once, then closes on the next request without a byte
    # (a replica retiring idle connections); the resend on a fresh connection is answered.
    def answer(h: bytes, n: int) -> bytes | None:
        return ok(b"fine") if n == 0 else None

    replica = await serve(answer)
    up = Upstream()
    reply, conn = await up.exchange(replica.addr, head(), None, head_request=False)
    up.release(replica.addr, conn)
    reply, conn = await up.exchange(replica.addr, head(), None, head_request=False)
    assert reply.body == b"fine"
    assert replica.connections == 2
    assert len(replica.heads) == 3  # answered, dropped unanswered, resent on the fresh one
    up.close()


async def test_refused_and_broken_exchanges_are_told_apart(serve: Serve) -> None:
    short = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"
    replica = await serve(lambda h, n: short, close_after=True)
    addr = replica.addr
    up = Upstream()
    with pytest.raises(UpstreamBroken):  # the body ended early: sent, so not resendable
        await up.exchange(addr, head(), None, head_request=False)
    garbage = await serve(lambda h, n: b"SSH-2.0-OpenSSH\r\n\r\n", close_after=True)
    with pytest.raises(UpstreamBroken):
        await up.exchange(garbage.addr, head(), None, head_request=False)
    assert replica.server is not None
    replica.server.close()
    await replica.server.wait_closed()
    with pytest.raises(ConnectFailed):  # nothing listens: nothing was sent
        await up.exchange(addr, head(), None, head_request=False)
    up.close()
