"""The ``/fn/`` gateway's client side: HTTP/1.1 to the replicas over pooled keep-alive
connections, without a general-purpose client.

Why not aiohttp's client: profiled in-process, a ``/fn/`` request cost ~30 us of controller CPU
in aiohttp's server and ~110 us more in its client (request objects, URL handling, timers,
stream readers); the replica itself costs ~40 us. Here a request is one write of a head built
from the already-filtered headers, and a response one parse of its head; the body is read by
its framing (Content-Length, chunked, or until close) and handed over whole when small, else
streamed with flow control.

A connection is reused only after a complete response that did not say ``close``. A request on
a reused connection that gets no byte back before the connection ends (the replica closed it as
idle, e.g. while retiring) is sent once more on a fresh connection: the replica never read it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from multidict import CIMultiDict

HIGH_WATER = 1 << 20  # a streamed body pauses the replica's socket past this many unread bytes
CONNECT_TIMEOUT_S = 2.0
MAX_HEAD = 64 * 1024
MAX_IDLE_PER_REPLICA = 256


class ConnectFailed(Exception):
    """The replica could not be reached: nothing was sent (another replica may take it)."""


class UpstreamBroken(Exception):
    """The exchange broke after the request was sent (or the response was not HTTP)."""


class _Conn(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.eof = False
        self.received = 0
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        # The current response's framing, set once its head is read.
        self.keep = False
        self.chunked = False
        self.left: int | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self.received += len(data)
        if len(self.buf) > HIGH_WATER and self.transport is not None and not self._paused:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def more(self) -> None:
        """Wait for more bytes (UpstreamBroken at the end of the stream)."""
        if self.eof:
            raise UpstreamBroken("connection closed mid-response")
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def take(self, n: int) -> bytes:
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def usable(self) -> bool:
        return not self.eof and self.transport is not None and not self.transport.is_closing()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


@dataclass
class Reply:
    status: int
    reason: str
    headers: CIMultiDict[str]
    body: bytes | None  # None: stream it with :meth:`Upstream.stream`
    length: int | None  # the body's length when known


class Upstream:
    """Keep-alive connections per replica address. Constructor does no I/O."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, int], list[_Conn]] = {}

    async def _open(self, addr: tuple[str, int]) -> _Conn:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(_Conn, addr[0], addr[1]), CONNECT_TIMEOUT_S
            )
        except (OSError, TimeoutError) as exc:
            raise ConnectFailed(str(exc)) from exc
        return conn

    async def exchange(
        self, addr: tuple[str, int], head: bytes, body: bytes | None, *, head_request: bool
    ) -> tuple[Reply, _Conn]:
        """Send one request; its response head (and a small body) back. The connection is the
        caller's until :meth:`release` (or :meth:`stream` to its end)."""
        idle = self._idle.get(addr)
        while idle:
            conn = idle.pop()
            if not conn.usable():
                conn.close()
                continue
            try:
                return await self._send(conn, head, body, head_request=head_request)
            except UpstreamBroken:
                conn.close()
                if conn.received:
                    raise
                # closed while idle before answering a byte: send it once more, fresh
            except BaseException:
                conn.close()  # cancelled (the caller went away): the response is unread
                raise
            break
        conn = await self._open(addr)
        try:
            return await self._send(conn, head, body, head_request=head_request)
        except BaseException:
            conn.close()
            raise

    async def _send(
        self, conn: _Conn, head: bytes, body: bytes | None, *, head_request: bool
    ) -> tuple[Reply, _Conn]:
        assert conn.transport is not None
        conn.received = 0
        conn.transport.write(head + body if body else head)
        while True:
            end = conn.buf.find(b"\r\n\r\n")
            while end < 0:
                if len(conn.buf) > MAX_HEAD:
                    raise UpstreamBroken("response head too long")
                await conn.more()
                end = conn.buf.find(b"\r\n\r\n")
            status, reason, headers, keep = _parse_head(conn.take(end + 4))
            if status >= 200:
                break  # 1xx (100 Continue): an interim answer, the final one follows
        if head_request or status in (204, 304):
            length: int | None = 0
        elif "chunked" in headers.get("Transfer-Encoding", "").lower():
            length = None
        elif "Content-Length" in headers:
            try:
                length = int(headers["Content-Length"])
            except ValueError as exc:
                raise UpstreamBroken("bad Content-Length") from exc
        else:
            length, keep = None, False  # until the replica closes
        conn.keep, conn.chunked, conn.left = keep, length is None and keep, length
        if length is not None and length <= HIGH_WATER:
            while len(conn.buf) < length:
                await conn.more()
            data = conn.take(length)
            return Reply(status, reason, headers, data, length), conn
        return Reply(status, reason, headers, None, length), conn

    def release(self, addr: tuple[str, int], conn: _Conn) -> None:
        """A complete exchange: keep the connection for the next request if it may be."""
        if conn.keep and conn.usable() and not conn.buf:
            idle = self._idle.setdefault(addr, [])
            if len(idle) < MAX_IDLE_PER_REPLICA:
                idle.append(conn)
                return
        conn.close()

    async def stream(self, addr: tuple[str, int], conn: _Conn) -> AsyncIterator[bytes]:
        """The body of a reply whose ``body`` is None, chunk by chunk; releases at the end."""
        left = conn.left
        if conn.chunked:
            async for piece in _chunks(conn):
                yield piece
        elif left is not None:
            while left > 0:
                if not conn.buf:
                    await conn.more()
                piece = conn.take(min(left, len(conn.buf)))
                left -= len(piece)
                yield piece
        else:  # until close
            while True:
                if conn.buf:
                    yield conn.take(len(conn.buf))
                    continue
                try:
                    await conn.more()
                except UpstreamBroken:
                    break
        self.release(addr, conn)

    def close(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()


async def _chunks(conn: _Conn) -> AsyncIterator[bytes]:
    """Decode a chunked body (extensions and trailers are read and dropped)."""
    while True:
        end = conn.buf.find(b"\r\n")
        while end < 0:
            if len(conn.buf) > MAX_HEAD:
                raise UpstreamBroken("bad chunk size line")
            await conn.more()
            end = conn.buf.find(b"\r\n")
        line = conn.take(end + 2)[:-2].split(b";", 1)[0].strip()
        try:
            size = int(line, 16)
        except ValueError as exc:
            raise UpstreamBroken("bad chunk size") from exc
        if size == 0:
            while True:  # trailers, up to the empty line
                end = conn.buf.find(b"\r\n")
                while end < 0:
                    await conn.more()
                    end = conn.buf.find(b"\r\n")
                if conn.take(end + 2) == b"\r\n":
                    return
        left = size
        while left > 0:
            if not conn.buf:
                await conn.more()
            piece = conn.take(min(left, len(conn.buf)))
            left -= len(piece)
            yield piece
        while len(conn.buf) < 2:
            await conn.more()
        if conn.take(2) != b"\r\n":
            raise UpstreamBroken("chunk not followed by CRLF")


def _parse_head(raw: bytes) -> tuple[int, str, CIMultiDict[str], bool]:
    """(status, reason, headers, keep-alive) of a response head."""
    lines = raw.decode("utf-8", "surrogateescape").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/1.") or not code.isdigit():
        raise UpstreamBroken("not an HTTP/1 response")
    headers: CIMultiDict[str] = CIMultiDict()
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise UpstreamBroken("malformed response header")
        headers.add(name, value.strip())
    connection = headers.get("Connection", "").lower()
    keep = version == "HTTP/1.1" and "close" not in connection
    return int(code), reason, headers, keep
