"""The HAProxy config the controller writes, the stats parser, the routes' bookkeeping (no
HAProxy here: tests/integration/test_haproxy.py runs the real one)."""

from __future__ import annotations

import asyncio
import hashlib
import socket
from pathlib import Path

import pytest

from tickrun.controller.builder.hashing import iter_files, pack_dir
from tickrun.controller.endpoints import EndpointTable
from tickrun.controller.haproxy.config import (
    LOG_TAG,
    ProxyConfig,
    per_source_limit,
    render,
    token_digest,
)
from tickrun.controller.haproxy.front import _log_front_line, haproxy_binary, listen
from tickrun.controller.haproxy.routes import Routes, _addr
from tickrun.controller.haproxy.runtime import RuntimeApi, RuntimeApiError, parse_stats
from tickrun.controller.settings import Settings
from tickrun.functions import settings as registry
from tickrun.functions.errors import SpecError


def _cfg(**kw: object) -> ProxyConfig:
    base: dict[str, object] = {
        "public_fd": 7,
        "internal_port": 4321,
        "stats_socket": "/s/admin.sock",
        "functions_map": "/s/functions.map",
        "token": "s3cret-token",
        "max_connections": 500,
        "header_timeout_s": 10.0,
        "keepalive_timeout_s": 30.0,
        "body_timeout_s": 2.5,
        "slots": 3,
    }
    base.update(kw)
    return ProxyConfig(**base)  # type: ignore[arg-type]


def test_config_holds_a_digest_not_the_token_and_the_edge_deadlines() -> None:
    text = render(_cfg())
    assert "s3cret-token" not in text
    assert hashlib.sha256(b"Bearer s3cret-token").hexdigest() == token_digest("s3cret-token")
    assert token_digest("s3cret-token") in text
    assert "bind fd@7" in text
    assert "stats socket /s/admin.sock mode 600 level admin" in text
    assert "timeout http-request 10000ms" in text
    assert "timeout http-keep-alive 30000ms" in text
    assert "timeout client 2500ms" in text
    assert "maxconn 500" in text
    assert "server ctl 127.0.0.1:4321" in text
    assert [f"backend fn_{i}" in text for i in range(4)] == [True, True, True, False]
    # The straight path strips the token and needs exactly one Authorization header.
    assert "del-header authorization if fast" in text
    assert "req.fhdr_cnt(authorization) eq 1" in text


def test_one_address_holds_a_quarter_of_the_connections() -> None:
    text = render(_cfg(max_connections=500))
    assert per_source_limit(500) == 125 and per_source_limit(3) == 1
    assert "tcp-request connection track-sc0 src,ipmask(32,64)" in text
    assert "tcp-request connection reject if { sc0_conn_cur gt 125 }" in text
    # Past three quarters of the budget, an address holding 8 gets no more.
    assert "tcp-request connection reject if { fe_conn ge 375 } { sc0_conn_cur gt 8 }" in text


def test_haproxy_logs_only_abnormal_requests_and_never_a_header() -> None:
    text = render(_cfg())
    assert "option dontlog-normal" in text and "option dontlognull" in text
    log_format = next(line for line in text.splitlines() if "log-format" in line)
    assert LOG_TAG in log_format and "%ST" in log_format
    for field in ("%r", "%hr", "%HU", "%{"):  # the request line, captured headers
        assert field not in log_format


def test_a_request_haproxy_refused_is_one_malformed_request_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("DEBUG")
    assert _log_front_line(f"{LOG_TAG} status=400 term=PR-- client=10.0.0.9")
    assert _log_front_line(f"{LOG_TAG} status=408 term=cR-- client=10.0.0.9")
    assert _log_front_line(f"{LOG_TAG} status=502 term=SH-- client=10.0.0.9")
    assert not _log_front_line("[WARNING]  (1) : Server fn_0/abc-4000 is going DOWN")
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert [r.getMessage() for r in warnings] == [
        "malformed request",
        "request failed at the front",
    ]
    assert getattr(warnings[0], "remote", None) == "10.0.0.9"


def test_header_names_keep_the_spelling_the_controller_sends() -> None:
    text = render(_cfg())
    assert "option h1-case-adjust-bogus-client" in text
    assert "h1-case-adjust content-security-policy Content-Security-Policy" in text
    assert "h1-case-adjust retry-after Retry-After" in text


def test_a_socket_in_a_code_folder_is_not_packed(tmp_path: Path) -> None:
    # The state dir (HAProxy's admin socket in it) may sit inside a folder being deployed.
    (tmp_path / "handler.py").write_text("def handler(context, event): pass\n")
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(tmp_path / "admin.sock"))
        assert [p.name for p in iter_files(tmp_path)] == ["handler.py"]
        assert pack_dir(tmp_path)
    finally:
        sock.close()


def test_public_gateway_needs_no_token_on_the_straight_path() -> None:
    text = render(_cfg(token=None))
    assert "set-var(txn.fast) bool(1) if fn_path fn_mapped !conn_names\n" in text


def test_errors_haproxy_answers_are_json() -> None:
    text = render(_cfg())
    assert "http-error status 503 content-type application/json" in text
    assert "<html" not in text


def test_parse_stats_reads_backends_and_servers() -> None:
    text = (
        "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin\n"
        "fn_0,abc-4000,0,0,2,3,,17,0\n"
        "fn_0,BACKEND,0,0,2,3,,17,0\n"
        "\n"
    )
    rows = parse_stats(text)
    assert [(r.backend, r.server, r.current, r.total) for r in rows] == [
        ("fn_0", "abc-4000", 2, 17),
        ("fn_0", "BACKEND", 2, 17),
    ]
    assert parse_stats("Unknown command\n") == []
    # A batch (one `show stat` a backend) answers a header and rows for each command.
    batch = "No such backend.\n\n" + text + text.replace("fn_0", "fn_1") + "No such backend.\n"
    assert [(r.backend, r.server) for r in parse_stats(batch)] == [
        ("fn_0", "abc-4000"),
        ("fn_0", "BACKEND"),
        ("fn_1", "abc-4000"),
        ("fn_1", "BACKEND"),
    ]


def test_proxy_setting_and_binary(tmp_path: Path) -> None:
    env = {registry.PROXY.name: "haproxy", registry.STATE_DIR.name: str(tmp_path)}
    assert Settings.from_env(env).proxy == "haproxy"
    assert Settings.from_env({registry.STATE_DIR.name: str(tmp_path)}).proxy == "auto"
    with pytest.raises(SpecError, match=registry.PROXY.name):
        Settings.from_env({**env, registry.PROXY.name: "nginx"})
    assert haproxy_binary(Settings(state_dir=tmp_path, proxy="python")) is None


def test_haproxy_required_but_missing_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("os.access", lambda *_a, **_k: False)
    with pytest.raises(SpecError, match="no haproxy binary"):
        haproxy_binary(Settings(state_dir=tmp_path, proxy="haproxy"))
    assert haproxy_binary(Settings(state_dir=tmp_path, proxy="auto")) is None


def test_listen_binds_port_zero_to_a_real_port() -> None:
    sock = listen("127.0.0.1", 0)
    try:
        port = sock.getsockname()[1]
        assert port > 0
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
    finally:
        sock.close()


def test_addr_accepts_loopback_urls_only_in_a_safe_form() -> None:
    assert _addr("http://127.0.0.1:4000") == "127.0.0.1:4000"
    assert _addr("http://bad host:4000") is None
    assert _addr("http://127.0.0.1:x") is None


def test_the_table_tells_its_mirror_and_adds_its_load() -> None:
    async def main() -> None:
        table = EndpointTable()
        routes = Routes(RuntimeApi("/nonexistent/admin.sock", timeout_s=0.2), "/m", 2)
        table.mirror = routes
        table.publish("f", {"r1": "http://127.0.0.1:4000", "r2": "http://127.0.0.1:4001"})
        assert routes._want["f"] == {"r1": "127.0.0.1:4000", "r2": "127.0.0.1:4001"}
        table.mark_unready("f", "r1")
        assert routes._want["f"] == {"r2": "127.0.0.1:4001"}
        routes._in_flight["f"], routes._served["f"] = 3, 40
        assert table.load("f") == (3, 40)
        assert not table.busy("f", {"r2"})  # HAProxy was never told: nothing to drain
        table.drop("f")
        assert "f" not in routes._want
        # Names HAProxy's command line cannot carry stay on the Python gateway.
        table.publish("bad name", {"r1": "http://127.0.0.1:4000"})
        assert "bad name" not in routes._want
        await routes.sync()  # nothing wanted any more: nothing to tell HAProxy
        with pytest.raises(RuntimeApiError):
            await routes.poll()  # HAProxy is not running: a clear error, not a hang

    asyncio.run(main())
