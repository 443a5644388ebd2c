"""Controller settings, read from ``TICKRUN_*`` environment variables (constructors do no I/O)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tickrun.functions.errors import SpecError

Platform = Literal["process", "container"]
Engine = Literal["podman", "buildah", "docker"]

# env var → field; one table so `tickrun controller start --help` and the docs agree.
ENV_VARS: dict[str, str] = {
    "TICKRUN_STATE_DIR": "state_dir",
    "TICKRUN_CACHE": "cache_dir",
    "TICKRUN_DB_URL": "db_url",
    "TICKRUN_TOKEN": "token",
    "TICKRUN_CONTROLLER_HOST": "host",
    "TICKRUN_CONTROLLER_PORT": "port",
    "TICKRUN_PLATFORM": "default_platform",
    "TICKRUN_PORT_RANGE": "port_range",
    "TICKRUN_CONTAINER_ENGINE": "container_engine",
    "TICKRUN_BASE_IMAGE": "base_image",
    "TICKRUN_PUBLIC_GATEWAY": "public_gateway",
    "TICKRUN_FUNCTION_PORTS": "function_ports",
    "TICKRUN_REPLICA_LOG_MAX_BYTES": "replica_log_max_bytes",
    "TICKRUN_HEADER_TIMEOUT_S": "header_timeout_s",
    "TICKRUN_KEEPALIVE_TIMEOUT_S": "keepalive_timeout_s",
    "TICKRUN_BODY_TIMEOUT_S": "body_timeout_s",
    "TICKRUN_MAX_CONNECTIONS": "max_connections",
}


def default_state_dir() -> Path:
    return Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / "tickrun"


def default_cache_dir() -> Path:
    return Path(os.environ.get("TICKRUN_CACHE", Path.home() / ".cache" / "tickrun"))


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    state_dir: Path = Field(default_factory=default_state_dir)
    # Wheelhouses and per-function environments are shared between controllers on one host.
    cache_dir: Path = Field(default_factory=default_cache_dir)
    db_url: str | None = Field(default=None, description="SQLAlchemy URL; default SQLite in state")
    token: str | None = Field(default=None, description="bearer token; default <state>/token")
    host: str = "127.0.0.1"
    port: int = Field(default=8070, ge=0, le=65535)
    default_platform: Platform = "process"
    port_range: tuple[int, int] = (20000, 29999)
    container_engine: Engine | None = None
    base_image: str = "python:3.11-slim"
    public_gateway: bool = Field(default=False, description="serve /fn/… without the token")
    function_ports: bool = Field(default=True, description="a TCP gateway port per function")
    reconcile_interval_s: float = Field(default=0.25, gt=0)
    ready_timeout_s: float = Field(default=120.0, gt=0)
    stop_timeout_s: float = Field(default=10.0, gt=0)
    # A replica's log is rotated when it passes this (one old generation kept), while it runs.
    replica_log_max_bytes: int = Field(default=16 * 1024 * 1024, ge=4096)
    # The HTTP edge (API, /fn/ and function ports): a slow or idle client holds a connection
    # (two descriptors through a gateway) only this long, and never more than this many at once.
    header_timeout_s: float = Field(
        default=10.0, gt=0, description="close a connection whose request head is unfinished"
    )
    keepalive_timeout_s: float = Field(
        default=30.0, gt=0, description="close a connection idle between requests"
    )
    body_timeout_s: float = Field(
        default=30.0, gt=0, description="close a connection whose request body stalls this long"
    )
    max_connections: int = Field(
        default=1000, ge=8, description="client connections at once (also bounded by the fd limit)"
    )

    @model_validator(mode="after")
    def _range(self) -> Settings:
        lo, hi = self.port_range
        if not 1024 <= lo <= hi <= 65535:
            raise ValueError(f"port range {lo}-{hi} is not within 1024-65535")
        return self

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Settings from ``env`` (default os.environ); ``overrides`` (CLI flags) win."""
        source = os.environ if env is None else env
        values: dict[str, object] = {}
        for var, field in ENV_VARS.items():
            raw = source.get(var)
            if raw is None or raw == "":
                continue
            if field == "port_range":
                lo, _, hi = raw.partition("-")
                values[field] = (lo, hi or lo)
            elif field in ("public_gateway", "function_ports"):
                values[field] = raw.lower() in ("1", "true", "yes", "on")
            else:
                values[field] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            raise SpecError(f"invalid controller settings: {problems}") from exc

    # --- derived paths (no I/O) ---------------------------------------------------------------

    @property
    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{self.state_dir / 'tickrun.db'}"

    @property
    def token_file(self) -> Path:
        return self.state_dir / "token"

    @property
    def url_file(self) -> Path:
        return self.state_dir / "controller.json"

    @property
    def code_dir(self) -> Path:
        return self.state_dir / "code"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def builds_dir(self) -> Path:
        return self.state_dir / "builds"

    @property
    def wheels_cache(self) -> Path:
        return self.cache_dir / "controller" / "wheels"

    @property
    def envs_cache(self) -> Path:
        return self.cache_dir / "controller" / "envs"

    def engine(self) -> Engine | None:
        """The container engine to use: the forced one, else podman, buildah, docker."""
        if self.container_engine is not None:
            return self.container_engine
        for name in ("podman", "buildah", "docker"):
            if shutil.which(name):
                return name  # type: ignore[return-value,unused-ignore]
        return None
