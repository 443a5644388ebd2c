"""Which of a handler's response headers may reach the wire.

A handler's headers are data, not framing: Nuclio's own test function copies the request's
headers into its response, ``Content-Length`` included, and a length that disagrees with the body
corrupts every later response on a keep-alive connection (and a proxy's pool with it). The
server frames the body itself, so framing and hop-by-hop headers are dropped here, as is any
``X-Request-Id`` (the server sets its own) and ``Content-Type`` (the result's content type wins,
as in Nuclio). A header the wire cannot carry (control characters, a name that is not a token,
a value that is not text) is dropped too: it would otherwise fail the response after the handler
succeeded, or split it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from tickrun.functions.requestid import REQUEST_ID_HEADER

# RFC 9110 §7.6.1 (Connection and the headers it names), §6.1 framing, RFC 9112 §6.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "content-length",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
SERVER_SET = frozenset({"content-type", REQUEST_ID_HEADER.lower()})

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# Visible characters, space and tab (RFC 9110 field-value); no CR, LF, NUL or DEL.
_FORBIDDEN_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def is_hop_by_hop(name: str) -> bool:
    """True for framing and hop-by-hop header names, which no proxy or server copies through."""
    lower = name.lower()
    return lower in HOP_BY_HOP or lower.startswith("proxy-")


def wire_safe(name: str, value: str) -> bool:
    """True when ``name: value`` can be written as one header line as it is."""
    if not _TOKEN.match(name) or _FORBIDDEN_VALUE.search(value):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # surrogates: undecodable bytes of a copied request header
        return False
    return True


def response_headers(
    given: Mapping[str, str] | Iterable[tuple[str, str]],
) -> tuple[dict[str, str], list[str]]:
    """The handler's headers that may be sent, and the names of those dropped as unsafe.

    Framing, hop-by-hop and server-set headers are removed quietly (copying request headers is
    normal Nuclio practice); the second item names only headers that could not be written.
    """
    items = given.items() if isinstance(given, Mapping) else given
    kept: dict[str, str] = {}
    dropped: list[str] = []
    for name, value in items:
        lower = name.lower()
        if lower in SERVER_SET or is_hop_by_hop(lower):
            continue
        if not wire_safe(name, value):
            dropped.append(name)
            continue
        kept[name] = value
    return kept, dropped
