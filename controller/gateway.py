"""The gateway: one stable URL per function (``/fn/<name>/…``), balanced over ready replicas.

Which replica (least in flight, round-robin tie-break), holding while a function comes up and
retrying a refused connection are the :class:`EndpointTable`'s (``endpoints.py``, shared with the
function port); this module is the HTTP side. Small bodies are buffered (cheaper than streaming
and replayable on another replica if a connection fails); large ones stream both ways.
Framing and hop-by-hop headers are dropped in both directions (each side frames its own body:
a copied Content-Length that disagrees with the body corrupts the connection). X-Request-Id is
the caller's (when sane) or minted, sent once to the replica and answered once; the controller's
token is never forwarded.
"""

from __future__ import annotations

import logging

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError
from multidict import CIMultiDict, CIMultiDictProxy

from tickrun.functions.errors import BadRequestError, NotFoundError
from tickrun.functions.httpserver import request_id_of
from tickrun.functions.requestid import REQUEST_ID_HEADER

from .endpoints import Endpoint, EndpointTable, Miss
from .store import Store
from .upstream import ConnectFailed, Upstream, UpstreamBroken

logger = logging.getLogger(__name__)

BUFFER_LIMIT = 1 << 20
# RFC 9110 §7.6.1 and framing (RFC 9112 §6); Proxy-* by prefix. Host and X-Request-Id are set
# by the gateway (and the response's id by the app), never copied.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        REQUEST_ID_HEADER.lower(),
    }
)
STRIP_REQUEST = HOP_BY_HOP | {"authorization"}


def end_to_end(
    headers: CIMultiDictProxy[str] | CIMultiDict[str], strip: frozenset[str] = HOP_BY_HOP
) -> CIMultiDict[str]:
    """``headers`` without framing and hop-by-hop ones (those a Connection header names too)."""
    dropped = strip
    if "Connection" in headers:  # most requests through a proxy send none: skip the parse
        dropped = strip.union(
            token.strip().lower()
            for value in headers.getall("Connection")
            for token in value.split(",")
        )
    out: CIMultiDict[str] = CIMultiDict()
    add = out.add
    for k, v in headers.items():
        low = k.lower()
        if low not in dropped and not low.startswith("proxy-"):
            add(k, v)
    return out


def _target(raw_path: str) -> str:
    """The request target after ``/fn/<name>``, as the caller encoded it (``/`` at least)."""
    path, sep, query = raw_path.partition("?")
    parts = path.split("/", 3)  # "", "fn", name, tail
    return "/" + (parts[3] if len(parts) > 3 else "") + sep + query


def _head_lines(headers: CIMultiDict[str], body: bytes | None) -> bytes:
    """The request head after its request line and Host (already filtered headers)."""
    lines = [f"{k}: {v}\r\n" for k, v in headers.items()]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("utf-8", "surrogateescape")


class Gateway:
    """Constructor does no I/O; :meth:`start` opens the upstream connection pool."""

    def __init__(
        self,
        endpoints: EndpointTable,
        store: Store,
        *,
        hold_timeout_s: float = 30.0,
        max_connections: int = 0,
    ) -> None:
        self.endpoints = endpoints
        self.store = store
        self.hold_timeout_s = hold_timeout_s
        # Upstream connections share the controller's descriptors with its clients (0: no cap).
        self.max_connections = max_connections
        # Buffered requests (most) go through the lean client; streamed bodies through aiohttp.
        self._session: aiohttp.ClientSession | None = None
        self._upstream = Upstream()
        self._addrs: dict[str, tuple[str, int]] = {}

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self.max_connections, keepalive_timeout=30, ttl_dns_cache=None
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            skip_auto_headers=("User-Agent",),
            cookie_jar=aiohttp.DummyCookieJar(),  # a proxy must not keep replicas' cookies
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=2.0),
        )

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        self._upstream.close()

    def _unavailable(self, name: str) -> web.Response:
        row = self.store.find_function(name)
        if row is None:
            raise NotFoundError(f"function {name!r} not found")
        detail = f"function {name!r} has no ready replica (state: {row.state}"
        detail += f"; {row.message})" if row.message else ")"
        detail += "; try again shortly or see `tickrun get function " + name + "`"
        return web.json_response(
            {"error": "NoReadyReplica", "detail": detail}, status=503, headers={"Retry-After": "1"}
        )

    async def handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        tail = request.match_info.get("tail", "")
        headers = end_to_end(request.headers, STRIP_REQUEST)
        headers[REQUEST_ID_HEADER] = request_id_of(request)
        headers["X-Forwarded-For"] = request.remote or ""
        headers["X-Forwarded-Prefix"] = f"/fn/{name}"
        body: bytes | aiohttp.StreamReader | None = None
        if request.body_exists:
            length = request.content_length
            body = (
                await request.read()
                if length is not None and length <= BUFFER_LIMIT
                else request.content
            )
        path = "/" + tail
        if request.query_string:
            path += "?" + request.query_string
        # Buffered (or no) bodies take the lean client, the target as the caller encoded it.
        lean = not isinstance(body, aiohttp.StreamReader)
        buffered = body if isinstance(body, bytes) else None
        start = f"{request.method} {_target(request.raw_path)} HTTP/1.1\r\nHost: "
        rest = _head_lines(headers, buffered) if lean else b""

        async def attempt(endpoint: Endpoint) -> web.StreamResponse | None:
            endpoint.in_flight += 1
            try:
                if lean:
                    return await self._forward_lean(request, endpoint, start, rest, buffered)
                return await self._forward(request, endpoint, path, headers, body)
            except (aiohttp.ClientConnectorError, ConnectFailed):
                return None  # refused: nothing was sent, so another replica may take it
            except UpstreamBroken:
                return self._broken(name, "UpstreamBroken")
            except aiohttp.ClientError as exc:
                return self._failed(name, exc)
            finally:
                endpoint.in_flight -= 1

        # A streamed body is read once: it cannot go to a second replica.
        replayable = isinstance(body, bytes | None)
        outcome = await self.endpoints.route(
            name, attempt, hold_timeout_s=self.hold_timeout_s, replayable=replayable
        )
        if not isinstance(outcome, Miss):
            return outcome
        if outcome.tried and not replayable:
            return web.json_response(
                {"error": "BadGateway", "detail": f"replica of {name!r} unreachable"}, status=502
            )
        if outcome.tried and self.store.find_function(name) is not None:
            return web.json_response(
                {"error": "BadGateway", "detail": f"no replica of {name!r} answered"}, status=502
            )
        return self._unavailable(name)

    def _failed(self, name: str, exc: aiohttp.ClientError) -> web.Response:
        """An exchange with a replica that broke after connecting: whose fault it was."""
        cause = exc.__cause__
        if isinstance(cause, RequestPayloadError | HttpProcessingError):
            # The caller's body was malformed (chunked garbage, a short Content-Length).
            raise BadRequestError(f"malformed request body ({type(cause).__name__})") from exc
        if isinstance(cause, ConnectionResetError) and cause.errno is None:
            raise cause  # the caller went away while its body was being forwarded
        return self._broken(name, type(exc).__name__)

    def _broken(self, name: str, reason: str) -> web.Response:
        logger.warning("replica exchange failed", extra={"function": name, "reason": reason})
        return web.json_response(
            {"error": "BadGateway", "detail": f"the replica of {name!r} broke off the exchange"},
            status=502,
        )

    def _addr(self, url: str) -> tuple[str, int]:
        addr = self._addrs.get(url)
        if addr is None:
            host, _, port = url.removeprefix("http://").rpartition(":")
            addr = self._addrs[url] = (host.strip("[]"), int(port))
        return addr

    async def _forward_lean(
        self,
        request: web.Request,
        endpoint: Endpoint,
        start: str,
        rest: bytes,
        body: bytes | None,
    ) -> web.StreamResponse:
        addr = self._addr(endpoint.url)
        head = (start + endpoint.url.removeprefix("http://") + "\r\n").encode() + rest
        reply, conn = await self._upstream.exchange(
            addr, head, body, head_request=request.method == "HEAD"
        )
        out_headers = end_to_end(reply.headers)
        if reply.body is not None:
            self._upstream.release(addr, conn)
            return web.Response(
                status=reply.status,
                reason=reply.reason or None,
                headers=out_headers,
                body=reply.body,
            )
        try:
            response = web.StreamResponse(
                status=reply.status, reason=reply.reason or None, headers=out_headers
            )
            if reply.length is not None:
                response.content_length = reply.length
            await response.prepare(request)
            try:
                async for chunk in self._upstream.stream(addr, conn):
                    await response.write(chunk)
            except UpstreamBroken as exc:
                # Mid-body: the caller's response is under way, only dropping it tells them.
                raise ConnectionResetError("the replica broke off the response") from exc
            await response.write_eof()
        except BaseException:
            conn.close()
            raise
        return response

    async def _forward(
        self,
        request: web.Request,
        endpoint: Endpoint,
        path: str,
        headers: CIMultiDict[str],
        body: bytes | aiohttp.StreamReader | None,
    ) -> web.StreamResponse:
        assert self._session is not None
        async with self._session.request(
            request.method, endpoint.url + path, headers=headers, data=body, allow_redirects=False
        ) as upstream:
            out_headers = end_to_end(upstream.headers)
            length = upstream.content_length
            if length is not None and length <= BUFFER_LIMIT:
                data = await upstream.read()
                return web.Response(status=upstream.status, headers=out_headers, body=data)
            response = web.StreamResponse(status=upstream.status, headers=out_headers)
            if length is not None:
                response.content_length = length
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response
