"""The secret store: named secrets of key/value pairs, in a 0600 file in the state dir.

Secret values never enter the database (the functions table holds specs whose env entries name a
secret with Nuclio's ``valueFrom.secretKeyRef``, never the value), the API never returns them,
and they are resolved only when a replica is launched. A file rather than a table keeps them out
of the SQLite database and its WAL, and out of the sandbox: replicas cannot see the state dir.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from tickrun.functions.errors import NotFoundError, SpecError, StoreError

NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
KEY = re.compile(r"^[-._a-zA-Z0-9]{1,253}$")
MAX_VALUE_BYTES = 64 * 1024
MAX_KEYS = 256


def check_name(name: str) -> None:
    if not NAME.match(name):
        raise SpecError(
            f"secret name {name[:80]!r} is invalid: use lowercase letters, digits and '-' "
            "(at most 63)"
        )


def check_data(data: Mapping[str, str]) -> None:
    if not data:
        raise SpecError("a secret needs at least one key")
    if len(data) > MAX_KEYS:
        raise SpecError(f"a secret has at most {MAX_KEYS} keys")
    for key, value in data.items():
        if not KEY.match(key):
            raise SpecError(
                f"secret key {key[:80]!r} is invalid: use letters, digits, '-', '_' and '.'"
            )
        if len(value.encode()) > MAX_VALUE_BYTES:
            raise SpecError(f"the value of secret key {key!r} is over {MAX_VALUE_BYTES} bytes")


class SecretStore:
    """Constructor does no I/O. Every call reads or rewrites the file under a lock (secrets
    change rarely; several controllers on one state dir stay consistent)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _read(self) -> dict[str, dict[str, str]]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise StoreError("the secret store cannot be read") from exc
        secrets = raw.get("secrets", {}) if isinstance(raw, dict) else {}
        return {str(k): dict(v) for k, v in secrets.items() if isinstance(v, dict)}

    def _write(self, secrets: dict[str, dict[str, str]]) -> None:
        fd, tmp = tempfile.mkstemp(prefix=".secrets-", dir=self.path.parent)  # 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"version": 1, "secrets": secrets}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise StoreError(f"the secret store cannot be written: {exc.strerror}") from exc

    def set(self, name: str, data: Mapping[str, str]) -> list[str]:
        """Create or replace secret ``name``; returns its keys (never the values)."""
        check_name(name)
        check_data(data)
        with self._locked():
            secrets = self._read()
            secrets[name] = dict(data)
            self._write(secrets)
        return sorted(data)

    def delete(self, name: str) -> None:
        with self._locked():
            secrets = self._read()
            if secrets.pop(name, None) is None:
                raise NotFoundError(f"secret {name!r} not found")
            self._write(secrets)

    def keys(self) -> dict[str, list[str]]:
        """Every secret's name and keys."""
        with self._locked():
            return {name: sorted(data) for name, data in sorted(self._read().items())}

    def resolve(self, refs: Mapping[str, tuple[str, str]]) -> dict[str, str]:
        """Env name → value for ``{env name: (secret, key)}``; a missing one is a SpecError."""
        if not refs:
            return {}
        with self._locked():
            secrets = self._read()
        out: dict[str, str] = {}
        for env, (secret, key) in refs.items():
            value = secrets.get(secret, {}).get(key)
            if value is None:
                raise SpecError(
                    f"env {env} refers to secret {secret!r} key {key!r}, which is not set "
                    f"(PUT /api/secrets/{secret} with that key)"
                )
            out[env] = value
        return out
