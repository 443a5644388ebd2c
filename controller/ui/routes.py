"""The UI's own routes: the page, its static files, and the session (log in, out, whoami).

``mount(app, UiConfig(...))`` adds them to an aiohttp app: the controller's (mode
``controller``, the session cookie signed with the controller token) or ``tickrun ui``'s (mode
``local``, no login: one CSRF token per process). The cookie is accepted by the controller's
auth middleware through :func:`cookie_auth`.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from json import JSONDecodeError
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web

from tickrun.functions.errors import AuthError, BadRequestError

from ..auth import LIMITER, TooManyAttemptsError, client_key, too_many_response
from .session import (
    COOKIE_NAME,
    CSRF_HEADER,
    Revocations,
    Session,
    SessionSigner,
    token_matches,
)
from .static_files import StaticFiles

logger = logging.getLogger(__name__)

# Paths the auth middleware lets through: the page shell and its files carry no data, and the
# session routes answer 401 themselves.
OPEN_PATHS = frozenset({"/", "/index.html", "/ui/login", "/ui/logout", "/ui/session"})
OPEN_PREFIXES = ("/ui/static/",)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_LOGIN_BYTES = 4096


class CsrfError(AuthError):
    """A write with the session cookie but without its CSRF token."""

    status = 403


@dataclass
class UiConfig:
    mode: str  # "controller" | "local"
    token_of: Callable[[web.Application], str] | None = None  # the controller token (startup)
    # Where logouts are shared between controller replicas (the controller's store).
    revocations_of: Callable[[web.Application], Revocations] | None = None
    static: StaticFiles = field(default_factory=StaticFiles)
    local_csrf: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    _signer: SessionSigner | None = None
    _signer_token: str | None = None

    def signer(self, app: web.Application) -> SessionSigner:
        if self.token_of is None:
            raise AuthError("this UI has no login")
        token = self.token_of(app)
        if self._signer is None or self._signer_token != token:
            shared = self.revocations_of(app) if self.revocations_of is not None else None
            self._signer, self._signer_token = SessionSigner(token, revocations=shared), token
        return self._signer


UI_KEY: web.AppKey[UiConfig] = web.AppKey("tickrun_ui", UiConfig)


def is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def _session(request: web.Request) -> Session | None:
    cfg = request.app[UI_KEY]
    if cfg.mode != "controller":
        return None
    return cfg.signer(request.app).check(request.cookies.get(COOKIE_NAME))


def cookie_auth(request: web.Request) -> bool:
    """True if the session cookie admits ``request`` (a write also needs its CSRF header);
    False if there is no valid cookie (the caller then asks for the bearer token)."""
    # Only the API: the function gateway (/fn/) keeps asking for the token.
    if UI_KEY not in request.app or not request.path.startswith("/api/"):
        return False
    session = _session(request)
    if session is None:
        return False
    if request.method not in SAFE_METHODS and not SessionSigner.csrf_ok(
        session, request.headers.get(CSRF_HEADER)
    ):
        raise CsrfError(f"a write with the session cookie needs the {CSRF_HEADER} header")
    return True


def local_csrf_check(request: web.Request) -> None:
    """``tickrun ui``: no login, but a write still needs the page's CSRF token (another site's
    page in the same browser can send a form to localhost)."""
    cfg = request.app[UI_KEY]
    if request.method in SAFE_METHODS:
        return
    header = request.headers.get(CSRF_HEADER) or ""
    if not secrets.compare_digest(
        header.encode("utf-8", "surrogateescape"), cfg.local_csrf.encode()
    ):
        raise CsrfError(f"a write needs the {CSRF_HEADER} header from GET /ui/session")


async def index(request: web.Request) -> web.StreamResponse:
    cfg = request.app[UI_KEY]
    return cfg.static.response(request, cfg.static.resolve("index.html"), immutable=False)


async def static(request: web.Request) -> web.StreamResponse:
    cfg = request.app[UI_KEY]
    path = cfg.static.resolve(request.match_info["path"])
    return cfg.static.response(request, path, immutable="v" in request.query)


def _session_body(mode: str, csrf: str, expires: int | None) -> dict[str, Any]:
    return {"mode": mode, "csrf": csrf, "expires": expires}


async def session(request: web.Request) -> web.StreamResponse:
    cfg = request.app[UI_KEY]
    if cfg.mode == "local":
        return web.json_response(_session_body("local", cfg.local_csrf, None))
    found = _session(request)
    if found is None:
        raise AuthError("not logged in: POST the controller token to /ui/login")
    return web.json_response(
        _session_body("controller", found.csrf, found.expires),
        headers={"Cache-Control": "no-store"},
    )


async def _submitted_token(request: web.Request) -> str:
    if request.content_length is not None and request.content_length > MAX_LOGIN_BYTES:
        raise BadRequestError("login body too large")
    raw = await request.content.read(MAX_LOGIN_BYTES + 1)
    if len(raw) > MAX_LOGIN_BYTES:
        raise BadRequestError("login body too large")
    token: object
    if request.content_type == "application/json":
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, JSONDecodeError):
            raise BadRequestError('login body must be JSON {"token": "..."}') from None
        token = body.get("token") if isinstance(body, dict) else None
    else:
        try:
            form = parse_qs(raw.decode("utf-8"), max_num_fields=10)
        except (UnicodeDecodeError, ValueError):
            raise BadRequestError("login form must be token=...") from None
        values = form.get("token") or []
        token = values[0] if values else None
    if not isinstance(token, str) or not token:
        raise BadRequestError("missing token")
    return token


def _secure(request: web.Request) -> bool:
    return request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"


async def login(request: web.Request) -> web.StreamResponse:
    cfg = request.app[UI_KEY]
    if cfg.mode == "local":
        return web.json_response(_session_body("local", cfg.local_csrf, None))
    # Wrong tokens count against the client address's budget, shared with the API's bearer
    # check (auth.py): refused before the body is read.
    limiter = request.app.get(LIMITER)
    key = client_key(request.remote)
    if limiter is not None:
        try:
            limiter.check(key)
        except TooManyAttemptsError as exc:
            return too_many_response(request, exc)
    given = await _submitted_token(request)
    signer = cfg.signer(request.app)
    if not token_matches(given, cfg.token_of(request.app) if cfg.token_of else ""):
        logger.warning("UI login refused (wrong token)", extra={"remote": request.remote})
        if limiter is not None:
            limiter.failed(key)
        raise AuthError("wrong token")
    if limiter is not None:
        limiter.succeeded(key)
    value, sess = signer.issue()
    resp = web.json_response(
        _session_body("controller", sess.csrf, sess.expires), headers={"Cache-Control": "no-store"}
    )
    resp.set_cookie(
        COOKIE_NAME,
        value,
        max_age=signer.ttl_s,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=_secure(request),
    )
    return resp


async def logout(request: web.Request) -> web.StreamResponse:
    cfg = request.app[UI_KEY]
    if cfg.mode == "controller":
        found = _session(request)
        if found is not None:
            # Only the holder of the CSRF token may end its session (no logout by a foreign form).
            if not SessionSigner.csrf_ok(found, request.headers.get(CSRF_HEADER)):
                raise CsrfError(f"logout needs the {CSRF_HEADER} header")
            cfg.signer(request.app).revoke(found)
    resp = web.json_response({"ok": True})
    resp.del_cookie(COOKIE_NAME, path="/")
    return resp


def mount(app: web.Application, config: UiConfig) -> None:
    app[UI_KEY] = config
    r = app.router
    r.add_get("/", index)
    r.add_get("/index.html", index)
    r.add_get("/ui/static/{path:.+}", static)
    r.add_get("/ui/session", session)
    r.add_post("/ui/login", login)
    r.add_post("/ui/logout", logout)


__all__ = [
    "OPEN_PATHS",
    "UI_KEY",
    "CsrfError",
    "UiConfig",
    "cookie_auth",
    "is_open",
    "local_csrf_check",
    "mount",
]
