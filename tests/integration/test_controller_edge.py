"""Slow and abusive clients against a real controller with a low descriptor limit (256), with
each public front (the Python edge and HAProxy): 300 half-open connections to the controller's
port and 300 to a function port do not stop ``/healthz``, the API or the function for another
client, while they are held and after; unfinished heads and idle keep-alives are closed on both
ports; malformed requests get a 400 and one short log line; the controller's log never holds the
token and has no line over 1 KB.

The fronts keep the cap differently: the Python edge evicts the oldest idle or half-open
connection to make room, HAProxy limits what one address may hold, and less once the cap is
three quarters full (haproxy/config.py); what both must give is asserted: a flood from four
addresses gets its connections beyond that closed and a fresh client is served while the
flood is held."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import resource
import shutil
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.test_controller_harness import TOKEN, ControllerProc, cleanup
from tickrun.controller.haproxy.config import per_source_limit, pressure_limits
from tickrun.controller.haproxy.front import haproxy_binary
from tickrun.controller.settings import Settings
from tickrun.functions import settings as registry

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "functions" / "examples" / "echo_headers"
NAME = "echo-headers"
FD_LIMIT = 256
HEADER_TIMEOUT_S = 4.0
KEEPALIVE_TIMEOUT_S = 4.0
FLOOD = 300
# The flood comes from four addresses of its own: the fresh client (127.0.0.1) is another one.
FLOOD_SOURCES = ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5")


def _low_fd_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


class Edge:
    def __init__(self, ctl: ControllerProc, fn: dict[str, Any], front: str) -> None:
        self.ctl = ctl
        self.front = front
        host, _, port = ctl.url.removeprefix("http://").rpartition(":")
        self.api = (host, int(port))
        self.fn_port = (str(fn["port_host"]), int(fn["port"]))


def _haproxy_found() -> bool:
    return haproxy_binary(Settings.from_env({registry.PROXY.name: "auto"})) is not None


@pytest.fixture(scope="module", params=["python", "haproxy"])
def edge(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Edge]:
    front = str(request.param)
    if front == "haproxy" and not _haproxy_found():
        pytest.fail("haproxy is not installed (apt-get install haproxy; .ci/run installs it)")
    tmp = tmp_path_factory.mktemp(f"edge-{front}")
    folder = tmp / "echo_headers"
    shutil.copytree(EXAMPLE, folder)
    env = dict(
        os.environ,
        TICKRUN_HEADER_TIMEOUT_S=str(HEADER_TIMEOUT_S),
        TICKRUN_KEEPALIVE_TIMEOUT_S=str(KEEPALIVE_TIMEOUT_S),
    )
    env[registry.PROXY.name] = front
    ctl = ControllerProc(tmp / "state", env)
    ctl.preexec_fn = _low_fd_limit
    ctl.start()
    try:
        ctl.client.deploy(yaml.safe_load((folder / "function.yaml").read_text()), folder)
        yield Edge(ctl, ctl.client.wait_ready(NAME, timeout_s=300), front)
    finally:
        cleanup(ctl)


def _healthz(edge: Edge) -> None:
    host, port = edge.api
    with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=10) as resp:
        assert resp.status == 200 and json.loads(resp.read())["status"] == "ok"


def _serves(edge: Edge) -> None:
    """/healthz, the API with the token, /fn/ and the function port all answer."""
    _healthz(edge)
    assert [f["name"] for f in edge.ctl.client.list_functions()] == [NAME]
    res = edge.ctl.client.invoke(NAME, path="/x")
    assert res.status == 201 and res.body == b"response body"
    conn = http.client.HTTPConnection(*edge.fn_port, timeout=10)
    try:
        conn.request("GET", "/x")
        resp = conn.getresponse()
        assert resp.status == 201 and resp.read() == b"response body"
    finally:
        conn.close()


def _closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(1024, socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def _flood(addr: tuple[str, int], partial: bytes) -> list[socket.socket | None]:
    """FLOOD connections sending ``partial``; None for one the front reset at once (HAProxy's
    per-address limits: the reset may arrive before connect() returns)."""
    socks: list[socket.socket | None] = []
    for i in range(FLOOD):
        source = FLOOD_SOURCES[i % len(FLOOD_SOURCES)]
        try:
            s = socket.create_connection(addr, timeout=5, source_address=(source, 0))
        except ConnectionResetError:
            socks.append(None)
            continue
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(partial)
        socks.append(s)
    return socks


def _closed(socks: list[socket.socket | None]) -> int:
    return sum(s is None or _closed_by_peer(s) for s in socks)


def _listening_line(ctl: ControllerProc) -> dict[str, Any]:
    for line in ctl.log_path.read_text().splitlines():
        if '"controller listening"' in line:
            found: dict[str, Any] = json.loads(line)
            return found
    raise AssertionError("no 'controller listening' line in the controller log")


def test_half_open_floods_do_not_stop_the_controller_or_the_function_port(edge: Edge) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4 * FLOOD:  # this test process holds the flood's sockets itself
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8 * FLOOD), hard))
    listening = _listening_line(edge.ctl)
    assert listening["fd_limit"] == FD_LIMIT
    assert listening["front"] == edge.front
    cap = int(listening["max_connections"])
    assert cap < FD_LIMIT // 2  # bounded by the descriptors, not the 1000 default

    _serves(edge)
    api_flood = _flood(
        edge.api,
        b"GET /api/functions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode(),
    )
    port_flood = _flood(edge.fn_port, b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Le")
    try:
        started = time.monotonic()
        _serves(edge)  # while all 600 are held
        _serves(edge)
        assert time.monotonic() - started < HEADER_TIMEOUT_S  # served before any head deadline
        api_closed, port_closed = _closed(api_flood), _closed(port_flood)
        if edge.front == "python":
            # One cap for the process: the oldest idle or half-open connections made room.
            assert api_closed + port_closed >= 2 * FLOOD - cap
        else:
            # HAProxy: each flooding address holds a quarter of the cap at most, and once three
            # quarters are taken an address holding 8 gets no more, so the flood never fills
            # the cap; the function port stays the Python edge's (its cap, the oldest made room).
            high_water, per_source = pressure_limits(cap)
            assert per_source_limit(cap) * len(FLOOD_SOURCES) >= cap  # without the second rule
            held = FLOOD - api_closed
            assert held <= high_water + per_source * len(FLOOD_SOURCES) and held < cap
            assert port_closed >= FLOOD - cap
        assert edge.ctl.proc is not None and edge.ctl.proc.poll() is None
    finally:
        for s in api_flood + port_flood:
            if s is not None:
                s.close()
    _serves(edge)  # and after


def _trickle_closed_within(addr: tuple[str, int], within_s: float) -> float:
    s = socket.create_connection(addr, timeout=within_s)
    started = time.monotonic()
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\n")
        for _ in range(int(within_s * 4)):
            try:
                s.sendall(b"X-Slow: 1\r\n")  # never the blank line that ends the head
            except (BrokenPipeError, ConnectionResetError):
                return time.monotonic() - started
            try:
                if s.recv(1024) == b"":
                    return time.monotonic() - started
            except TimeoutError:
                pass
            except ConnectionResetError:
                return time.monotonic() - started
        raise AssertionError(f"{addr}: an unfinished head was still open after {within_s} s")
    finally:
        s.close()


def _idle_closed_within(addr: tuple[str, int], path: str, within_s: float) -> float:
    conn = http.client.HTTPConnection(*addr, timeout=within_s)
    try:
        headers = {"Authorization": f"Bearer {TOKEN}"} if path.startswith("/fn/") else {}
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        assert resp.status == 201 and resp.read() == b"response body"
        started = time.monotonic()
        assert conn.sock is not None
        assert conn.sock.recv(1024) == b""  # the server closes the idle keep-alive
        return time.monotonic() - started
    finally:
        conn.close()


def test_unfinished_heads_and_idle_keep_alives_are_closed_on_both_ports(edge: Edge) -> None:
    for addr in (edge.api, edge.fn_port):
        took = _trickle_closed_within(addr, HEADER_TIMEOUT_S + 4)
        assert took >= HEADER_TIMEOUT_S - 1  # the deadline, not an immediate refusal
    for addr, path in ((edge.api, f"/fn/{NAME}/x"), (edge.fn_port, "/x")):
        took = _idle_closed_within(addr, path, KEEPALIVE_TIMEOUT_S + 4)
        assert KEEPALIVE_TIMEOUT_S - 1 <= took <= KEEPALIVE_TIMEOUT_S + 3
    _serves(edge)


BARE_LF = b"GET /api/functions HTTP/1.1\nHost: x\nAuthorization: Bearer " + TOKEN.encode() + b"\n\n"
MALFORMED = [
    b"GET /api/functions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
    + TOKEN.encode()
    + b"\x00\r\n\r\n",
    b"GET /api/functions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
    + TOKEN.encode()
    + b"\rX: y\r\n\r\n",
    BARE_LF,
    b"GET /api/functions HTTP/1.1\r\nAuthorization: Bearer "
    + TOKEN.encode()
    + b"\r\nX: "
    + b"a" * 9000
    + b"\r\n\r\n",
    b"POST /api/functions HTTP/1.1\r\nAuthorization: Bearer "
    + TOKEN.encode()
    + b"\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nabcdef",
]


def _malformed_lines(edge: Edge) -> int:
    return edge.ctl.log_path.read_text().count('"malformed request"')


def test_malformed_requests_log_one_short_warning_and_never_the_token(edge: Edge) -> None:
    before = _malformed_lines(edge)
    refused = 0
    for raw in MALFORMED:
        with socket.create_connection(edge.api, timeout=KEEPALIVE_TIMEOUT_S + 5) as s:
            s.sendall(raw)
            answer = b""
            while chunk := s.recv(65536):
                answer += chunk
        assert TOKEN.encode() not in answer
        head, _, body = answer.partition(b"\r\n\r\n")
        if edge.front == "haproxy" and raw is BARE_LF:
            # RFC 9112 2.2 lets a recipient take a bare LF as a line end: HAProxy does, and
            # sends the controller the same request with CRLFs, so no parser behind it can read
            # it otherwise (no smuggling): it is served as the one request it spells.
            assert head.split(b" ", 2)[1] == b"200", answer[:200]
            assert [f["name"] for f in json.loads(body)["functions"]] == [NAME]
            continue
        refused += 1
        assert head.split(b" ", 2)[1] == b"400", answer[:200]
        if b"application/json" in head.lower():
            assert json.loads(body)["error"] == "BadRequest"
        else:
            # Only HAProxy's own parser answers otherwise: its fixed short page (2.6 cannot
            # replace that one), with nothing of the request or the machine in it.
            assert edge.front == "haproxy"
            assert body.startswith(b"<html><body><h1>400 Bad request</h1>") and len(body) < 200
    _healthz(edge)
    # HAProxy's refusals reach the controller's log through its stderr, a moment later.
    deadline = time.monotonic() + 10
    while _malformed_lines(edge) - before < refused and time.monotonic() < deadline:
        time.sleep(0.1)
    log = edge.ctl.log_path.read_text()
    assert log.count('"malformed request"') - before == refused
    assert TOKEN not in log  # neither these nor the floods above left it there
    long_lines = [line[:120] for line in log.splitlines() if len(line.encode()) > 1024]
    assert not long_lines
