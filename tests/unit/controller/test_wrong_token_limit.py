"""Wrong tokens are limited per client address: the bearer check and the UI's login share one
budget (controller/auth.py); 429 with Retry-After; a right token resets; bounded memory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tickrun.controller.app import create_app
from tickrun.controller.auth import LIMITER, WrongTokenLimiter, client_key
from tickrun.controller.settings import Settings

TOKEN = "the-right-token"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_limit_window_and_reset() -> None:
    clock = Clock()
    lim = WrongTokenLimiter(limit=3, window_s=60, clock=clock)
    lim.failed("a")  # t=1000
    clock.now += 20
    lim.failed("a")  # t=1020
    assert lim.retry_after("a") is None
    clock.now += 20
    lim.failed("a")  # t=1040: the third within a minute
    assert lim.retry_after("a") == 20  # until the first is a minute old
    assert lim.retry_after("b") is None  # per address
    clock.now += 19.5
    assert lim.retry_after("a") == 1
    clock.now += 1
    assert lim.retry_after("a") is None  # the oldest left the window: one more try
    lim.failed("a")
    assert lim.retry_after("a") == 20  # the next oldest (t=1020) is still in the window
    lim.succeeded("a")
    assert lim.retry_after("a") is None
    for _ in range(3):
        lim.failed("a")
    clock.now += 61
    assert lim.retry_after("a") is None


def test_memory_is_bounded_and_stale_addresses_forgotten() -> None:
    clock = Clock()
    lim = WrongTokenLimiter(limit=3, window_s=60, max_clients=100, clock=clock)
    for i in range(5000):
        lim.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(lim) == 100
    clock.now += 61
    lim.failed("192.0.2.1")
    assert len(lim) == 1


def test_client_keys() -> None:
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::7")
    assert client_key("2001:db8:1:2::1") != client_key("2001:db8:1:3::1")
    assert client_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert client_key("192.0.2.7") == "192.0.2.7"
    assert client_key(None) == "unknown"


@pytest.fixture
async def app_clock(tmp_path: Path) -> AsyncIterator[tuple[TestClient, Clock]]:
    settings = Settings(state_dir=tmp_path / "state", cache_dir=tmp_path / "cache", token=TOKEN)
    app = create_app(settings)
    clock = Clock()
    app[LIMITER] = WrongTokenLimiter(clock=clock)
    async with TestClient(TestServer(app)) as c:
        yield c, clock


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_wrong_bearer_tokens_get_429_then_recover(
    app_clock: tuple[TestClient, Clock],
) -> None:
    client, clock = app_clock
    for _ in range(10):
        resp = await client.get("/api/version", headers=_bearer("guess"))
        assert resp.status == 401
    resp = await client.get("/api/version", headers=_bearer("guess"))
    assert resp.status == 429
    assert resp.headers["Retry-After"] == "60"
    body = await resp.json()
    assert body["error"] == "TooManyAttemptsError" and body["retry_after_s"] == 60
    assert "request_id" in body
    # The right token is refused too while the address is (no oracle for a guesser) ...
    assert (await client.get("/api/version", headers=_bearer(TOKEN))).status == 429
    # ... and so is the UI's login: one budget for both.
    login = await client.post("/ui/login", json={"token": TOKEN})
    assert login.status == 429 and login.headers["Retry-After"] == "60"
    clock.now += 61
    assert (await client.get("/api/version", headers=_bearer(TOKEN))).status == 200


async def test_a_right_token_resets_and_a_missing_one_is_not_counted(
    app_clock: tuple[TestClient, Clock],
) -> None:
    client, _clock = app_clock
    for _ in range(30):  # no token at all: not a guess
        assert (await client.get("/api/functions")).status == 401
    for _ in range(9):
        assert (await client.get("/api/version", headers=_bearer("guess"))).status == 401
    assert (await client.get("/api/version", headers=_bearer(TOKEN))).status == 200
    for _ in range(9):
        assert (await client.get("/api/version", headers=_bearer("guess"))).status == 401
    assert (await client.get("/api/version", headers=_bearer(TOKEN))).status == 200


async def test_wrong_logins_get_429_and_a_login_resets(
    app_clock: tuple[TestClient, Clock],
) -> None:
    client, clock = app_clock
    for _ in range(9):
        assert (await client.post("/ui/login", json={"token": "guess"})).status == 401
    ok = await client.post("/ui/login", json={"token": TOKEN})
    assert ok.status == 200  # resets
    for _ in range(10):
        assert (await client.post("/ui/login", data={"token": "guess"})).status == 401
    refused = await client.post("/ui/login", json={"token": TOKEN})
    assert refused.status == 429 and int(refused.headers["Retry-After"]) == 60
    assert "Set-Cookie" not in refused.headers
    # The API's bearer check shares the budget.
    assert (await client.get("/api/version", headers=_bearer(TOKEN))).status == 429
    clock.now += 30
    assert (await client.post("/ui/login", json={"token": TOKEN})).headers["Retry-After"] == "30"
    clock.now += 31
    assert (await client.post("/ui/login", json={"token": TOKEN})).status == 200


def test_refusals_are_logged_at_most_every_ten_seconds(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    lim = WrongTokenLimiter(limit=2, window_s=60, clock=clock)
    with caplog.at_level("WARNING", logger="tickrun.controller.auth"):
        for i in range(500):  # a flood from many addresses
            lim.failed(f"192.0.2.{i % 250}")
            lim.failed(f"192.0.2.{i % 250}")
        clock.now += 11
        lim.failed("198.51.100.1")
        lim.failed("198.51.100.1")
    lines = [r for r in caplog.records if "too many wrong tokens" in r.getMessage()]
    assert len(lines) == 2
    assert lines[1].others > 0  # type: ignore[attr-defined]
