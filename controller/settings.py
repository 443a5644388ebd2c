"""Controller settings from the environment, through :mod:`tickrun.functions.settings` (no I/O)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from tickrun.functions import settings
from tickrun.functions.errors import SpecError
from tickrun.functions.settings import Setting

Platform = Literal["process", "container", "kubernetes"]
Engine = Literal["podman", "buildah", "docker"]
Autoscaler = Literal["tickrun", "keda"]
Proxy = Literal["python", "haproxy", "auto"]

# variable → field; the registry holds each one's type, default and doc (docs/settings.md).
ENV_VARS: dict[Setting[Any], str] = {
    settings.STATE_DIR: "state_dir",
    settings.CACHE: "cache_dir",
    settings.DB_URL: "db_url",
    settings.TOKEN: "token",
    settings.CONTROLLER_HOST: "host",
    settings.CONTROLLER_PORT: "port",
    settings.PLATFORM: "default_platform",
    settings.OFFERED_PLATFORMS: "platforms",
    settings.PORT_RANGE: "port_range",
    settings.CONTAINER_ENGINE: "container_engine",
    settings.BASE_IMAGE: "base_image",
    settings.K8S_NAMESPACE: "k8s_namespace",
    settings.KUBECONFIG: "kubeconfig",
    settings.K8S_AUTOSCALER: "k8s_autoscaler",
    settings.REGISTRY_URL: "registry",
    settings.REGISTRY_AUTH_FILE: "registry_auth_file",
    settings.REGISTRY_USERNAME: "registry_username",
    settings.REGISTRY_PASSWORD: "registry_password",
    settings.REGISTRY_TLS_VERIFY: "registry_tls_verify",
    settings.PUBLIC_GATEWAY: "public_gateway",
    settings.FUNCTION_PORTS: "function_ports",
    settings.REPLICA_LOG_MAX_BYTES: "replica_log_max_bytes",
    settings.KAFKA_BROKERS: "kafka_brokers",
    settings.LAG_INTERVAL_S: "lag_interval_s",
    settings.CRON_WAKE_LEAD_S: "cron_wake_lead_s",
    settings.HEADER_TIMEOUT_S: "header_timeout_s",
    settings.KEEPALIVE_TIMEOUT_S: "keepalive_timeout_s",
    settings.BODY_TIMEOUT_S: "body_timeout_s",
    settings.MAX_CONNECTIONS: "max_connections",
    settings.PROXY: "proxy",
}


IN_CLUSTER_ENV = "KUBERNETES_SERVICE_HOST"

_FROM_HOME: tuple[Setting[Any], ...] = (settings.STATE_DIR, settings.CACHE)


def _state_dir() -> Path:
    return settings.STATE_DIR.get()


def _cache_dir() -> Path:
    return settings.CACHE.get()


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Derived from $TICKRUN_HOME unless set (the one state root).
    state_dir: Path = Field(default_factory=_state_dir)
    # Wheelhouses and per-function environments are shared between controllers on one host.
    cache_dir: Path = Field(default_factory=_cache_dir)
    db_url: str | None = Field(default=None, description="SQLAlchemy URL; default SQLite in state")
    token: str | None = Field(default=None, description="bearer token; default <state>/token")
    host: str = settings.CONTROLLER_HOST.fixed_default
    port: int = Field(default=settings.CONTROLLER_PORT.fixed_default, ge=0, le=65535)
    default_platform: Platform = settings.PLATFORM.fixed_default  # type: ignore[assignment]
    # None: every platform the controller can run. A cluster install turns the host platforms
    # off: in a pod they would run functions inside the controller's own container.
    platforms: tuple[Platform, ...] | None = None
    port_range: tuple[int, int] = settings.PORT_RANGE.fixed_default
    container_engine: Engine | None = None
    base_image: str = settings.BASE_IMAGE.fixed_default
    # The kubernetes platform: offered with a kubeconfig, or in a pod (its service account).
    k8s_namespace: str = Field(
        default=settings.K8S_NAMESPACE.fixed_default,
        pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$",
    )
    kubeconfig: Path | None = None
    k8s_autoscaler: Autoscaler = settings.K8S_AUTOSCALER.fixed_default  # type: ignore[assignment]
    k8s_in_cluster: bool = False
    # Where kubernetes images are pushed (builder/registry.py); None: they stay local.
    registry: str | None = None
    registry_auth_file: Path | None = None
    registry_username: str | None = None
    # SecretStr: a repr or dump of the settings never shows it.
    registry_password: SecretStr | None = None
    registry_tls_verify: bool = settings.REGISTRY_TLS_VERIFY.fixed_default
    public_gateway: bool = settings.PUBLIC_GATEWAY.fixed_default
    function_ports: bool = settings.FUNCTION_PORTS.fixed_default
    reconcile_interval_s: float = Field(default=0.25, gt=0)
    ready_timeout_s: float = Field(default=120.0, gt=0)
    # Filled into kafka-cluster triggers that name no brokers, at deploy (kafka_defaults.py).
    kafka_brokers: tuple[str, ...] = ()
    # Autoscaling on Kafka lag and cron (lag.py, wake.py).
    lag_interval_s: float = Field(default=settings.LAG_INTERVAL_S.fixed_default, gt=0, le=60)
    cron_wake_lead_s: float = Field(default=settings.CRON_WAKE_LEAD_S.fixed_default, ge=0)
    stop_timeout_s: float = Field(default=10.0, gt=0)
    # A replica's log is rotated when it passes this (one old generation kept), while it runs.
    replica_log_max_bytes: int = Field(
        default=settings.REPLICA_LOG_MAX_BYTES.fixed_default, ge=4096
    )
    # The HTTP edge (API, /fn/ and function ports): a slow or idle client holds a connection
    # (two descriptors through a gateway) only this long, and never more than this many at once.
    header_timeout_s: float = Field(
        default=settings.HEADER_TIMEOUT_S.fixed_default,
        gt=0,
        description="close a connection whose request head is unfinished",
    )
    keepalive_timeout_s: float = Field(
        default=settings.KEEPALIVE_TIMEOUT_S.fixed_default,
        gt=0,
        description="close a connection idle between requests",
    )
    body_timeout_s: float = Field(
        default=settings.BODY_TIMEOUT_S.fixed_default,
        gt=0,
        description="close a connection whose request body stalls this long",
    )
    max_connections: int = Field(
        default=settings.MAX_CONNECTIONS.fixed_default,
        ge=8,
        description="client connections at once (also bounded by the fd limit)",
    )

    # HAProxy in front of /fn/ (controller/haproxy/); "auto": when the binary is found.
    proxy: Proxy = settings.PROXY.fixed_default  # type: ignore[assignment]

    @model_validator(mode="after")
    def _range(self) -> Settings:
        lo, hi = self.port_range
        if not 1024 <= lo <= hi <= 65535:
            raise ValueError(f"port range {lo}-{hi} is not within 1024-65535")
        if self.platforms is not None and self.default_platform not in self.platforms:
            raise ValueError(
                f"the default platform {self.default_platform!r} is not among the offered "
                f"platforms ({', '.join(self.platforms)})"
            )
        if self.kafka_brokers:
            settings.broker_list(",".join(self.kafka_brokers))
        if (self.registry_username is None) != (self.registry_password is None):
            raise ValueError("registry username and password go together: set both or neither")
        return self

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Settings from ``env`` (default os.environ); ``overrides`` (CLI flags) win."""
        values: dict[str, object] = {}
        for setting, field in ENV_VARS.items():
            try:
                # The paths' defaults derive from TICKRUN_HOME in the same env.
                value = setting.get(env) if setting in _FROM_HOME else setting.lookup(env)
            except SpecError as exc:
                raise SpecError(f"invalid controller settings: {field}: {exc.message}") from exc
            if value is not None:
                values[field] = value
        offered = values.get("platforms")
        if isinstance(offered, tuple) and offered and "default_platform" not in values:
            # Offering one platform means deploying to it by default.
            values["default_platform"] = offered[0]
        # Set by Kubernetes in every pod: the controller then uses its service account.
        values["k8s_in_cluster"] = bool((os.environ if env is None else env).get(IN_CLUSTER_ENV))
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

    @property
    def kubernetes(self) -> bool:
        """The kubernetes platform is offered: a kubeconfig, or running in a pod."""
        return self.kubeconfig is not None or self.k8s_in_cluster

    def offers(self, platform: str) -> bool:
        """``platform`` is not turned off by TICKRUN_PLATFORMS (it may still be unavailable)."""
        return self.platforms is None or platform in self.platforms

    def engine(self) -> Engine | None:
        """The container engine to use: the forced one, else podman, buildah, docker."""
        if self.container_engine is not None:
            return self.container_engine
        for name in ("podman", "buildah", "docker"):
            if shutil.which(name):
                return name  # type: ignore[return-value,unused-ignore]
        return None
