"""Which of a handler's response headers the server lets through."""

from __future__ import annotations

import pytest

from tickrun.triggers.http.headers import is_hop_by_hop, response_headers, wire_safe


@pytest.mark.parametrize(
    "name",
    [
        "Content-Length",
        "content-length",
        "Transfer-Encoding",
        "Connection",
        "Keep-Alive",
        "Upgrade",
        "TE",
        "Trailer",
        "Proxy-Authorization",
        "proxy-connection",
        "Proxy-Authenticate",
    ],
)
def test_framing_and_hop_by_hop_headers_never_pass(name: str) -> None:
    assert is_hop_by_hop(name)
    assert response_headers({name: "1", "X-Kept": "v"}) == ({"X-Kept": "v"}, [])


def test_the_servers_own_headers_are_not_taken_from_the_handler() -> None:
    kept, dropped = response_headers(
        {"X-Request-Id": "a", "x-request-id": "b", "Content-Type": "x/y", "Host": "h", "h1": "v1"}
    )
    assert kept == {"Host": "h", "h1": "v1"} and dropped == []


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("X-Split", "a\r\nSet-Cookie: x=1"),
        ("X-Lf", "a\nb"),
        ("X-Nul", "a\x00b"),
        ("X-Del", "a\x7f"),
        ("X Space", "v"),
        ("X:Colon", "v"),
        ("", "v"),
        ("X-Surrogate", "caf\udce9"),  # an undecodable byte of a copied request header
        ("X-\u00e9", "v"),
    ],
)
def test_headers_the_wire_cannot_carry_are_dropped_and_named(name: str, value: str) -> None:
    assert not wire_safe(name, value)
    assert response_headers([(name, value), ("X-Ok", "fine")]) == ({"X-Ok": "fine"}, [name])


@pytest.mark.parametrize(
    "value", ["plain", "caf\u00e9", "tab\tinside", "", "\u0442\u0435\u0441\u0442"]
)
def test_text_values_pass(value: str) -> None:
    assert wire_safe("X-Text", value)
