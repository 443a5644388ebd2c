"""The function port against slow clients, in-process over real sockets: a connection reaches a
replica only once its first request head is complete, unfinished heads and idle connections are
closed, and the shared connection cap evicts half-open ones first."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from tests.support.rawhttp import closed_by_server
from tickrun.controller.endpoints import EndpointTable
from tickrun.controller.portgateway import PortGateway
from tickrun.functions.httpserver_guard import ConnectionGuard

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


@dataclass
class Rig:
    port: int
    guard: ConnectionGuard
    replica_connections: list[int]

    async def open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    seen = [0]

    async def replica(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen[0] += 1
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(ANSWER)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    upstream = await asyncio.start_server(replica, "127.0.0.1", 0)
    up_port = upstream.sockets[0].getsockname()[1]
    endpoints = EndpointTable()  # no replica source: never holds
    endpoints.publish("f", {"r1": f"http://127.0.0.1:{up_port}"})
    guard = ConnectionGuard(8, header_timeout_s=0.5, keepalive_timeout_s=1.0)
    gateway = PortGateway(endpoints, "127.0.0.1", guard=guard)
    port = await gateway.ensure("f", _free_port(), on_fail=_free_port)
    try:
        yield Rig(port, guard, seen)
    finally:
        await gateway.stop()
        guard.close()
        upstream.close()


async def _ask(rig: Rig) -> bytes:
    reader, writer = await rig.open()
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = await asyncio.wait_for(reader.readexactly(len(ANSWER)), 5)
    writer.close()
    return answer


async def test_half_open_connections_never_reach_the_replica_and_make_room(rig: Rig) -> None:
    flood = []
    for _ in range(20):  # past the cap of 8
        reader, writer = await rig.open()
        writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Le")
        flood.append((reader, writer))
    await asyncio.sleep(0.1)
    assert rig.replica_connections == [0]  # no replica descriptor spent on them
    assert await _ask(rig) == ANSWER
    assert rig.replica_connections == [1]
    assert rig.guard.open_count <= 8
    assert all([await closed_by_server(r, 0.2) for r, _ in flood[:12]])  # the oldest made room
    for _, writer in flood:
        writer.close()


async def test_unfinished_head_and_idle_connection_areclosed_by_server(rig: Rig) -> None:
    reader, writer = await rig.open()
    writer.write(b"GET / HTTP/1.1\r\n")
    writer.write(b"X-Slow: 1\r\n")  # and never the blank line
    assert not await closed_by_server(reader, 0.3)
    assert await closed_by_server(reader, 1.0)  # the 0.5 s head deadline
    writer.close()
    assert rig.replica_connections == [0]

    reader, writer = await rig.open()
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert await asyncio.wait_for(reader.readexactly(len(ANSWER)), 5) == ANSWER
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # keep-alive: the next one goes through
    assert await asyncio.wait_for(reader.readexactly(len(ANSWER)), 5) == ANSWER
    assert not await closed_by_server(reader, 0.5)
    assert await closed_by_server(reader, 1.5)  # idle past the 1 s keep-alive timeout
    writer.close()
