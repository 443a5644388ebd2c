"""The controller's bearer token: from settings/env, else a generated file (0600) in the state
dir, which local CLIs read."""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from multidict import CIMultiDictProxy

from tickrun.functions.errors import AuthError
from tickrun.functions.settings import TOKEN

from .settings import Settings


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
