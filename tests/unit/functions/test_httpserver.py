"""The hardened server's pieces that need no socket: limits, log budget, error reasons."""

from __future__ import annotations

import logging
import resource

import pytest
from aiohttp import http_exceptions
from aiohttp.test_utils import make_mocked_request

from tickrun.functions import httpserver, httpserver_guard
from tickrun.functions.httpserver import short_reason
from tickrun.functions.httpserver_guard import connection_cap


def test_the_connection_cap_never_exceeds_the_descriptor_limit() -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    by_fds = max(httpserver_guard.MIN_CONNECTIONS, soft - httpserver_guard.FD_RESERVE)
    assert connection_cap(None) == by_fds
    assert connection_cap(5) == min(5, by_fds)
    assert connection_cap(10**9) == by_fds
    # A connection spliced to an upstream holds two descriptors; never below a usable minimum.
    assert connection_cap(1000, fds_per_connection=2, soft_fd_limit=256) == 96
    assert connection_cap(None, soft_fd_limit=10) == httpserver_guard.MIN_CONNECTIONS
    assert connection_cap(50, soft_fd_limit=resource.RLIM_INFINITY) == 50


def test_warnings_past_the_budget_are_counted_into_the_next_line(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    budget = httpserver._Budget(3)
    monkeypatch.setattr(httpserver, "_WARNINGS", budget)
    now = [1000.0]
    monkeypatch.setattr(httpserver.time, "monotonic", lambda: now[0])
    caplog.set_level(logging.WARNING, logger=httpserver.__name__)
    for _ in range(10):
        httpserver.warn_once("malformed request", status=400)
    assert len(caplog.records) == 3 and budget.suppressed == 7
    now[0] += 1.0
    httpserver.warn_once("malformed request", status=400)
    assert len(caplog.records) == 4
    assert getattr(caplog.records[-1], "suppressed", None) == 7 and budget.suppressed == 0


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (http_exceptions.BadStatusLine("GET /s3cr3t\x00 HTTP/1.1"), "invalid request line"),
        (http_exceptions.InvalidHeader(b"Authorization: Bearer s3cr3t"), "invalid header"),
        (http_exceptions.BadHttpMethod("G\x00T s3cr3t"), "invalid method"),
        (http_exceptions.LineTooLong("x" * 9000, "8190"), "request line or header too long"),
        (http_exceptions.BadHttpMessage("Authorization value bad"), "malformed header"),
        (
            http_exceptions.BadHttpMessage("Invalid header value char:\n\n  b's3cr3t'\n  ^"),
            "Invalid header value char",
        ),
        (
            http_exceptions.BadHttpMessage(
                "Transfer-Encoding can't be present with Content-Length"
            ),
            "Transfer-Encoding can't be present with Content-Length",
        ),
        (http_exceptions.BadHttpMessage("Unexpected value 's3cr3t'"), "Unexpected value"),
        (None, "malformed request"),
    ],
)
def test_reasons_never_carry_the_request(exc: BaseException | None, expected: str) -> None:
    reason = short_reason(exc)
    assert reason == expected
    assert "s3cr3t" not in reason and len(reason) <= 120


def test_a_requests_id_is_minted_once_and_kept_by_a_clone() -> None:
    sane = make_mocked_request("GET", "/", headers={"X-Request-Id": "caller-1.a:b"})
    assert httpserver.request_id_of(sane) == "caller-1.a:b"

    insane = make_mocked_request("GET", "/", headers={"X-Request-Id": "bad id\twith spaces"})
    minted = httpserver.request_id_of(insane)
    assert minted != "bad id\twith spaces" and len(minted) == 22
    assert httpserver.request_id_of(insane) == minted  # one id per request, not per call
    assert insane[httpserver.REQUEST_ID] == minted  # where aiohttp's mapping API finds it
    assert httpserver.request_id_of(insane.clone()) == minted

    other = make_mocked_request("GET", "/")
    assert httpserver.request_id_of(other) not in (minted, "")
