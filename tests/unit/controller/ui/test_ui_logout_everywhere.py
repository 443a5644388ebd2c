"""Logout holds on every controller replica sharing one store, and across a restart: the revoked
session is kept in the store (``ui_revoked_sessions``) and read by each process's signer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from tickrun.controller.app import create_app
from tickrun.controller.settings import Settings
from tickrun.controller.store import Store
from tickrun.controller.ui.session import COOKIE_NAME, SessionSigner

TOKEN = "shared-token"


@asynccontextmanager
async def replica(tmp_path: Path, name: str, db_url: str) -> AsyncIterator[TestClient]:
    """One controller app with its own state dir on the shared database."""
    settings = Settings(
        state_dir=tmp_path / name, cache_dir=tmp_path / "cache", token=TOKEN, db_url=db_url
    )
    async with TestClient(TestServer(create_app(settings))) as c:
        yield c


async def _status_with(client: TestClient, cookie: str) -> int:
    resp = await client.get("/api/functions", headers={"Cookie": f"{COOKIE_NAME}={cookie}"})
    return resp.status


async def _eventually(check: Callable[[], object], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met")
        await asyncio.sleep(0.05)


async def test_logout_on_one_replica_holds_on_the_other_and_after_a_restart(
    tmp_path: Path,
) -> None:
    db_url = f"sqlite:///{tmp_path / 'shared.db'}"
    async with replica(tmp_path, "a", db_url) as a, replica(tmp_path, "b", db_url) as b:
        login = await a.post("/ui/login", json={"token": TOKEN})
        assert login.status == 200
        csrf = (await login.json())["csrf"]
        cookie = login.cookies[COOKIE_NAME].value
        other = (await a.post("/ui/login", json={"token": TOKEN})).cookies[COOKIE_NAME].value
        a.session.cookie_jar.clear()  # each request names its cookie itself
        assert await _status_with(b, cookie) == 200  # any replica accepts the cookie
        out = await a.post(
            "/ui/logout",
            headers={"Cookie": f"{COOKIE_NAME}={cookie}", "X-CSRF-Token": csrf},
        )
        assert out.status == 200
        assert await _status_with(a, cookie) == 401  # at once where it was logged out

        async def refused_on_b() -> bool:
            return await _status_with(b, cookie) == 401

        await _eventually(refused_on_b)  # within the refresh interval (about a second)
        assert await _status_with(b, other) == 200  # only that session ended
    # A restarted controller reads the revocation back.
    async with replica(tmp_path, "c", db_url) as c:
        assert await _status_with(c, cookie) == 401
        assert await _status_with(c, other) == 200


def test_store_keeps_revocations_until_the_cookie_expires(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'state.db'}")
    store.open()
    try:
        now = 1_000_000.0
        store.revoke_session("old", now + 10, now)
        store.revoke_session("new", now + 3600, now)
        store.revoke_session("new", now + 3600, now)  # twice (two logouts at once): one row
        assert store.revoked_sessions(now) == {"old": now + 10, "new": now + 3600}
        assert store.revoked_sessions(now + 20) == {"new": now + 3600}  # expired: not listed
        store.revoke_session("later", now + 7200, now + 20)  # and pruned on the next write
        from sqlalchemy import text

        with store.session() as s:
            left = set(s.execute(text("SELECT nonce FROM ui_revoked_sessions")).scalars())
        assert left == {"new", "later"}
    finally:
        store.close()


def test_signer_reads_shared_revocations_at_most_each_interval(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    one, two = Store(url), Store(url)
    one.open()
    two.open()
    tick = [0.0]
    try:
        a = SessionSigner(TOKEN, revocations=one, refresh_s=1.0, clock=lambda: tick[0])
        b = SessionSigner(TOKEN, revocations=two, refresh_s=1.0, clock=lambda: tick[0])
        value, sess = a.issue()
        assert b.check(value) is not None  # b has read the (empty) revocations now
        a.revoke(sess)
        assert a.check(value) is None
        tick[0] += 0.5
        assert b.check(value) is not None  # b's copy is half a second old: not read again
        tick[0] += 0.6
        assert b.check(value) is None  # read again after the interval
        fresh = SessionSigner(TOKEN, revocations=two)  # a restarted process
        assert fresh.check(value) is None
    finally:
        one.close()
        two.close()


def test_a_store_outage_keeps_the_revocations_read_last(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'state.db'}")
    store.open()
    tick = [0.0]
    signer = SessionSigner(TOKEN, revocations=store, refresh_s=1.0, clock=lambda: tick[0])
    value, sess = signer.issue()
    kept, _ = signer.issue()
    signer.revoke(sess)
    other = SessionSigner(TOKEN, revocations=store, refresh_s=1.0, clock=lambda: tick[0])
    assert other.check(value) is None  # read from the store
    store.close()  # the store goes away: checks go on with the copy, without raising
    tick[0] += 5
    assert other.check(value) is None
    assert other.check(kept) is not None
