"""The browser's session: an HMAC-signed cookie instead of the bearer token, and its CSRF token.

Signed, not a random id looked up in a table: every controller replica behind one Service
accepts the cookie any of them issued, and a restart logs nobody out. The signing key is derived
from the controller token, so rotating the token ends every session. The cookie value is
``<expires>.<nonce>.<signature>``; the CSRF token is a second HMAC over the nonce, readable by
the page's JavaScript from ``GET /ui/session`` (double submit: a cross-site form cannot read it,
and the cookie is ``SameSite=Strict`` besides).

Logout revokes the nonce: at once in this process, and in the controller's store
(``ui_revoked_sessions``, shared by every controller replica on one database), which each process
reads again at most every ``REVOCATIONS_REFRESH_S`` when it checks a cookie. So a logged-out
cookie is refused by every replica within about a second, and after a restart. Revocations are
kept until the cookie would have expired, and then pruned.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from tickrun.functions.errors import StoreError

logger = logging.getLogger(__name__)

COOKIE_NAME = "tickrun_session"
CSRF_HEADER = "X-CSRF-Token"
DEFAULT_TTL_S = 12 * 3600
# A header can be as long as aiohttp allows: anything longer than a real cookie is refused early.
_MAX_COOKIE = 200
# How stale this process's copy of the shared revocations may be: a cookie logged out on
# another controller replica is refused here at most this long after.
REVOCATIONS_REFRESH_S = 1.0


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


@dataclass(frozen=True, slots=True)
class Session:
    nonce: str
    expires: int
    csrf: str


class Revocations(Protocol):
    """Where revoked sessions are shared (the controller's store, ``store/db.py``)."""

    def revoke_session(self, nonce: str, expires: float, now: float | None = None) -> None: ...

    def revoked_sessions(self, now: float | None = None) -> dict[str, float]: ...


class SessionSigner:
    """Issues and checks session cookies for one controller token. With ``revocations``,
    logouts are shared through it (see the module's doc); without, they hold in this process."""

    def __init__(
        self,
        token: str,
        *,
        ttl_s: int = DEFAULT_TTL_S,
        revocations: Revocations | None = None,
        refresh_s: float = REVOCATIONS_REFRESH_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._key = hmac.new(
            token.encode("utf-8", "surrogateescape"), b"tickrun-ui-session-v1", hashlib.sha256
        ).digest()
        self.ttl_s = ttl_s
        self._revoked: dict[str, float] = {}
        self._lock = threading.Lock()
        self._shared = revocations
        self._refresh_s = refresh_s
        self._clock = clock
        self._loaded_at: float | None = None  # the clock's time of the last read of the store

    def _sign(self, what: str) -> str:
        return _b64(hmac.new(self._key, what.encode("ascii"), hashlib.sha256).digest())

    def csrf_for(self, nonce: str) -> str:
        return self._sign(f"csrf.{nonce}")

    def issue(self, now: float | None = None) -> tuple[str, Session]:
        """A new session: the cookie value and what it stands for."""
        t = int(time.time() if now is None else now)
        nonce = secrets.token_urlsafe(18)
        expires = t + self.ttl_s
        value = f"{expires}.{nonce}.{self._sign(f'{expires}.{nonce}')}"
        return value, Session(nonce, expires, self.csrf_for(nonce))

    def check(self, value: str | None, now: float | None = None) -> Session | None:
        """The session a cookie value stands for, or None (absent, forged, expired, revoked)."""
        if not value or len(value) > _MAX_COOKIE:
            return None
        parts = value.split(".")
        if len(parts) != 3 or not parts[0].isdigit():
            return None
        expires_s, nonce, sig = parts
        if not hmac.compare_digest(sig.encode(), self._sign(f"{expires_s}.{nonce}").encode()):
            return None
        expires = int(expires_s)
        t = time.time() if now is None else now
        if expires <= t:
            return None
        # Only a genuine, unexpired cookie costs a look at the shared revocations.
        self._refresh(t)
        with self._lock:
            if nonce in self._revoked:
                return None
        return Session(nonce, expires, self.csrf_for(nonce))

    def _refresh(self, now: float) -> None:
        if self._shared is None:
            return
        tick = self._clock()
        with self._lock:
            if self._loaded_at is not None and tick - self._loaded_at < self._refresh_s:
                return
            self._loaded_at = tick  # one reader per interval; the others use the copy
        try:
            shared = self._shared.revoked_sessions(now)
        except StoreError as exc:
            # The copy read last stays in force; a check after the next interval tries again
            # (not every request: the store is down, and the log would fill).
            logger.warning("cannot read revoked UI sessions", extra={"error": exc.message})
            return
        with self._lock:
            # This process's own (written to the store too) stay until their cookie expires.
            mine = {n: e for n, e in self._revoked.items() if e > now}
            self._revoked = mine | shared

    def revoke(self, session: Session, now: float | None = None) -> None:
        """Log ``session`` out: at once here, and through the shared revocations everywhere
        (a store error is raised: the logout did not hold on the other replicas)."""
        t = time.time() if now is None else now
        with self._lock:
            # Forget revocations whose cookie has expired anyway: the set stays small.
            for n in [n for n, exp in self._revoked.items() if exp <= t]:
                del self._revoked[n]
            self._revoked[session.nonce] = session.expires
        if self._shared is not None:
            self._shared.revoke_session(session.nonce, session.expires, t)

    @staticmethod
    def csrf_ok(session: Session, header: str | None) -> bool:
        return bool(header) and hmac.compare_digest(
            session.csrf.encode(), (header or "").encode("utf-8", "surrogateescape")
        )


def token_matches(given: str, token: str) -> bool:
    """Constant-time comparison of a submitted token with the controller's."""
    return hmac.compare_digest(
        given.strip().encode("utf-8", "surrogateescape"), token.encode("utf-8", "surrogateescape")
    )


__all__ = [
    "COOKIE_NAME",
    "CSRF_HEADER",
    "DEFAULT_TTL_S",
    "REVOCATIONS_REFRESH_S",
    "Revocations",
    "Session",
    "SessionSigner",
    "token_matches",
]
