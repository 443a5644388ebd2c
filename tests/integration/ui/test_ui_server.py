"""The UI's server side against a real controller (process platform, a real Kafka broker) and a
real ``tickrun ui``: login cookie and CSRF, the page from the package, function metrics from the
replicas' /metrics, Kafka lag per partition, log follow; the local mode on a real runs store."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_controller_harness import TOKEN, ControllerProc, cleanup, wait_for
from tests.peers import KafkaBroker
from tests.peers.postgres import PostgresServer
from tests.support.kafka_functions import produce
from tests.support.lag_functions import LAG_HANDLER, lag_spec, spec_of, write_function
from tickrun.functions.runs import RunBatch, SqlRunDB, TrackingSettings, run_function
from tickrun.functions.runs.db.search import RunSearch
from tickrun.functions.runs.db.search_query import parse_query

pytestmark = [pytest.mark.kafka]

HTTP_HANDLER = """
def handler(context, event):
    body = event.body.decode() if isinstance(event.body, bytes) else str(event.body or "")
    print(f"handled {body}", flush=True)
    if body == "fail":
        raise ValueError("asked to fail")
    return "ok"
"""


class Browser:
    """urllib with a cookie jar: what a browser sends (the cookie, and the CSRF header)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any, dict[str, str]]:
        data = json.dumps(body).encode() if body is not None else None
        hdrs = {"Content-Type": "application/json"} if data is not None else {}
        req = urllib.request.Request(
            self.base + path, data=data, method=method, headers={**hdrs, **(headers or {})}
        )
        try:
            with self.opener.open(req, timeout=60) as resp:
                raw, status, rh = resp.read(), resp.status, dict(resp.headers.items())
        except urllib.error.HTTPError as exc:
            raw, status, rh = exc.read(), exc.code, dict(exc.headers.items())
        try:
            return status, json.loads(raw), rh
        except ValueError:
            return status, raw, rh


@pytest.fixture(scope="module")
def ctl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControllerProc]:
    env = dict(os.environ)
    env["TICKRUN_LAG_INTERVAL_S"] = "0.5"
    proc = ControllerProc(tmp_path_factory.mktemp("uictl") / "state", env).start()
    try:
        yield proc
    finally:
        cleanup(proc)


def test_login_cookie_csrf_and_the_packaged_page(ctl: ControllerProc) -> None:
    b = Browser(ctl.url)
    status, page, headers = b.call("GET", "/")
    assert status == 200 and b"<html" in page.lower() and b"app.js" in page
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    status, js, headers = b.call("GET", "/ui/static/app.js")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript")
    assert b.call("GET", "/ui/session")[0] == 401
    assert b.call("GET", "/api/functions")[0] == 401
    status, body, _ = b.call("POST", "/ui/login", {"token": "wrong"})
    assert status == 401 and TOKEN not in json.dumps(body)
    status, session, headers = b.call("POST", "/ui/login", {"token": TOKEN})
    assert status == 200 and "HttpOnly" in headers["Set-Cookie"]
    status, fns, _ = b.call("GET", "/api/functions")
    assert status == 200 and "functions" in fns
    # A write with the cookie alone is refused; with the CSRF token it reaches the handler.
    secret = {"data": {"k": "v"}}
    assert b.call("PUT", "/api/secrets/ui-test", secret)[0] == 403
    status, put, _ = b.call(
        "PUT", "/api/secrets/ui-test", secret, {"X-CSRF-Token": session["csrf"]}
    )
    assert status == 200 and put["keys"] == ["k"]
    assert b.call("POST", "/ui/logout", None, {"X-CSRF-Token": session["csrf"]})[0] == 200
    assert b.call("GET", "/api/functions")[0] == 401


def test_metrics_and_log_follow_of_a_process_function(ctl: ControllerProc, tmp_path: Path) -> None:
    folder = write_function(tmp_path, "uihttp", HTTP_HANDLER, {"minReplicas": 1})
    ctl.client.deploy(spec_of(folder), folder)
    ctl.client.wait_ready("uihttp", timeout_s=120)
    b = Browser(ctl.url)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    status, first, _ = b.call("GET", "/api/functions/uihttp/logs/follow?tail=50", None, auth)
    assert status == 200 and len(first["replicas"]) == 1
    for i in range(30):
        ctl.client.invoke("uihttp", method="POST", body=f"req-{i}".encode())
    for _ in range(3):
        ctl.client.invoke("uihttp", method="POST", body=b"fail")
    status, m, _ = b.call("GET", "/api/functions/uihttp/metrics?kafka=0", None, auth)
    assert status == 200, m
    assert m["totals"]["events"] >= 33
    assert m["replicas"] and all(r["scraped"] for r in m["replicas"])
    assert m["latency_ms"]["p50"] is not None and m["latency_ms"]["p99"] >= m["latency_ms"]["p50"]
    # Rates over the window since this first look: more requests now, a second look sees them.
    for i in range(20):
        ctl.client.invoke("uihttp", method="POST", body=f"more-{i}".encode())
    ctl.client.invoke("uihttp", method="POST", body=b"fail")
    status, m2, _ = b.call("GET", "/api/functions/uihttp/metrics?kafka=0", None, auth)
    assert m2["request_rate"] > 0 and 0 < m2["error_rate"] < 0.5
    # Follow: the lines written since the cursor, and a long poll that returns on a new line.
    status, nxt, _ = b.call(
        "GET", f"/api/functions/uihttp/logs/follow?cursor={first['cursor']}", None, auth
    )
    lines = [ln for r in nxt["replicas"] for ln in r["lines"]]
    assert any("handled req-29" in ln for ln in lines), lines[-5:]
    ctl.client.invoke("uihttp", method="POST", body=b"marker-xyz")
    status, later, _ = b.call(
        "GET", f"/api/functions/uihttp/logs/follow?cursor={nxt['cursor']}&wait=10", None, auth
    )
    lines = [ln for r in later["replicas"] for ln in r["lines"]]
    assert any("handled marker-xyz" in ln for ln in lines) and not any(
        "req-29" in ln for ln in lines
    )
    assert b.call("GET", "/api/functions/uihttp/logs/follow?cursor=%%%", None, auth)[0] == 400
    assert b.call("GET", "/api/functions/ghost/metrics", None, auth)[0] == 404


def test_kafka_lag_per_partition(
    ctl: ControllerProc, kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    brokers = kafka_broker.bootstrap_servers
    topic, group = "ui-lag", "ui-lag-g"
    kafka_broker.create_topic(topic, partitions=3)
    # One slow consumer: the records wait in their partitions long enough to be seen.
    spec = lag_spec(brokers, topic, group, sleep_s=0.2, minReplicas=1, maxReplicas=1)
    folder = write_function(tmp_path, "uilag", LAG_HANDLER, spec)
    ctl.client.deploy(spec_of(folder), folder)
    ctl.client.wait_ready("uilag", timeout_s=120)
    produce(brokers, topic, ({"i": i} for i in range(150)), partition_of=lambda i: i % 3)
    b = Browser(ctl.url)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    status, m, _ = b.call("GET", "/api/functions/uilag/metrics", None, auth)
    assert status == 200, m
    (trigger,) = m["kafka"]
    assert trigger["group"] == group and trigger["topics"] == [topic]
    parts = trigger["partitions"]
    assert [p["partition"] for p in parts] == [0, 1, 2]
    assert [p["end"] for p in parts] == [50, 50, 50]
    assert trigger["lag"] == sum(p["lag"] for p in parts) and trigger["lag"] > 0

    # It drains: the per-partition lag falls as the consumer commits.
    def drained_some() -> bool:
        _, again, _ = b.call("GET", "/api/functions/uilag/metrics", None, auth)
        return bool(
            again["kafka"][0]["lag"] is not None and again["kafka"][0]["lag"] < trigger["lag"]
        )

    wait_for(drained_some, 60, "the lag falls")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_tickrun_ui_local_mode(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {**os.environ, "TICKRUN_HOME": str(home)}
    for var in ("TICKRUN_CONTROLLER_URL", "TICKRUN_DB_URL", "TICKRUN_ARTIFACT_PATH"):
        env.pop(var, None)
    settings = TrackingSettings.from_env(env)

    def job(context: Any, lr: float = 0.1) -> None:
        context.log_result("score", 1.0 - lr)

    runs = [
        run_function(job, params={"lr": lr}, project="local", settings=settings)
        for lr in (0.1, 0.3)
    ]
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tickrun", "ui", "--home", str(home), "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        b = Browser(f"http://127.0.0.1:{port}")

        def up() -> bool:
            try:
                return b.call("GET", "/ui/session")[0] == 200
            except OSError:
                return False

        wait_for(up, 30, "tickrun ui answers")
        assert b.call("GET", "/ui/session")[1]["mode"] == "local"
        status, page, _ = b.call("GET", "/")
        assert status == 200 and b"app.js" in page
        status, body, _ = b.call("GET", "/api/runs?project=local&sort=params.lr&order=asc")
        assert [r["uid"] for r in body["runs"]] == [runs[0].uid, runs[1].uid]
        assert body["columns"] == {"params": ["lr"], "results": ["score"]}
        status, body, _ = b.call("GET", "/api/functions")
        assert status == 503 and body["error"] == "NoController"
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    assert b"Traceback" not in out, out[-2000:]


@pytest.mark.postgres
def test_runs_search_on_postgres(postgres: PostgresServer) -> None:
    """The same search on PostgreSQL: filters, text (ILIKE there), sort with missing keys."""
    url = postgres.create_database(f"uiruns_{uuid.uuid4().hex[:12]}")
    db = SqlRunDB(url)
    try:
        t0 = 1_700_000_000.0
        runs = [
            {
                "uid": f"p{i:02d}",
                "project": "pg",
                "name": f"Train-{'XGB' if i % 2 else 'mlp'}-{i}",
                "state": "completed",
                "params": {"lr": 0.01 * (i + 1), "model": "xgb" if i % 2 else "mlp"},
                "results": {"acc": 0.5 + i / 100} if i < 10 else {},
                "labels": {"owner": f"o{i % 3}"},
                "created_at": t0 + i,
                "updated_at": t0 + i,
            }
            for i in range(12)
        ]
        db.apply(RunBatch.model_validate({"runs": runs}))
        search = RunSearch(lambda: db.engine)

        def uids(*pairs: tuple[str, str]) -> list[str]:
            return [r["uid"] for r in search.search(parse_query(pairs)).runs]

        assert uids(("sort", "results.acc"), ("limit", "3")) == ["p09", "p08", "p07"]
        assert uids(("sort", "results.acc"), ("limit", "3"), ("offset", "9")) == [
            "p00",
            "p11",
            "p10",
        ]
        assert uids(("q", "xgb-1"), ("limit", "50")) == ["p11", "p01"]  # ILIKE: any case
        assert uids(("param.lr", "gt:0.095"), ("label", "owner=o0")) == ["p09"]
        page = search.search(parse_query([("param.model", "mlp"), ("limit", "2")]))
        assert page.total == 6 and page.params == ["lr", "model"]
    finally:
        db.close()


def _post_from(source: str, url: str, path: str, body: dict[str, Any]) -> tuple[int, Any, Any]:
    """POST from a chosen loopback source address (another client, as the controller sees it)."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(
        parts.hostname or "127.0.0.1", parts.port, timeout=30, source_address=(source, 0)
    )
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read()), resp.headers
    finally:
        conn.close()


def test_wrong_logins_are_limited_per_address(tmp_path: Path) -> None:
    """A real controller: 10 wrong tokens from one address, then 429 with Retry-After for the
    login and the API alike; another address still logs in."""
    own = ControllerProc(tmp_path / "state", dict(os.environ)).start()
    try:
        guesser = Browser(own.url)
        for _ in range(10):
            status, _, _ = guesser.call("POST", "/ui/login", {"token": "guess"})
            assert status == 401
        status, body, headers = guesser.call("POST", "/ui/login", {"token": TOKEN})
        assert status == 429 and body["error"] == "TooManyAttemptsError"
        assert 1 <= int(headers["Retry-After"]) <= 60
        status, _, _ = guesser.call(
            "GET", "/api/functions", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert status == 429
        status, body, _ = _post_from("127.0.0.2", own.url, "/ui/login", {"token": TOKEN})
        assert status == 200 and body["mode"] == "controller"
        assert "too many wrong tokens" in own.log_path.read_text()
    finally:
        own.stop()  # nothing deployed (and this address may not call the API for a minute)
