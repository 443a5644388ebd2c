"""A whole-body HTTP/1.1 answer written without aiohttp's general response machinery.

``web.Response.prepare`` and ``write_eof`` handle every case each time: compression, cookies,
chunking, payload objects, statuses and methods that carry no body, HTTP/1.0 keep-alive and the
application's prepare signals: about a fifth of a no-op request's CPU, half of it spent deciding
(issue 17; docs/perf). :class:`FramedResponse` writes the common case (a bytes body, HTTP/1.1, a
status and method that carry a body) with the same headers aiohttp would send (Content-Length,
Date, Server, ``Connection: close`` when the connection will close), and hands every other case
to aiohttp unchanged. A test compares the bytes on the wire with ``web.Response``'s, case by case.

It reads aiohttp's private response state; pyproject pins the aiohttp versions it was checked on.
"""

from __future__ import annotations

from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE, HttpVersion11

# No prepare signals to send: a request of the low-level server (an Application's requests
# are web.Request, whose hook sends on_response_prepare).
_NO_HOOK = web.BaseRequest._prepare_hook


class FramedResponse(web.Response):
    """``web.Response`` whose common case (see the module) skips aiohttp's general path."""

    _framed = False  # prepared here (not by aiohttp): write_eof takes the short path too

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        body = self._body
        status = self._status
        if (
            type(body) is not bytes
            or self._payload_writer is not None
            or self._eof_sent
            or self._compression
            or self._chunked
            or self._cookies
            or not 200 <= status < 600
            or status == 204
            or status == 304
            or request.version != HttpVersion11
            or request.method in ("HEAD", "CONNECT")
            or type(request)._prepare_hook is not _NO_HOOK
            or hdrs.CONTENT_LENGTH in self._headers  # the handler's own: aiohttp's rules for it
        ):
            return await super().prepare(request)
        headers = self._headers
        self._must_be_empty_body = False
        self._req = request
        writer = self._payload_writer = request._payload_writer
        keep_alive = self._keep_alive
        if keep_alive is None:
            keep_alive = self._keep_alive = request.keep_alive
        size = len(body)
        writer.length = size
        headers[hdrs.CONTENT_LENGTH] = str(size)
        if size:
            headers.setdefault(hdrs.CONTENT_TYPE, "application/octet-stream")
        if hdrs.DATE not in headers:
            headers[hdrs.DATE] = rfc822_formatted_time()
        headers.setdefault(hdrs.SERVER, SERVER_SOFTWARE)
        if not keep_alive and hdrs.CONNECTION not in headers:
            headers[hdrs.CONNECTION] = "close"
        self._framed = True
        await writer.write_headers(f"HTTP/1.1 {status} {self._reason}", headers)
        return writer

    async def write_eof(self, data: bytes = b"") -> None:
        writer = self._payload_writer
        if not self._framed or data or writer is None or self._eof_sent:
            await super().write_eof(data)
            return
        await writer.write_eof(self._body)  # type: ignore[arg-type] # bytes: prepare checked
        self._eof_sent = True
        self._req = None
        self._body_length = writer.output_size
        self._payload_writer = None
