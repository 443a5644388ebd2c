"""The controller's side of HAProxy's runtime API against a real HAProxy (Debian's package): the
load poll asks for the backends in use only, in one batch, and reads every row of them."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tickrun.controller.haproxy.front import haproxy_binary
from tickrun.controller.haproxy.runtime import RuntimeApi
from tickrun.controller.settings import Settings

CONFIG = """\
global
    stats socket {sock} mode 600 level admin
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
backend fn_0
    server a 127.0.0.1:9 disabled
backend fn_1
    server b 127.0.0.1:9 disabled
    server c 127.0.0.1:9 disabled
backend fn_2
    server d 127.0.0.1:9 disabled
"""


@pytest.fixture
def sock(tmp_path: Path) -> Iterator[str]:
    exe = haproxy_binary(Settings(state_dir=tmp_path, proxy="haproxy"))
    assert exe is not None
    path = str(tmp_path / "admin.sock")
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(CONFIG.format(sock=path))
    proc = subprocess.Popen([exe, "-db", "-f", str(cfg)], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while not Path(path).exists():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "HAProxy's admin socket never appeared"
            time.sleep(0.02)
        yield path
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_stats_of_the_backends_asked_for_only(sock: str) -> None:
    rows = asyncio.run(RuntimeApi(sock).stats(["fn_0", "fn_1"]))
    got = sorted((r.backend, r.server) for r in rows)
    assert got == [
        ("fn_0", "BACKEND"),
        ("fn_0", "a"),
        ("fn_1", "BACKEND"),
        ("fn_1", "b"),
        ("fn_1", "c"),
    ]
    assert all(r.current == 0 and r.total == 0 for r in rows)


def test_stats_of_one_backend_and_of_an_unknown_one(sock: str) -> None:
    api = RuntimeApi(sock)
    rows = asyncio.run(api.stats(["fn_2"]))
    assert sorted((r.backend, r.server) for r in rows) == [("fn_2", "BACKEND"), ("fn_2", "d")]
    # A name HAProxy does not know answers an error line, not a row: nothing is made up.
    assert asyncio.run(api.stats(["fn_9"])) == []
