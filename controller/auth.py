"""The controller's bearer token: from settings/env, else a generated file (0600) in the state
dir, which local CLIs read; and the limit on wrong tokens per client address."""

from __future__ import annotations

import hmac
import ipaddress
import logging
import math
import os
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from pathlib import Path

from aiohttp import web
from multidict import CIMultiDictProxy

from tickrun.functions.errors import AuthError
from tickrun.functions.httpserver import request_id_of
from tickrun.functions.settings import TOKEN

from .settings import Settings

logger = logging.getLogger(__name__)


def load_or_create_token(settings: Settings) -> str:
    if settings.token:
        return settings.token
    path = settings.token_file
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another controller won the race
        return path.read_text(encoding="utf-8").strip()
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(token + "\n")
    return token


def read_token_file(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def authorization(headers: CIMultiDictProxy[str]) -> str | None:
    """The one Authorization header; two are refused (proxies and servers may pick either)."""
    values = headers.getall("Authorization", [])
    if len(values) > 1:
        raise AuthError("more than one Authorization header")
    return values[0] if values else None


def check_bearer(header: str | None, token: str) -> None:
    if not header:
        raise AuthError(
            "missing bearer token: send 'Authorization: Bearer <token>' (the token "
            f"is in {TOKEN.name} or the controller's state dir, file 'token')"
        )
    scheme, _, value = header.partition(" ")
    # Header bytes that are not UTF-8 arrive as surrogates: compared as the bytes they were.
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        value.strip().encode("utf-8", "surrogateescape"),
        token.encode("utf-8", "surrogateescape"),
    ):
        raise AuthError("invalid bearer token")


# --- wrong tokens: a limit per client address ----------------------------------------------------
#
# One limiter per controller app, shared by the bearer check (every API and /fn/ request) and the
# UI's login form: both guess the same token, so a client gets one budget for both. After
# WRONG_TOKEN_LIMIT wrong tokens within WRONG_TOKEN_WINDOW_S, every attempt from that address is
# answered 429 with Retry-After until the oldest of them is a window old (the right token too:
# otherwise the 429 would not slow a guesser down). A right token resets the count.

WRONG_TOKEN_LIMIT = 10
WRONG_TOKEN_WINDOW_S = 60.0
# Addresses remembered at most (the ones whose last wrong token is oldest are forgotten first): a
# flood from many addresses costs bounded memory, measured at about 1.2 KB an address (~12 MB).
MAX_TRACKED_CLIENTS = 10_000
# At most one "refusing" warning in this many seconds (a flood from many addresses would write
# one line per address); the count of the others goes into the next one.
WARN_EVERY_S = 10.0


class TooManyAttemptsError(AuthError):
    """Too many wrong tokens from one client address; ``retry_after_s`` says for how long."""

    status = 429

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def client_key(remote: str | None) -> str:
    """The address a limit applies to: an IPv6 client's /64 (one host usually holds a whole
    /64, and would otherwise get a fresh budget per address), else the address as given."""
    if not remote:
        return "unknown"
    try:
        ip = ipaddress.ip_address(remote)
    except ValueError:
        return remote[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class WrongTokenLimiter:
    """Wrong tokens per client key in a sliding window, with bounded memory. Called on the
    event loop only (no lock)."""

    def __init__(
        self,
        limit: int = WRONG_TOKEN_LIMIT,
        window_s: float = WRONG_TOKEN_WINDOW_S,
        *,
        max_clients: int = MAX_TRACKED_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_clients = max_clients
        self._clock = clock
        # key → times of its last `limit` wrong tokens, ordered by the latest wrong token.
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._warned_at: float | None = None
        self._unwarned = 0

    def __len__(self) -> int:
        return len(self._failures)

    def retry_after(self, key: str) -> int | None:
        """Whole seconds until ``key`` may try again, or None if it may now."""
        times = self._failures.get(key)
        if times is None or len(times) < self.limit:
            return None
        wait = times[0] + self.window_s - self._clock()
        return math.ceil(wait) if wait > 0 else None

    def check(self, key: str) -> None:
        wait = self.retry_after(key)
        if wait is not None:
            raise TooManyAttemptsError(
                f"too many wrong tokens from this address: retry in {wait} s",
                retry_after_s=wait,
            )

    def failed(self, key: str) -> None:
        now = self._clock()
        self._forget_old(now)
        times = self._failures.pop(key, None)
        if times is None:
            times = deque(maxlen=self.limit)
        times.append(now)
        self._failures[key] = times  # to the end: the latest wrong token
        if len(times) == self.limit and times[0] > now - self.window_s:
            self._warn(key, now, math.ceil(times[0] + self.window_s - now))
        while len(self._failures) > self.max_clients:
            self._failures.popitem(last=False)

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)

    def _warn(self, key: str, now: float, retry_after_s: int) -> None:
        if self._warned_at is not None and now - self._warned_at < WARN_EVERY_S:
            self._unwarned += 1
            return
        logger.warning(
            "too many wrong tokens: refusing this address for a while",
            extra={"client": key, "retry_after_s": retry_after_s, "others": self._unwarned},
        )
        self._warned_at, self._unwarned = now, 0

    def _forget_old(self, now: float) -> None:
        # Ordered by the latest wrong token: the stale ones are at the front.
        while self._failures:
            key, times = next(iter(self._failures.items()))
            if times[-1] > now - self.window_s:
                break
            del self._failures[key]


LIMITER: web.AppKey[WrongTokenLimiter] = web.AppKey("wrong_token_limiter", WrongTokenLimiter)


def too_many_response(request: web.Request, exc: TooManyAttemptsError) -> web.Response:
    """The 429 itself (with Retry-After, which the error middleware would not pass on)."""
    return web.json_response(
        {**exc.to_dict(), "retry_after_s": exc.retry_after_s, "request_id": request_id_of(request)},
        status=exc.status,
        headers={"Retry-After": str(exc.retry_after_s)},
    )


def check_bearer_limited(request: web.Request, header: str | None, token: str) -> None:
    """:func:`check_bearer`, counting wrong tokens per client address (see LIMITER). Raises
    :class:`TooManyAttemptsError` while the address is refused; a missing token is not a
    guess and is not counted."""
    limiter = request.app.get(LIMITER)
    if limiter is None or not header:
        check_bearer(header, token)
        return
    key = client_key(request.remote)
    limiter.check(key)
    try:
        check_bearer(header, token)
    except AuthError:
        limiter.failed(key)
        raise
    limiter.succeeded(key)
