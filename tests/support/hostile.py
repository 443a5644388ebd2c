"""Malformed and hostile raw HTTP requests, and a bounded sender that records what came back.

``generate()`` builds at least ``count`` requests (deterministic for a seed) as raw bytes: bad
methods and request lines, odd header sizes, CR/LF injection, Content-Length/Transfer-Encoding
combinations, chunked garbage, oversized and truncated bodies, invalid UTF-8, deeply nested
JSON, huge integers, path traversal, non-latin-1 and duplicated ``Authorization`` headers and
out-of-range numbers in query parameters. ``send()`` sends them over loopback with a few dozen
connections at a time and returns one :class:`Outcome` each (a status, or how the connection
ended). The same functions serve any target: a replica, the controller API (pass ``auth`` so
requests get past the token check), ``/fn/<name>`` (``prefix``) or a function port.

    reqs = hostile.generate(paths=["/api/functions"], auth="Bearer t0k3n")
    outcomes = hostile.send(reqs, "127.0.0.1", port)
    print(hostile.summary(outcomes))
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .rawhttp import CRLF, read_response

# What a response body must never show: a traceback or the layout of the serving machine.
INTERNAL_MARKERS = (
    b"Traceback",
    b'File "',
    b'.py"',
    b"site-packages",
    b"/work/",
    b"/usr/lib/python",
    b"/root/",
)


@dataclass(frozen=True, slots=True)
class HostileRequest:
    kind: str  # the category, for summaries
    raw: bytes
    head: bool = False  # a HEAD request: the answer has no body whatever its headers say
    pause_at: int = 0  # the sender pauses after this many bytes (the headers) when not 0


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: str
    status: int | None  # None: no status line came back
    ended: str | None = None  # without one: "closed", "reset", "timeout" or "refused"
    body: bytes = b""

    @property
    def label(self) -> str:
        return str(self.status) if self.status is not None else str(self.ended)


def leaks(body: bytes) -> list[str]:
    """The internal markers (traceback, paths) found in a response body."""
    return [m.decode() for m in INTERNAL_MARKERS if m in body]


def summary(outcomes: Iterable[Outcome]) -> str:
    counts = Counter(o.label for o in outcomes)
    total = sum(counts.values())
    return f"{total} hostile requests: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))


# --- generation ----------------------------------------------------------------------------

_METHODS = (b"GET", b"POST", b"PUT", b"DELETE", b"PATCH")
_BAD_METHODS = (
    b"",
    b"GE T",
    b"get",
    b"G\x00T",
    b"GET\t",
    b"P\xc3\x96ST",
    b"\xff\xfe",
    b"<script>",
    b"M" * 1000,
    b"CONNECT",
    b"TRACE",
    b"PRI",
    b"GET/",
    b"POST\r\nX: y",
    b"\x16\x03\x01\x02\x00\x01",  # a TLS ClientHello to a plain-HTTP port
    b"OPTIONS",
    b"HEAD",
    b"PROPFIND",
    b"M-SEARCH",
    b"1234",
)
_TRAVERSALS = (
    "/../../etc/passwd",
    "/..%2f..%2fetc%2fpasswd",
    "/%2e%2e/%2e%2e/etc/passwd",
    "/%252e%252e/%252e%252e/etc/passwd",
    "/..\\..\\etc\\passwd",
    "/%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd",
    "/....//....//etc/passwd",
    "//etc/passwd",
    "/./././etc/passwd",
    "/x/%00/../../etc/passwd",
    "/%2F%2Fetc%2Fpasswd",
    "/..;/..;/etc/passwd",
    "/%u002e%u002e/etc/passwd",
    "/../../../../../../../../../../../../token",
    "/../tickrun.db",
    "/..%00/etc/shadow",
)
_QUERIES = (
    "limit=99999999999999999999999999",
    "limit=-1",
    "limit=1e309",
    "limit=NaN",
    "limit=Infinity",
    "limit=0x7fffffffffffffff",
    "offset=-9223372036854775809",
    "offset=9223372036854775808",
    "limit=%00",
    "limit=%ff%fe",
    "limit=" + "9" * 5000,
    "since=99999999999999999999-01-01",
    "page=&page=2&page=x",
    "limit=1&limit=2&limit=-3",
    "a=%0d%0aSet-Cookie:%20x=1",
    "q=" + "%" * 50,
    "tail=18446744073709551616",
    "replicas=-5",
)
_AUTHS = (
    "Authorization: Bearer \xe2\x80\x94\xd1\x82\xd0\xb5\xd1\x81\xd1\x82",  # UTF-8: not latin-1
    "Authorization: Bearer \xff\xfe\xfd",
    "Authorization: Basic \xa4\xa4==",
    "Authorization: Basic !!!notbase64!!!",
    "Authorization: Basic " + "QQ" * 5000,
    "Authorization: Bearer",
    "Authorization:",
    "Authorization: Bearer a\x01b",
    "Authorization: bearer " + "x" * 8000,
)


def _line(method: bytes, target: bytes, version: bytes = b"HTTP/1.1") -> bytes:
    return method + b" " + target + b" " + version + CRLF


class _Builder:
    def __init__(self, paths: Sequence[str], prefix: str, auth: str | None, host: str) -> None:
        self.paths = [(prefix + p).encode("utf-8", "surrogateescape") for p in paths]
        self.prefix = prefix.encode()
        self.auth = auth
        self.host = host.encode()

    def headers(self, extra: Sequence[bytes] = (), *, with_auth: bool = True) -> bytes:
        lines = [b"Host: " + self.host]
        if with_auth and self.auth:
            lines.append(b"Authorization: " + self.auth.encode("latin-1"))
        return CRLF.join([*lines, *extra]) + CRLF + CRLF

    def req(
        self,
        kind: str,
        method: bytes,
        target: bytes,
        extra: Sequence[bytes] = (),
        body: bytes = b"",
        *,
        with_auth: bool = True,
        version: bytes = b"HTTP/1.1",
    ) -> HostileRequest:
        raw = _line(method, target, version) + self.headers(extra, with_auth=with_auth) + body
        return HostileRequest(kind, raw, head=method == b"HEAD")

    def with_body(
        self, kind: str, method: bytes, target: bytes, body: bytes, ctype: bytes, *more: bytes
    ) -> HostileRequest:
        extra = [b"Content-Type: " + ctype, b"Content-Length: %d" % len(body), *more]
        return self.req(kind, method, target, extra, body)


def _deep_json(rng: random.Random) -> bytes:
    depth = rng.choice((1025, 2000, 5000, 100_000))
    shape = rng.choice(("list", "dict", "mixed", "unclosed"))
    if shape == "list":
        return b"[" * depth + b"]" * depth
    if shape == "dict":
        return b'{"a":' * depth + b"1" + b"}" * depth
    if shape == "mixed":
        return b'[{"k":' * (depth // 2) + b"0" + b"}]" * (depth // 2)
    return b"[" * depth


def _huge_int(rng: random.Random) -> bytes:
    digits = b"7" * rng.choice((4301, 5000, 20_000, 200_000))
    return rng.choice(
        (digits, b"-" + digits, b'{"n":' + digits + b"}", b"[1," + digits + b"]", b"1e" + digits)
    )


def _bad_utf8(rng: random.Random) -> bytes:
    junk = rng.choice((b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80"))
    return rng.choice((b'{"s": "' + junk + b'"}', junk + b"{}", b'["a", "' + junk * 50 + b'"]'))


def _chunked_garbage(rng: random.Random) -> bytes:
    return rng.choice(
        (
            b"zz\r\nhello\r\n0\r\n\r\n",
            b"-5\r\nhello\r\n0\r\n\r\n",
            b"ffffffffffffffffffff\r\nx\r\n0\r\n\r\n",
            b"5\r\nhelloXX\r\n0\r\n\r\n",
            b"5;ext=" + b"e" * 9000 + b"\r\nhello\r\n0\r\n\r\n",
            b"5\nhello\n0\n\n",
            b"3\r\nabc\r\n0\r\nX-Trailer: \x00\r\n\r\n",
            b"3\r\nabc\r\n0\r\nContent-Length: 5\r\n\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b" 5\r\nhello\r\n0\r\n\r\n",
            b"5 \r\nhello\r\n0\r\n\r\n",
            b"\r\n\r\n",
            b"1\r\n\xff\r\n0\r\n\r\n",
            b"8000000000000000\r\n",
        )
    )


def _framing(b: _Builder, rng: random.Random, target: bytes) -> HostileRequest:
    body = b"hello"
    combos: list[list[bytes]] = [
        [b"Content-Length: 5", b"Transfer-Encoding: chunked"],
        [b"Transfer-Encoding: chunked", b"Content-Length: 5"],
        [b"Content-Length: 5", b"Content-Length: 6"],
        [b"Content-Length: 5", b"Content-Length: 5"],
        [b"Content-Length: 5, 5"],
        [b"Content-Length: -5"],
        [b"Content-Length: abc"],
        [b"Content-Length: +5"],
        [b"Content-Length: 0x5"],
        [b"Content-Length:  5 "],
        [b"Content-Length: 5\x00"],
        [b"Content-Length: 99999999999999999999999999"],
        [b"Content-Length: 10000000000"],
        [b"Transfer-Encoding: gzip"],
        [b"Transfer-Encoding: chunked, gzip"],
        [b"Transfer-Encoding: xchunked"],
        [b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"],
        [b"Transfer-Encoding : chunked"],
        [b"Transfer-Encoding:\tchunked"],
        [b"Transfer-Encoding: \x0bchunked"],
        [b"X: y", b" Transfer-Encoding: chunked"],  # obs-fold
        [b"Transfer-Encoding: identity"],
    ]
    extra = rng.choice(combos)
    chunked = any(b"chunked" in h for h in extra)
    payload = b"5\r\nhello\r\n0\r\n\r\n" if chunked else body
    version = rng.choice((b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0"))
    return b.req("cl-te", rng.choice(_METHODS[1:]), target, extra, payload, version=version)


def _case(b: _Builder, rng: random.Random, n: int) -> HostileRequest:
    """One hostile request; the category cycles so every one is well represented."""
    target = rng.choice(b.paths)
    method = rng.choice(_METHODS)
    category = n % 17
    if category == 0:
        m = rng.choice(_BAD_METHODS)
        return HostileRequest("method", _line(m, target) + b.headers(), head=m == b"HEAD")
    if category == 1:
        line = rng.choice(
            (
                method + b" " + target + b" HTTP/9.9\r\n",
                method + b" " + target + b" HTTP/1.1x\r\n",
                method + b" " + target + b"\r\n",
                method + b"  " + target + b"  HTTP/1.1\r\n",
                method + b"\t" + target + b"\tHTTP/1.1\r\n",
                method + b" http://evil.example" + target + b" HTTP/1.1\r\n",
                method + b" * HTTP/1.1\r\n",
                method
                + b" "
                + target
                + b"/"
                + b"a" * rng.choice((9000, 70_000))
                + b" HTTP/1.1\r\n",
                method + b" " + target + b" HTTP/1.1\n",
                method + b" " + target + b" HTTP/1.1\r\r\n",
                method + b" " + b"x" + target + b" HTTP/1.1\r\n",
                b"\r\n\r\n" + method + b" " + target + b" HTTP/1.1\r\n",
            )
        )
        return HostileRequest("request-line", line + b.headers(), head=False)
    if category == 2:
        size = rng.choice((100, 129, 500, 2000))
        many = [b"X-H%d: v" % i for i in range(size)]
        return b.req("many-headers", method, target, many)
    if category == 3:
        variants = (
            [b"X-Big: " + b"v" * rng.choice((8191, 9000, 65_536, 1 << 20))],
            [b"X-" + b"n" * rng.choice((8191, 20_000)) + b": v"],
            [b": no-name"],
            [b"NoColon"],
            [b"X-Space : v"],
            [b"X\x00Null: v"],
            [b"X-Ctl: a\x7fb"],
            [b"X-\xff\xfe: v"],
            [b"X-Latin: caf\xe9"],
            [b"X-Utf8: \xd1\x82\xd0\xb5\xd1\x81\xd1\x82"],
            [b"X-Fold: a", b"\tcontinued"],
            [b"Host: second.example"],
            [b"X-Request-Id: a", b"X-Request-Id: b"],
            [b"X-Request-Id: " + b"r" * 5000],
            [b"X-Request-Id: ../../etc"],
            [b"Content-Type: application/json; charset=utf-16"],
            [b"Content-Type: \xff/\xfe"],
            [b"Expect: 100-continue"],
            [b"Upgrade: websocket", b"Connection: Upgrade"],
            [b"Upgrade: h2c", b"Connection: Upgrade, HTTP2-Settings", b"HTTP2-Settings: AAMA"],
            [b"Connection: close, keep-alive, te"],
            [b"Cookie: " + b"c=1; " * 3000],
            [b"Accept-Encoding: " + b"gzip;q=1, " * 1000],
            [b"Range: bytes=0-0,-1," + b"1-2," * 2000],
        )
        return b.req("header-shape", method, target, rng.choice(variants))
    if category == 4:
        inj = rng.choice(
            (
                (b"/%0d%0aSet-Cookie:%20a=1", []),
                (b"/x\rSet-Cookie: a=1", []),
                (b"/x\nX: y", []),
                (b"/", [b"X-Request-Id: a\rSet-Cookie: x=1"]),
                (b"/", [b"X-A: a\r\nX-B: b\r"]),
                (b"/", [b"X-A: a\nInjected: 1"]),
                (b"/", [b"X-A: a\r \r\nInjected: 1"]),
                (b"/?q=%0d%0a%0d%0aHTTP/1.1%20200%20OK", []),
                (b"/%E5%98%8A%E5%98%8DSet-Cookie:a=1", []),
            )
        )
        return b.req("crlf", method, target.rstrip(b"/") + inj[0], inj[1])
    if category == 5:
        return _framing(b, rng, target)
    if category == 6:
        m = rng.choice(_METHODS[1:])
        extra = [b"Transfer-Encoding: chunked", b"Content-Type: application/json"]
        return b.req("chunked-garbage", m, target, extra, _chunked_garbage(rng))
    if category == 7:
        shape = rng.randrange(4)
        m = rng.choice(_METHODS[1:])
        if shape == 0:  # declared far past any limit, little sent: answered from the header
            return b.req("oversized", m, target, [b"Content-Length: 68719476736"], b"x" * 100)
        if shape == 1:  # truncated: fewer bytes than declared (the server's read timeout)
            return b.req("truncated", m, target, [b"Content-Length: 1000"], b"x" * 10)
        if shape == 2 and n % 3 == 0:  # a real multi-MB body
            return b.with_body("big-body", m, target, b"b" * (3 << 20), b"application/octet-stream")
        return b.with_body(
            "big-json", m, target, b'{"a":"' + b"x" * 100_000 + b'"}', b"application/json"
        )
    if category == 8:
        m = rng.choice(_METHODS[1:])
        return b.with_body("bad-utf8", m, target, _bad_utf8(rng), b"application/json")
    if category == 9:
        m = rng.choice(_METHODS[1:])
        return b.with_body("deep-json", m, target, _deep_json(rng), b"application/json")
    if category == 10:
        m = rng.choice(_METHODS[1:])
        return b.with_body("huge-int", m, target, _huge_int(rng), b"application/json")
    if category == 11:
        path = rng.choice(_TRAVERSALS).encode()
        return b.req("traversal", method, b.prefix + path)
    if category == 12:
        line = rng.choice(_AUTHS).encode("latin-1")
        if rng.random() < 0.5 and b.auth:  # a duplicate of a good header, before or after
            good = b"Authorization: " + b.auth.encode("latin-1")
            pair = [good, line] if rng.random() < 0.5 else [line, good]
            return b.req("auth", method, target, pair, with_auth=False)
        return b.req("auth", method, target, [line], with_auth=False)
    if category == 13:
        sep = b"&" if b"?" in target else b"?"
        query = rng.choice(_QUERIES).encode()
        return b.req("query", method, target + sep + query)
    if category == 14:
        path = target + b"/" + rng.choice((b"\xff\xfe", b"%ff%fe", b"caf\xc3\xa9", b"%c0%af"))
        return b.req("path-utf8", method, path)
    if category == 15:  # bodies with content types that decoders may trip over
        m = rng.choice(_METHODS[1:])
        ctype, body = rng.choice(
            (
                (b"application/json", b""),
                (b"application/json", b"null"),
                (b"application/json", b'{"a": NaN, "b": -Infinity}'),
                (b"application/json", b"1e99999"),
                (b"application/json", b'"\\ud800"'),
                (b"application/json; charset=latin-1", b'{"a": "\xe9"}'),
                (b"application/x-www-form-urlencoded", b"a=%ff&b=%00&c=" + b"9" * 5000),
                (b"multipart/form-data; boundary=", b"--\r\n\r\n--"),
                (b"multipart/form-data; boundary=x", b"--x\r\nContent-Disposition: form-data\r\n"),
                (b"application/yaml", b"a: &a [*a]"),
                (b"application/gzip", b"\x1f\x8b\x08\x00garbage"),
            )
        )
        if rng.random() < 0.4:  # a body its declared Content-Encoding cannot decode
            coding = rng.choice((b"gzip", b"deflate", b"br", b"zstd", b"x-unknown", b"gzip, gzip"))
            more = b"Content-Encoding: " + coding
            return b.with_body("content-encoding", m, target, body or b"junk", ctype, more)
        return b.with_body("content-type", m, target, body, ctype)
    # HTTP/1.0, HTTP/0.9-style and pipelined leftovers after a valid request
    variant = rng.randrange(3)
    if variant == 0:
        return HostileRequest("version", method + b" " + target + CRLF, head=False)
    if variant == 1:
        return b.req("version", method, target, version=b"HTTP/1.0")
    return b.req("pipelined", b"GET", target, [], b"\x00\x01garbage after the request\r\n\r\n")


def generate(
    *,
    paths: Sequence[str] = ("/",),
    prefix: str = "",
    auth: str | None = None,
    host: str = "localhost",
    count: int = 5000,
    seed: int = 11,
) -> list[HostileRequest]:
    """At least ``count`` hostile requests against ``prefix + path`` for each of ``paths``.

    ``auth`` (a whole header value, e.g. ``"Bearer …"``) goes on every request that does not
    tamper with ``Authorization`` itself, so authenticated endpoints parse the rest.
    """
    rng = random.Random(seed)
    b = _Builder(paths, prefix, auth, host)
    out = []
    for n in range(count):
        req = _case(b, rng, n)
        end = req.raw.find(b"\r\n\r\n") + 4
        if 4 <= end < len(req.raw) and rng.random() < 0.3:
            # The body after a pause: a server then meets its faults mid-request, not at parse.
            req = HostileRequest(req.kind, req.raw, head=req.head, pause_at=end)
        out.append(req)
    return out


# --- sending ---------------------------------------------------------------------------------

PAUSE_S = 0.05

_MAX_HEAD = 1 << 20


async def _send_one(
    req: HostileRequest,
    host: str,
    port: int,
    timeout_s: float,
    connect_timeout_s: float,
    source: str | None = None,
) -> Outcome:
    local = (source, 0) if source else None
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, limit=_MAX_HEAD, local_addr=local),
            connect_timeout_s,
        )
    except (OSError, TimeoutError):
        return Outcome(req.kind, None, "refused")

    async def _write() -> None:
        try:
            if req.pause_at:
                writer.write(req.raw[: req.pause_at])
                await writer.drain()
                await asyncio.sleep(PAUSE_S)
            writer.write(req.raw[req.pause_at :])
            await writer.drain()
        except (OSError, RuntimeError):
            pass  # the server answered early (413) and closed: read what it said

    sending = asyncio.create_task(_write())
    try:
        async with asyncio.timeout(timeout_s):
            resp = await read_response(reader, head=req.head)
        return Outcome(req.kind, resp.status, body=resp.body)
    except TimeoutError:
        return Outcome(req.kind, None, "timeout")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError):
        return Outcome(req.kind, None, "closed")
    except OSError:
        return Outcome(req.kind, None, "reset")
    finally:
        sending.cancel()
        writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), 1.0)


async def send_async(
    requests: Sequence[HostileRequest],
    host: str,
    port: int,
    *,
    concurrency: int = 32,
    timeout_s: float = 5.0,
    connect_timeout_s: float = 5.0,
    source: str | None = None,
) -> list[Outcome]:
    """Send each request on a connection of its own, ``concurrency`` at a time, in order;
    ``source``: the local address to send from (a server limiting per client address)."""
    sem = asyncio.Semaphore(concurrency)

    async def _bounded(req: HostileRequest) -> Outcome:
        async with sem:
            return await _send_one(req, host, port, timeout_s, connect_timeout_s, source)

    return list(await asyncio.gather(*(_bounded(r) for r in requests)))


def send(
    requests: Sequence[HostileRequest],
    host: str,
    port: int,
    *,
    concurrency: int = 32,
    timeout_s: float = 5.0,
    source: str | None = None,
) -> list[Outcome]:
    """:func:`send_async` from synchronous code (a test); returns one outcome per request."""
    return asyncio.run(
        send_async(
            requests, host, port, concurrency=concurrency, timeout_s=timeout_s, source=source
        )
    )


def kinds(requests: Iterable[HostileRequest]) -> Counter[str]:
    return Counter(r.kind for r in requests)
