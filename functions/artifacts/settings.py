"""Object-store settings from the environment. Secrets are ``SecretStr``: never printed.

======================== ===========================================================
``TICKRUN_S3_ENDPOINT``  ``host:port`` or ``http(s)://host:port`` of MinIO / S3
``TICKRUN_S3_ACCESS_KEY`` access key (also ``AWS_ACCESS_KEY_ID``)
``TICKRUN_S3_SECRET_KEY`` secret key (also ``AWS_SECRET_ACCESS_KEY``)
``TICKRUN_S3_SECURE``    ``true``/``false``: TLS when the endpoint has no scheme (default true)
``TICKRUN_S3_REGION``    region (optional)
``TICKRUN_S3_CA_BUNDLE`` a CA file to verify the endpoint's certificate (optional)
======================== ===========================================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, SecretStr

_TRUE = {"1", "true", "yes", "on"}


class S3Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    endpoint: str = Field(default="", description="host:port of the S3 / MinIO endpoint")
    access_key: SecretStr | None = None
    secret_key: SecretStr | None = None
    secure: bool = True
    region: str | None = None
    ca_bundle: str | None = None
    part_size_bytes: int = Field(default=16 * 1024 * 1024, ge=5 * 1024 * 1024)
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 60.0
    # Retries on connection errors, never on refusals (wrong keys fail at once).
    retries: int = Field(default=2, ge=0)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> S3Settings:
        e = os.environ if env is None else env
        endpoint = e.get("TICKRUN_S3_ENDPOINT", "").strip()
        secure = e.get("TICKRUN_S3_SECURE", "true").strip().lower() in _TRUE
        if endpoint.startswith(("http://", "https://")):
            secure = endpoint.startswith("https://")
            endpoint = endpoint.split("://", 1)[1]
        endpoint = endpoint.rstrip("/")
        access = e.get("TICKRUN_S3_ACCESS_KEY") or e.get("AWS_ACCESS_KEY_ID")
        secret = e.get("TICKRUN_S3_SECRET_KEY") or e.get("AWS_SECRET_ACCESS_KEY")
        return cls(
            endpoint=endpoint,
            access_key=SecretStr(access) if access else None,
            secret_key=SecretStr(secret) if secret else None,
            secure=secure,
            region=e.get("TICKRUN_S3_REGION") or None,
            ca_bundle=e.get("TICKRUN_S3_CA_BUNDLE") or None,
        )

    def describe(self) -> str:
        """Safe to log: scheme and endpoint, never keys."""
        return f"{'https' if self.secure else 'http'}://{self.endpoint or '(unset)'}"
