"""The HTTP trigger's runtime settings, resolved from its spec."""

from __future__ import annotations

from dataclasses import dataclass

from tickrun.functions.requestid import REQUEST_ID_HEADER

from .spec import HttpTriggerSpec

__all__ = ["REQUEST_ID_HEADER", "HttpConfig"]


@dataclass(frozen=True, slots=True)
class HttpConfig:
    name: str
    max_body_bytes: int
    body_idle_timeout_s: float
    cors_origins: tuple[str, ...] | None
    cors_methods: str
    cors_headers: str
    cors_max_age_s: int

    @classmethod
    def from_spec(cls, spec: HttpTriggerSpec) -> HttpConfig:
        cors = spec.attributes.cors
        enabled = cors is not None and cors.enabled
        return cls(
            name=spec.name,
            max_body_bytes=spec.attributes.max_request_body_size_bytes,
            body_idle_timeout_s=spec.attributes.read_timeout_s,
            cors_origins=tuple(cors.allow_origins) if enabled and cors else None,
            cors_methods=", ".join(cors.allow_methods) if cors else "",
            cors_headers=", ".join(cors.allow_headers) if cors else "",
            cors_max_age_s=cors.preflight_max_age_s if cors else 0,
        )
