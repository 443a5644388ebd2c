"""Object-store settings from the environment (``TICKRUN_S3_*``, defined in
:mod:`tickrun.functions.settings`). Secrets are :class:`~tickrun.functions.datamodel.Secret`:
never printed. The keys fall back to ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated

from .. import settings
from ..datamodel import Meta, Model, Secret


@dataclass(frozen=True, kw_only=True)
class S3Settings(Model):
    endpoint: Annotated[str, Meta(description="host:port of the S3 / MinIO endpoint")] = ""
    access_key: Secret | None = None
    secret_key: Secret | None = None
    secure: bool = True
    region: str | None = None
    ca_bundle: str | None = None
    part_size_bytes: Annotated[int, Meta(ge=5 * 1024 * 1024)] = 16 * 1024 * 1024
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 60.0
    # Retries on connection errors, never on refusals (wrong keys fail at once).
    retries: Annotated[int, Meta(ge=0)] = 2

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> S3Settings:
        e = os.environ if env is None else env
        endpoint = settings.S3_ENDPOINT.get(e).strip()
        secure = settings.S3_SECURE.get(e)
        if endpoint.startswith(("http://", "https://")):
            secure = endpoint.startswith("https://")
            endpoint = endpoint.split("://", 1)[1]
        endpoint = endpoint.rstrip("/")
        access = settings.S3_ACCESS_KEY.get(e) or e.get("AWS_ACCESS_KEY_ID")
        secret = settings.S3_SECRET_KEY.get(e) or e.get("AWS_SECRET_ACCESS_KEY")
        return cls(
            endpoint=endpoint,
            access_key=Secret(access) if access else None,
            secret_key=Secret(secret) if secret else None,
            secure=secure,
            region=settings.S3_REGION.get(e),
            ca_bundle=settings.S3_CA_BUNDLE.get(e),
        )

    def describe(self) -> str:
        """Safe to log: scheme and endpoint, never keys."""
        return f"{'https' if self.secure else 'http'}://{self.endpoint or '(unset)'}"
