"""``kind: http`` in ``function.yaml``: the processor port's limits, CORS and ingresses.

Only pydantic here: every spec parse imports this module.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tickrun.functions.spec.durations import DurationS
from tickrun.functions.spec.triggers import SpecModel, TriggerSpecBase


class CorsSpec(SpecModel):
    enabled: bool = True
    allow_origins: list[str] = Field(default_factory=lambda: ["*"], alias="allowOrigins")
    allow_methods: list[str] = Field(
        default_factory=lambda: ["HEAD", "GET", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"],
        alias="allowMethods",
    )
    allow_headers: list[str] = Field(
        default_factory=lambda: ["Accept", "Content-Length", "Content-Type", "X-Request-Id"],
        alias="allowHeaders",
    )
    allow_credentials: bool = Field(default=False, alias="allowCredentials")
    preflight_max_age_s: int = Field(default=86_400, alias="preflightMaxAgeSeconds", ge=0)


class IngressSpec(SpecModel):
    host: str | None = None
    paths: list[str] = Field(default_factory=list)
    secret_name: str | None = Field(default=None, alias="secretName")
    path_type: str | None = Field(default=None, alias="pathType")


class HttpAttributes(SpecModel):
    port: int | None = Field(default=None, ge=0, le=65_535)
    max_request_body_size_bytes: int = Field(
        default=32 * 1024 * 1024, alias="maxRequestBodySize", ge=1
    )
    read_buffer_size_bytes: int | None = Field(default=None, alias="readBufferSize", ge=1)
    reduce_memory_usage: bool = Field(default=False, alias="reduceMemoryUsage")
    keep_alive_timeout_s: DurationS = Field(default=75.0, alias="keepAliveTimeout")
    # tickrun's own (Go http.Server's names): slow clients must not hold connections open.
    read_header_timeout_s: DurationS = Field(default=10.0, alias="readHeaderTimeout")
    read_timeout_s: DurationS = Field(default=30.0, alias="readTimeout")  # max gap in a body
    max_connections: int | None = Field(default=None, alias="maxConnections", ge=1)
    cors: CorsSpec | None = None
    service_type: str | None = Field(default=None, alias="serviceType")
    ingresses: dict[str, IngressSpec] = Field(default_factory=dict)


class HttpTriggerSpec(TriggerSpecBase):
    kind: Literal["http"]
    attributes: HttpAttributes = Field(default_factory=HttpAttributes)
