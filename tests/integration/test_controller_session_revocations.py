"""Revoked web UI sessions on a real PostgreSQL store shared by two controller processes'
stores: a logout through one is refused through the other, expired ones are pruned, and a
double logout (two replicas at once) leaves one row."""

from __future__ import annotations

import time
import uuid

import pytest
from sqlalchemy import text

from tests.peers.postgres import PostgresServer
from tickrun.controller.store import Store
from tickrun.controller.ui.session import SessionSigner

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
