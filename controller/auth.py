"""The controller's bearer token: from settings/env, else a generated file (0600) in the state
dir, which local CLIs read."""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from tickrun.functions.errors import AuthError

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


def check_bearer(header: str | None, token: str) -> None:
    if not header:
        raise AuthError(
            "missing bearer token: send 'Authorization: Bearer <token>' (the token "
            "is in TICKRUN_TOKEN or the controller's state dir, file 'token')"
        )
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        value.strip().encode(), token.encode()
    ):
        raise AuthError("invalid bearer token")
