"""Answering health and metrics while the event loop's thread runs a slow handler inline.

The watch thread of :mod:`.inline` calls :meth:`Rescue.serve_while` when a call has been running
for a while: it accepts new connections on the worker's listening sockets itself, peeks at the
request line (``MSG_PEEK``: nothing is consumed), answers ``GET``/``HEAD`` of a control path
(``/healthz``, ``/readyz``, ``/metrics``) with ``Connection: close``, and hands every other
connection, unread, to the event loop, which serves it as if it had accepted it once the call
returns. Probes open a connection per probe (the kubelet does), so they are answered; a request
on a connection the loop already holds waits for the call, as it would for a free slot.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
import time
from collections.abc import Callable, Sequence

from ..requestid import REQUEST_ID_HEADER, request_id

logger = logging.getLogger(__name__)

Answer = Callable[[str], tuple[int, bytes, str]]
"""A control path → (status, body, content type); called on the rescue thread."""

PEEK_WAIT_S = 0.5  # a probe sends its request line at once; anything slower goes to the loop
MAX_HEAD = 16 * 1024
_REASONS = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}


class Rescue:
    """Accepts on ``listeners`` while asked to; ``adopt`` hands a socket to the event loop."""

    def __init__(
        self,
        listeners: Sequence[socket.socket],
        control_paths: frozenset[str],
        answer: Answer,
        adopt: Callable[[socket.socket], None],
    ) -> None:
        self._listeners = list(listeners)
        self._paths = control_paths
        self._answer = answer
        self._adopt = adopt
        self._closed = threading.Event()
        self.answered = 0  # control requests answered here (for tests and logs)

    def close(self) -> None:
        self._closed.set()

    def serve_while(self, busy: Callable[[], bool], until: float | None = None) -> None:
        """Accept and sort connections while ``busy()`` and before ``until`` (perf_counter);
        one round at least."""
        while not self._closed.is_set():
            live = [s for s in self._listeners if s.fileno() >= 0]
            if not live:
                return
            try:
                readable, _, _ = select.select(live, [], [], 0.02)
            except (OSError, ValueError):  # a listener closed under us: the worker is stopping
                return
            for listener in readable:
                self._accept(listener)
            if not busy() or (until is not None and time.perf_counter() > until):
                return

    def _accept(self, listener: socket.socket) -> None:
        try:
            conn, _ = listener.accept()
        except OSError:  # another acceptor was faster, the client left, or no descriptor left
            return
        try:
            self._sort(conn)
        except Exception:  # never let one connection end the watch thread
            logger.exception("rescue acceptor failed on a connection")
            conn.close()

    def _sort(self, conn: socket.socket) -> None:
        line = _peek_line(conn)
        if line is None:
            conn.close()  # the client closed before sending anything
            return
        parts = line.split(b" ")
        path = parts[1].split(b"?", 1)[0].decode("latin-1") if len(parts) == 3 else ""
        method = parts[0]
        if method not in (b"GET", b"HEAD") or path not in self._paths:
            conn.setblocking(False)
            self._adopt(conn)
            return
        head = _read_head(conn)
        if head is None:
            conn.close()
            return
        status, body, ctype = self._answer(path)
        rid = request_id(_headers(head))
        out = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"
            f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            f"{REQUEST_ID_HEADER}: {rid}\r\nConnection: close\r\n\r\n"
        ).encode("latin-1")
        with contextlib.suppress(OSError):
            conn.sendall(out if method == b"HEAD" else out + body)
        conn.close()
        self.answered += 1


def _peek_line(conn: socket.socket) -> bytes | None:
    """The request line, left in the socket; b"" when it is not complete in time."""
    conn.settimeout(PEEK_WAIT_S)
    deadline = time.monotonic() + PEEK_WAIT_S
    data = b""
    while True:
        try:
            data = conn.recv(2048, socket.MSG_PEEK)
        except TimeoutError:
            return b""
        except OSError:
            return None
        if not data:
            return None
        end = data.find(b"\r\n")
        if end >= 0:
            return data[:end]
        if len(data) >= 2048 or time.monotonic() > deadline:
            return b""
        time.sleep(0.005)  # more of the line is on its way (a peek would return at once)


def _read_head(conn: socket.socket) -> bytes | None:
    """Consume the request head (a control request has no body)."""
    data = b""
    deadline = time.monotonic() + PEEK_WAIT_S
    while b"\r\n\r\n" not in data:
        if len(data) > MAX_HEAD or time.monotonic() > deadline:
            return None
        try:
            chunk = conn.recv(4096)
        except OSError:
            return None
        if not chunk:
            return None
        data += chunk
    return data


def _headers(head: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for raw in head.split(b"\r\n")[1:]:
        name, sep, value = raw.partition(b":")
        if sep:
            out[name.decode("latin-1").strip().title()] = value.decode("latin-1").strip()
    return out
