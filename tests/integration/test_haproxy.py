"""The controller with HAProxy in front (``TICKRUN_PROXY=haproxy``): a real controller, real
HAProxy (Debian's package), process-platform functions. /fn/ goes straight to the function's
replicas through HAProxy when the token is right and replicas are ready; everything else goes
through the controller, which answers as without HAProxy."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_controller_harness import TOKEN, ControllerProc, cleanup, wait_for
from tickrun.functions import settings as registry

pytestmark = pytest.mark.slow

HANDLER = """
import os, time
VERSION = "{version}"

def handler(context, event):
    if "sleep" in event.path:
        time.sleep(2.5)
    return {{
        "version": VERSION,
        "replica": os.environ.get("TICKRUN_REPLICA_ID"),
        "path": event.path,
        "headers": {{k.lower(): v for k, v in event.headers.items()}},
    }}
"""


def write_fn(root: Path, name: str, version: str = "1", **spec: Any) -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "main.py").write_text(HANDLER.format(version=version))
    body = {"handler": "main:handler", "replicas": 1, **spec}
    (folder / "function.yaml").write_text(json.dumps({"metadata": {"name": name}, "spec": body}))
    return folder


def deploy(ctl: ControllerProc, folder: Path) -> dict[str, Any]:
    ctl.client.deploy(json.loads((folder / "function.yaml").read_text()), folder)
    return ctl.client.wait_ready(folder.name, timeout_s=180)


@pytest.fixture(scope="module")
def ctl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControllerProc]:
    tmp = tmp_path_factory.mktemp("haproxy")
    env = dict(os.environ)
    env[registry.PROXY.name] = "haproxy"
    # Short edge deadlines: a slow request head is cut, a slow handler is not.
    env[registry.HEADER_TIMEOUT_S.name] = "1"
    env[registry.BODY_TIMEOUT_S.name] = "1"
    proc = ControllerProc(tmp / "state", env).start()
    try:
        yield proc
    finally:
        cleanup(proc)


def haproxy_pid(ctl: ControllerProc) -> int:
    """The controller's HAProxy child (from /proc: its parent and name)."""
    assert ctl.proc is not None
    kids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if ppid == ctl.proc.pid and name == "haproxy":
            kids.append(int(entry.name))
    assert len(kids) == 1, kids
    return kids[0]


def admin(ctl: ControllerProc, command: str) -> str:
    cfg = (ctl.state_dir / "haproxy" / "haproxy.cfg").read_text()
    found = re.search(r"stats socket (\S+)", cfg)
    assert found is not None
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(found.group(1))
        s.sendall(command.encode() + b"\n")
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out.decode()


def served_by_haproxy(ctl: ControllerProc) -> int:
    """Requests HAProxy sent straight to function backends (not to the controller)."""
    total = 0
    for line in admin(ctl, "show stat -1 2 -1").splitlines():
        cols = line.split(",")
        if len(cols) > 7 and cols[0].startswith("fn_") and cols[1] == "BACKEND":
            total += int(cols[7])
    return total


def call(
    ctl: ControllerProc, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(ctl.url + path, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as res:
            return res.status, {k.lower(): v for k, v in res.headers.items()}, res.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_fn_balances_checks_the_token_and_keeps_the_gateway_contract(
    ctl: ControllerProc, tmp_path: Path
) -> None:
    deploy(ctl, write_fn(tmp_path, "hello", replicas=2))
    wait_for(lambda: len(ctl.client.get_function("hello")["replicas"]["items"]) == 2, 60)
    before = served_by_haproxy(ctl)
    seen = set()
    for _ in range(20):
        status, headers, body = call(
            ctl, "/fn/hello/a/b?x=1", {**AUTH, "X-Request-Id": "rid-1", "Proxy-Foo": "1"}
        )
        assert status == 200, body
        answer = json.loads(body)
        seen.add(answer["replica"])
        assert answer["path"] == "/a/b"  # /fn/<name> taken off
        assert "authorization" not in answer["headers"]  # the token never reaches a replica
        assert "proxy-foo" not in answer["headers"]
        assert answer["headers"]["x-request-id"] == "rid-1"
        assert answer["headers"]["x-forwarded-prefix"] == "/fn/hello"
        assert headers["x-request-id"] == "rid-1"
    assert len(seen) == 2  # per-request balancing over both ready replicas
    assert served_by_haproxy(ctl) - before >= 20  # straight through HAProxy, not Python

    # An unsafe request id is replaced, once, the same to the replica and in the answer.
    status, headers, body = call(ctl, "/fn/hello/", {**AUTH, "X-Request-Id": "bad id!"})
    assert status == 200
    assert json.loads(body)["headers"]["x-request-id"] == headers["x-request-id"] != "bad id!"

    # Wrong, missing, or doubled tokens: the controller answers (JSON 401), nothing forwarded.
    for bad in ({"Authorization": "Bearer nope"}, {}):
        status, _, body = call(ctl, "/fn/hello/", bad)
        assert status == 401, body
        assert json.loads(body)["error"] == "AuthError"
    # Another spelling the controller accepts still works (through the controller), and what
    # HAProxy tells the controller (the client's address, its secret) reaches no replica.
    status, _, body = call(
        ctl, "/fn/hello/x", {"Authorization": f"bearer {TOKEN}", "X-Tickrun-Client": "1.2.3.4"}
    )
    assert status == 200, body
    sent = json.loads(body)["headers"]
    assert not {"authorization", "x-tickrun-client", "x-tickrun-front"} & set(sent), sent
    # A header the Connection header names is hop-by-hop: dropped (the controller's way).
    host, port = ctl.url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("GET", "/fn/hello/", headers={**AUTH, "Connection": "x-hop", "X-Hop": "1"})
    resp = conn.getresponse()
    sent = json.loads(resp.read())["headers"]
    conn.close()
    assert resp.status == 200 and "x-hop" not in sent, sent
    # Unknown function: the controller's 404.
    status, _, body = call(ctl, "/fn/nope/", AUTH)
    assert status == 404 and json.loads(body)["error"] == "NotFoundError"

    # The API and the UI are still there, behind HAProxy.
    assert call(ctl, "/api/functions", AUTH)[0] == 200
    assert call(ctl, "/healthz")[0] == 200
    status, headers, body = call(ctl, "/")
    assert status == 200 and headers["content-type"].startswith("text/html")

    # The config is private and holds no token (a digest of the header instead).
    cfg = ctl.state_dir / "haproxy" / "haproxy.cfg"
    assert cfg.stat().st_mode & 0o777 == 0o600
    assert TOKEN not in cfg.read_text()
    assert TOKEN not in ctl.log_path.read_text()


def _from(source: str, ctl: ControllerProc, token: str) -> int:
    host, port = ctl.url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30, source_address=(source, 0))
    try:
        conn.request("GET", "/api/functions", headers={"Authorization": f"Bearer {token}"})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def test_wrong_tokens_lock_out_the_guesser_not_every_client_behind_haproxy(
    ctl: ControllerProc,
) -> None:
    # Two clients on different loopback addresses: behind HAProxy the controller still tells
    # them apart (HAProxy passes the address it saw, with a secret the app checks).
    statuses = [_from("127.0.0.2", ctl, "wrong") for _ in range(15)]
    assert statuses[0] == 401 and statuses[-1] == 429, statuses
    assert _from("127.0.0.1", ctl, TOKEN) == 200
    assert _from("127.0.0.2", ctl, "wrong") == 429  # still refused


def test_slow_handlers_pass_and_slow_request_heads_are_cut(ctl: ControllerProc) -> None:
    wait_for(lambda: ctl.client.get_function("hello")["state"] == "ready", 60)
    # The handler takes 2.5 s; the edge's body/header deadlines are 1 s: an answer being
    # computed is not a stalled client.
    status, _, body = call(ctl, "/fn/hello/sleep", AUTH)
    assert status == 200, body
    host, port = ctl.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finished
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    # Closed by the header deadline (HAProxy answers 408 first).
    assert data == b"" or data.startswith(b"HTTP/1.1 408"), data[:200]


def test_a_build_log_followed_through_haproxy_streams_to_its_end(
    ctl: ControllerProc, tmp_path: Path
) -> None:
    # requirements: the build installs a wheel, with silent gaps longer than the 1 s client
    # deadline while the controller streams the log.
    folder = write_fn(tmp_path, "follow", version="f", requirements=["six"])
    result = ctl.client.deploy(*_spec(folder))
    lines = list(ctl.client.follow_build(result["build"]["id"]))
    build = ctl.client.get_build(result["build"]["id"])
    assert build["state"] == "succeeded", (build, lines[-20:])
    assert lines  # the log arrived, through HAProxy, to the end of the build
    ctl.client.wait_ready("follow", timeout_s=180)


@dataclass
class Load:
    url: str
    name: str = "roll"
    stop: threading.Event = field(default_factory=threading.Event)
    versions: list[str] = field(default_factory=list)
    replicas: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self, n: int = 4) -> Load:
        for _ in range(n):
            t = threading.Thread(target=self._run, daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def _run(self) -> None:
        host, port = self.url.removeprefix("http://").rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        while not self.stop.is_set():
            try:
                conn.request("GET", f"/fn/{self.name}/", headers=AUTH)
                resp = conn.getresponse()
                data = resp.read()
                if resp.status != 200:
                    self.failures.append(f"{resp.status} {data[:200]!r}")
                else:
                    answer = json.loads(data)
                    self.versions.append(answer["version"])
                    self.replicas.append(answer["replica"])
            except (OSError, http.client.HTTPException) as exc:
                self.failures.append(repr(exc))
                conn.close()
                conn = http.client.HTTPConnection(host, int(port), timeout=30)

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)


def test_a_retired_replica_is_drained_with_zero_failed_requests(
    ctl: ControllerProc, tmp_path: Path
) -> None:
    deploy(ctl, write_fn(tmp_path, "roll", version="1"))
    load = Load(ctl.url).start()
    try:
        wait_for(lambda: len(load.versions) > 50, 30, "requests on version 1")
        old = ctl.client.get_function("roll")["revision"]
        ctl.client.deploy(*_spec(write_fn(tmp_path, "roll", version="2")))
        wait_for(
            lambda: (
                (f := ctl.client.get_function("roll"))["revision"] != old
                and all(r["revision"] == f["revision"] for r in f["replicas"]["items"])
            ),
            120,
            "version 2 alone",
        )
        n = len(load.versions)
        wait_for(lambda: len(load.versions) > n + 50, 30, "requests on version 2")
    finally:
        load.finish()
    assert load.failures == [], load.failures[:10]
    assert load.versions[0] == "1" and load.versions[-1] == "2"
    assert served_by_haproxy(ctl) > 0


def test_scaling_down_under_load_fails_no_request(ctl: ControllerProc, tmp_path: Path) -> None:
    deploy(ctl, write_fn(tmp_path, "shrink", replicas=2))
    wait_for(lambda: len(ctl.client.get_function("shrink")["replicas"]["items"]) == 2, 60)
    load = Load(ctl.url, name="shrink").start()
    try:
        wait_for(lambda: len(set(load.replicas)) == 2, 30, "both replicas serving")
        ctl.client.scale("shrink", replicas=1)
        wait_for(
            lambda: len(ctl.client.get_function("shrink")["replicas"]["items"]) == 1, 60, "one left"
        )
        n = len(load.replicas)
        wait_for(lambda: len(load.replicas) > n + 50, 30, "requests after the scale-down")
    finally:
        load.finish()
    assert load.failures == [], load.failures[:10]
    assert len(set(load.replicas[-20:])) == 1


def _spec(folder: Path) -> tuple[dict[str, Any], Path]:
    return json.loads((folder / "function.yaml").read_text()), folder


def test_wake_from_zero_through_haproxy_and_traffic_keeps_it_up(
    ctl: ControllerProc, tmp_path: Path
) -> None:
    folder = write_fn(tmp_path, "sleepy", minReplicas=0, maxReplicas=1, scaleToZeroIdleTime="2s")
    ctl.client.deploy(*_spec(folder))
    replicas = lambda: ctl.client.get_function("sleepy")["replicas"]["items"]  # noqa: E731
    wait_for(
        lambda: ctl.client.get_function("sleepy")["state"] == "ready" and not replicas(),
        120,
        "built and scaled to zero",
    )
    status, _, body = call(ctl, "/fn/sleepy/", AUTH)  # held by the controller while 0 -> 1
    assert status == 200, body
    first = json.loads(body)["replica"]
    # Traffic straight through HAProxy counts as traffic: no scale-down while it flows.
    before = served_by_haproxy(ctl)
    end = time.monotonic() + 5
    while time.monotonic() < end:
        status, _, body = call(ctl, "/fn/sleepy/", AUTH)
        assert status == 200, body
        assert json.loads(body)["replica"] == first
        time.sleep(0.2)
    assert served_by_haproxy(ctl) > before
    wait_for(lambda: not replicas(), 60, "back to zero once idle")


def test_haproxy_killed_is_restarted(ctl: ControllerProc) -> None:
    pid = haproxy_pid(ctl)
    os.kill(pid, signal.SIGKILL)
    # The public socket stays the controller's: requests wait for the new HAProxy.
    status, _, body = call(ctl, "/fn/hello/", AUTH)
    assert status == 200, body
    assert haproxy_pid(ctl) != pid
    before = served_by_haproxy(ctl)
    wait_for(
        lambda: call(ctl, "/fn/hello/", AUTH)[0] == 200 and served_by_haproxy(ctl) > before,
        30,
        "routes told to the new HAProxy",
    )
    assert "HAProxy restarted" in ctl.log_path.read_text()
