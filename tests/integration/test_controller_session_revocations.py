"""Revoked web UI sessions on a real PostgreSQL store shared by two controller processes'
stores: a logout through one is refused through the other, expired ones are pruned, and a
double logout (two replicas at once) leaves one row."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from tests.integration.test_controller_harness import TOKEN, ControllerProc, wait_for
from tests.peers.postgres import PostgresServer
from tickrun.controller.store import Store
from tickrun.controller.ui.session import COOKIE_NAME, SessionSigner

pytestmark = pytest.mark.postgres


def test_revocations_shared_through_postgres(postgres: PostgresServer) -> None:
    url = postgres.create_database(f"revoke_{uuid.uuid4().hex[:12]}")
    one, two = Store(url), Store(url)
    one.open()
    two.open()
    tick = [0.0]
    try:
        a = SessionSigner("tok", revocations=one, refresh_s=1.0, clock=lambda: tick[0])
        b = SessionSigner("tok", revocations=two, refresh_s=1.0, clock=lambda: tick[0])
        value, sess = a.issue()
        kept_value, _kept = a.issue()
        assert b.check(value) is not None
        a.revoke(sess)
        b.revoke(sess)  # logged out on both at once: no error, one row
        tick[0] += 1.5
        assert b.check(value) is None and a.check(value) is None
        assert b.check(kept_value) is not None
        restarted = Store(url)  # a controller started later reads the revocation back
        restarted.open()
        try:
            fresh = SessionSigner("tok", revocations=restarted)
            assert fresh.check(value) is None and fresh.check(kept_value) is not None
        finally:
            restarted.close()
        now = time.time()
        one.revoke_session("expired-soon", now + 5, now)
        assert "expired-soon" in two.revoked_sessions(now)
        assert "expired-soon" not in two.revoked_sessions(now + 10)
        two.revoke_session("later", now + 3600, now + 10)  # prunes the expired row
        with one.session() as s:
            rows = list(s.execute(text("SELECT nonce FROM ui_revoked_sessions")).scalars())
        assert sorted(rows) == sorted([sess.nonce, "later"])
    finally:
        one.close()
        two.close()


def _call(url: str, path: str, **headers: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    req = urllib.request.Request(url + path, headers=headers, method="GET")
    return _send(req)


def _send(req: urllib.request.Request) -> tuple[int, dict[str, Any], dict[str, str]]:
    try:
        with urllib.request.urlopen(req, timeout=30) as res:
            return res.status, json.loads(res.read()), dict(res.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), dict(exc.headers)


def _post(url: str, path: str, body: dict[str, Any], **headers: str) -> tuple[Any, ...]:
    req = urllib.request.Request(
        url + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **headers},
        method="POST",
    )
    return _send(req)


def test_two_controller_processes_on_postgres_share_logouts(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    """Two controller replicas (processes) on one PostgreSQL store: a cookie logged out on one
    is refused by the other, and after both restart."""
    url = postgres.create_database(f"revoke_{uuid.uuid4().hex[:12]}")
    env = {**os.environ, "TICKRUN_DB_URL": url}
    a = ControllerProc(tmp_path / "a", env).start()
    b = ControllerProc(tmp_path / "b", env).start()
    try:
        status, body, headers = _post(a.url, "/ui/login", {"token": TOKEN})
        assert status == 200
        cookie = headers["Set-Cookie"].split(";", 1)[0]
        assert cookie.startswith(f"{COOKIE_NAME}=")
        assert _call(b.url, "/api/functions", Cookie=cookie)[0] == 200
        status, _, _ = _post(
            a.url, "/ui/logout", {}, Cookie=cookie, **{"X-CSRF-Token": body["csrf"]}
        )
        assert status == 200
        assert _call(a.url, "/api/functions", Cookie=cookie)[0] == 401
        wait_for(
            lambda: _call(b.url, "/api/functions", Cookie=cookie)[0] == 401,
            15,
            "the other controller to refuse the logged-out cookie",
        )
    finally:
        a.stop()
        b.stop()
    again = ControllerProc(tmp_path / "b", env).start()
    try:
        assert _call(again.url, "/api/functions", Cookie=cookie)[0] == 401
    finally:
        again.stop()
