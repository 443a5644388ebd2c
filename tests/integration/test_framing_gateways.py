"""Framing through both gateways: Nuclio's echo-headers function copies the request's headers
(Content-Length, Connection, Transfer-Encoding, …) into its response; through ``/fn/`` and through
the function port the client still gets one correct framing, one X-Request-Id and a keep-alive
connection that answers the next request right. Small, multi-MB and chunked requests. With each
public front (the Python gateway and HAProxy)."""

from __future__ import annotations

import http.client
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.test_controller_harness import TOKEN, ControllerProc, cleanup
from tickrun.controller.haproxy.front import haproxy_binary
from tickrun.controller.settings import Settings
from tickrun.functions import settings as registry

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "functions" / "examples" / "echo_headers"
NAME = "echo-headers"
# Framing and hop-by-hop headers, sent on every request: none may come back as given.
HOSTILE_HEADERS = {
    "Connection": "keep-alive, X-Hop",
    "Keep-Alive": "timeout=600, max=1000",
    "TE": "trailers",
    "Trailer": "X-Checksum",
    "Upgrade": "h2c",
    "Proxy-Authorization": "Basic cHJveHk6cHJveHk=",
    "Proxy-Connection": "keep-alive",
    "X-Hop": "named-by-connection",
}
FRAMING = {"keep-alive", "te", "trailer", "upgrade", "proxy-authorization", "proxy-connection"}
# The /fn/ gateway is a proxy: it drops what the Connection header names, and the token.
NOT_FORWARDED_BY_PROXY = FRAMING | {"x-hop", "authorization"}


@pytest.fixture(scope="module", params=["python", "haproxy"])
def deployed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ControllerProc, Any]]:
    import os

    front = str(request.param)
    if (
        front == "haproxy"
        and haproxy_binary(Settings.from_env({registry.PROXY.name: "auto"})) is None
    ):
        pytest.fail("haproxy is not installed (apt-get install haproxy; .ci/run installs it)")
    tmp = tmp_path_factory.mktemp(f"framing-{front}")
    folder = tmp / "echo_headers"
    shutil.copytree(EXAMPLE, folder)
    spec = yaml.safe_load((folder / "function.yaml").read_text())
    ctl = ControllerProc(tmp / "state", {**os.environ, registry.PROXY.name: front}).start()
    try:
        ctl.client.deploy(spec, folder)
        fn = ctl.client.wait_ready(NAME, timeout_s=300)
        yield ctl, fn
    finally:
        cleanup(ctl)


def _targets(ctl: ControllerProc, fn: dict[str, Any]) -> list[tuple[str, str, int, str]]:
    host, _, port = ctl.url.removeprefix("http://").rpartition(":")
    return [
        ("fn-gateway", host, int(port), f"/fn/{NAME}"),
        ("function-port", fn["port_host"], int(fn["port"]), ""),
    ]


def _check(resp: http.client.HTTPResponse, request_id: str, proxied: bool) -> None:
    body = resp.read()
    headers = resp.getheaders()
    names = [k.lower() for k, _ in headers]
    assert resp.status == 201, (resp.status, body[:300])
    assert body == b"response body"
    # One framing, the server's own: a length that matches the body, or chunks, never both.
    lengths = [v for k, v in headers if k.lower() == "content-length"]
    encodings = [v for k, v in headers if k.lower() == "transfer-encoding"]
    assert (lengths == ["13"] and not encodings) or (not lengths and encodings == ["chunked"]), (
        headers
    )
    assert [v for k, v in headers if k.lower() == "x-request-id"] == [request_id]
    leaked = (NOT_FORWARDED_BY_PROXY if proxied else FRAMING).intersection(names)
    assert not leaked, headers
    # A Connection header may only be the server's own keep-alive/close, never the handler's.
    assert all(
        v.lower() in ("keep-alive", "close") for k, v in headers if k.lower() == "connection"
    )
    assert resp.getheader("h1") == "v1"  # the handler's own headers do come through
    assert resp.getheader("Content-Type", "").startswith("text/plain")


def _send(
    conn: http.client.HTTPConnection,
    prefix: str,
    rid: str,
    *,
    body: bytes | None = None,
    chunked: list[bytes] | None = None,
) -> None:
    headers = {**HOSTILE_HEADERS, "X-Request-Id": rid}
    if prefix:  # /fn/ needs the token; the function port takes none
        headers["Authorization"] = f"Bearer {TOKEN}"
    if chunked is not None:
        headers["Transfer-Encoding"] = "chunked"
        conn.request(
            "POST", f"{prefix}/echo", body=iter(chunked), headers=headers, encode_chunked=True
        )
    elif body is not None:
        headers["Content-Length"] = str(len(body))
        conn.request("POST", f"{prefix}/echo", body=body, headers=headers)
    else:
        conn.request("GET", f"{prefix}/echo", headers=headers)
    _check(conn.getresponse(), rid, proxied=bool(prefix))


@pytest.mark.parametrize("target", [0, 1], ids=["fn-gateway", "function-port"])
def test_framing_small_large_chunked_and_keep_alive(
    deployed: tuple[ControllerProc, Any], target: int
) -> None:
    ctl, fn = deployed
    label, host, port, prefix = _targets(ctl, fn)[target]
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        _send(conn, prefix, f"{label}-small", body=b'{"a": 1}')
        sock = conn.sock
        _send(conn, prefix, f"{label}-get")  # the same connection answers the next request
        big = bytes(range(256)) * (3 * 4096)  # 3 MiB
        _send(conn, prefix, f"{label}-large", body=big)
        pieces = [b"x" * 65536] * 40 + [b"tail"]  # 2.5 MiB in chunks
        _send(conn, prefix, f"{label}-chunked", chunked=pieces)
        _send(conn, prefix, f"{label}-after-chunked", body=b"again")
        assert conn.sock is sock  # all on one keep-alive connection, none reopened
    finally:
        conn.close()
