"""Every ``TICKRUN_*`` environment variable, defined once: its type, default and meaning.

Code reads a variable through its constant (``settings.HOME.get()``), and code that sets one for a
child process uses the constant's ``.name``, so this module is the only place the names are
spelled. One state root, ``TICKRUN_HOME`` (default ``~/.tickrun``): the controller's state, the
caches, the run DB and the artifacts derive from it unless their own variable is set.
``XDG_STATE_HOME`` and ``XDG_CACHE_HOME`` are not consulted.

``python -m tickrun.functions.settings > docs/settings.md`` writes the table of them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from tickrun.functions.errors import SpecError

T = TypeVar("T")
Env = Mapping[str, str]


@dataclass(frozen=True)
class Setting(Generic[T]):
    """One environment variable. ``default`` is a value, or a function of the same environment
    (so ``$TICKRUN_HOME/artifacts`` follows ``TICKRUN_HOME``); ``default_doc`` says it in text."""

    name: str
    parse: Callable[[str], T]
    default: T | Callable[[Env], T]
    doc: str
    group: str
    type_name: str
    default_doc: str | None = None
    secret: bool = False  # never printed: not its value in an error, nor its default in the docs
    internal: bool = False  # set by tickrun for the processes it starts

    def raw(self, env: Env | None = None) -> str | None:
        """The variable's text, None when unset; an empty value counts as unset."""
        value = (os.environ if env is None else env).get(self.name)
        return value or None

    def is_set(self, env: Env | None = None) -> bool:
        return self.raw(env) is not None

    def lookup(self, env: Env | None = None) -> T | None:
        """The parsed value when the variable is set, else None (the caller's own default)."""
        raw = self.raw(env)
        if raw is None:
            return None
        try:
            return self.parse(raw)
        except ValueError as exc:
            if self.secret:  # the parser's message may quote the value
                raise SpecError(f"{self.name} is not a valid {self.type_name}") from None
            raise SpecError(f"{self.name}={raw!r} is not a valid {self.type_name}: {exc}") from exc

    def default_for(self, env: Env | None = None) -> T:
        if callable(self.default):
            return self.default(os.environ if env is None else env)
        return self.default

    @property
    def fixed_default(self) -> T:
        """The default of a variable that derives from no other (e.g. a pydantic field's)."""
        if callable(self.default):
            raise TypeError(f"{self.name}'s default derives from the environment")
        return self.default

    def get(self, env: Env | None = None) -> T:
        """The value in ``env`` (default ``os.environ``), or the default."""
        value = self.lookup(env)
        return self.default_for(env) if value is None else value


REGISTRY: dict[str, Setting[object]] = {}
GROUPS = (
    "paths", "tracking", "object store", "controller", "edge", "hub", "logging",
    "replica (set by tickrun)",
)  # fmt: skip


def define(
    name: str,
    parse: Callable[[str], T],
    default: T | Callable[[Env], T],
    doc: str,
    group: str,
    *,
    type_name: str | None = None,
    default_doc: str | None = None,
    secret: bool = False,
    internal: bool = False,
) -> Setting[T]:
    if name in REGISTRY:
        raise ValueError(f"{name} is defined twice")
    if group not in GROUPS:
        raise ValueError(f"{name}: unknown group {group!r}")
    if callable(default) and default_doc is None:
        raise ValueError(f"{name}: a derived default needs default_doc")
    type_name = type_name or _TYPE_NAMES.get(parse) or str(getattr(parse, "__name__", "text"))
    setting = Setting(name, parse, default, doc, group, type_name, default_doc, secret, internal)
    REGISTRY[name] = setting  # type: ignore[assignment]
    return setting


# --- parsers: raise ValueError, which Setting.lookup turns into a SpecError naming the variable ---

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def boolean(raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError("expected one of 1/true/yes/on or 0/false/no/off")


def integer(raw: str) -> int:
    return int(raw.strip())


def number(raw: str) -> float:
    return float(raw.strip())


def path(raw: str) -> Path:
    return Path(raw).expanduser()


def text(raw: str) -> str:
    return raw


def port_range(raw: str) -> tuple[int, int]:
    """``lo-hi`` (or one port); the bounds are checked where the range is used."""
    lo, _, hi = raw.strip().partition("-")
    try:
        return int(lo), int(hi or lo)
    except ValueError:
        raise ValueError("expected lo-hi, e.g. 20000-29999") from None


def comma_list(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def broker_list(raw: str) -> tuple[str, ...]:
    """Comma-separated Kafka bootstrap addresses, each ``host:port``."""
    brokers = comma_list(raw)
    if not brokers:
        raise ValueError("expected host:port[,host:port...]")
    for broker in brokers:
        host, sep, port = broker.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"broker {broker!r} is not host:port")
    return brokers


def path_list(raw: str) -> tuple[str, ...]:
    return tuple(item for item in raw.split(os.pathsep) if item.strip())


_TYPE_NAMES: dict[Callable[[str], object], str] = {
    boolean: "bool",
    integer: "int",
    number: "float",
    path: "path",
    port_range: "lo-hi",
    comma_list: "list",
    broker_list: "list",
    path_list: "list",
}


def one_of(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return value

    parse.__name__ = " | ".join(choices)
    return parse


def registry_ref(raw: str) -> str:
    """``host[:port][/path]``: where function images are pushed (no scheme: TLS is
    TICKRUN_REGISTRY_TLS_VERIFY's business, as with podman)."""
    value = raw.strip().rstrip("/")
    if "://" in value:
        raise ValueError("give host[:port][/path] without a scheme")
    host, _, path = value.partition("/")
    if not host or " " in value or (path and path != path.lower()):
        raise ValueError("expected host[:port][/lowercase/path], e.g. 127.0.0.1:5000/tickrun")
    return value


# --- the variables ----------------------------------------------------------------------------

HOME = define(
    "TICKRUN_HOME", path, lambda env: Path.home() / ".tickrun",
    "the one state root: runs, artifacts, controller state and caches live under it by default",
    "paths", default_doc="~/.tickrun",
)  # fmt: skip
STATE_DIR = define(
    "TICKRUN_STATE_DIR", path, lambda env: HOME.get(env) / "controller",
    "the controller's state: its DB, token, URL file, code, logs, builds (no XDG_STATE_HOME)",
    "paths", default_doc="$TICKRUN_HOME/controller",
)  # fmt: skip
CACHE = define(
    "TICKRUN_CACHE", path, lambda env: HOME.get(env) / "cache",
    "caches shared by controllers on one host: wheels, environments, remote hub items "
    "(no XDG_CACHE_HOME; deploy/peers keeps the test peers in $TICKRUN_CACHE/peers, "
    "default ~/.cache/tickrun/peers)",
    "paths", default_doc="$TICKRUN_HOME/cache",
)  # fmt: skip
HUB_CACHE = define(
    "TICKRUN_HUB_CACHE", path, lambda env: CACHE.get(env) / "hub",
    "where items of a remote hub are downloaded", "paths", default_doc="$TICKRUN_CACHE/hub",
)  # fmt: skip
DATA_DIR = define(
    "TICKRUN_DATA_DIR", path, None,
    "the folder of the hub's sample market data, instead of the copy bundled with tickrun",
    "paths", default_doc="the bundled copy",
)  # fmt: skip

DB_URL = define(
    "TICKRUN_DB_URL", text, lambda env: f"sqlite:///{HOME.get(env) / 'runs.db'}",
    "SQLAlchemy URL of the run DB; for the controller, its store (default <state>/tickrun.db)",
    "tracking", type_name="url", default_doc="sqlite:///$TICKRUN_HOME/runs.db",
)  # fmt: skip
CONTROLLER_URL = define(
    "TICKRUN_CONTROLLER_URL", text, None,
    "a controller: runs are tracked in its store (unless TICKRUN_DB_URL), deploys go to it",
    "tracking", type_name="url",
)  # fmt: skip
TOKEN = define(
    "TICKRUN_TOKEN", text, None,
    "bearer token of the controller (default: the state dir's file 'token')", "tracking",
    secret=True,
)  # fmt: skip
ARTIFACT_PATH = define(
    "TICKRUN_ARTIFACT_PATH", text, lambda env: str(HOME.get(env) / "artifacts"),
    "where artifacts go: a folder or s3://bucket/prefix", "tracking", type_name="path or URL",
    default_doc="$TICKRUN_HOME/artifacts",
)  # fmt: skip
ARTIFACT_STORES = define(
    "TICKRUN_ARTIFACT_STORES", comma_list, (),
    "more stores (comma-separated folders or s3://bucket[/prefix]) artifact records may point into",
    "tracking",
)  # fmt: skip
FLUSH_INTERVAL_S = define(
    "TICKRUN_FLUSH_INTERVAL_S", number, 1.0, "how often a run's buffered results reach the DB",
    "tracking",
)  # fmt: skip
STALE_AFTER_S = define(
    "TICKRUN_STALE_AFTER_S", number, 60.0,
    "a running run whose heartbeat is older is marked aborted", "tracking",
)  # fmt: skip

S3_ENDPOINT = define(
    "TICKRUN_S3_ENDPOINT", text, "", "host:port or http(s)://host:port of S3 / MinIO",
    "object store",
)  # fmt: skip
S3_ACCESS_KEY = define(
    "TICKRUN_S3_ACCESS_KEY", text, None, "access key (else AWS_ACCESS_KEY_ID)", "object store",
    secret=True,
)  # fmt: skip
S3_SECRET_KEY = define(
    "TICKRUN_S3_SECRET_KEY", text, None, "secret key (else AWS_SECRET_ACCESS_KEY)", "object store",
    secret=True,
)  # fmt: skip
S3_SECURE = define(
    "TICKRUN_S3_SECURE", boolean, True, "TLS when the endpoint has no scheme", "object store"
)
S3_REGION = define("TICKRUN_S3_REGION", text, None, "region", "object store")
S3_CA_BUNDLE = define(
    "TICKRUN_S3_CA_BUNDLE", text, None, "a CA file to verify the endpoint's certificate",
    "object store", type_name="path",
)  # fmt: skip

CONTROLLER_HOST = define(
    "TICKRUN_CONTROLLER_HOST", text, "127.0.0.1", "address the controller listens on", "controller"
)
CONTROLLER_PORT = define(
    "TICKRUN_CONTROLLER_PORT", integer, 8070, "port of the controller's API", "controller"
)
# Where a function's replicas can run (a controller offers those it has what for).
PLATFORMS = ("process", "container", "kubernetes")
PLATFORM = define(
    "TICKRUN_PLATFORM", one_of(*PLATFORMS), "process",
    "where replicas run unless a deploy says", "controller",
)  # fmt: skip


def platform_list(raw: str) -> tuple[str, ...]:
    """Comma-separated platform names, each one of PLATFORMS."""
    names = comma_list(raw)
    unknown = [n for n in names if n not in PLATFORMS]
    if unknown or not names:
        raise ValueError(f"expected a comma list of {', '.join(PLATFORMS)}")
    return tuple(dict.fromkeys(names))


OFFERED_PLATFORMS = define(
    "TICKRUN_PLATFORMS", platform_list, (),
    "the platforms this controller offers, comma-separated (the Helm chart offers only "
    "kubernetes); a deploy to any other is refused", "controller", type_name="list",
    default_doc="every platform it can run: process, container with an engine, kubernetes "
    "with a cluster",
)  # fmt: skip
PORT_RANGE = define(
    "TICKRUN_PORT_RANGE", port_range, (20000, 29999),
    "ports handed to replicas (within 1024-65535)", "controller",
)  # fmt: skip
CONTAINER_ENGINE = define(
    "TICKRUN_CONTAINER_ENGINE", one_of("podman", "buildah", "docker"), None,
    "force a container engine", "controller", default_doc="the first of podman, buildah, docker",
)  # fmt: skip
BASE_IMAGE = define(
    "TICKRUN_BASE_IMAGE", text, "python:3.11-slim", "base image of function images", "controller"
)
K8S_NAMESPACE = define(
    "TICKRUN_K8S_NAMESPACE", text, "tickrun",
    "the Kubernetes namespace the kubernetes platform puts functions in", "controller",
)  # fmt: skip
K8S_AUTOSCALER = define(
    "TICKRUN_K8S_AUTOSCALER", one_of("tickrun", "keda"), "tickrun",
    "who scales autoscaled kubernetes functions: tickrun drives the Deployment's scale "
    "subresource (and an HPA for targetCPU); keda emits a KEDA ScaledObject per function "
    "(kafka, cron and cpu triggers) and tickrun leaves the count alone", "controller",
)  # fmt: skip
KUBECONFIG = define(
    "TICKRUN_KUBECONFIG", path, None,
    "kubeconfig of the cluster the kubernetes platform deploys to", "controller",
    default_doc="the pod's service account when the controller runs in a pod; else the "
    "kubernetes platform is not offered",
)  # fmt: skip
K8S_JOB_CONTROLLER_URL = define(
    "TICKRUN_K8S_JOB_CONTROLLER_URL", text, None,
    "the controller's URL as the pods of a `--runner kubernetes` job reach it, e.g. "
    "http://tickrun.tickrun.svc:8070", "tracking", type_name="url",
    default_doc="TICKRUN_CONTROLLER_URL",
)  # fmt: skip
K8S_JOB_S3_ENDPOINT = define(
    "TICKRUN_K8S_JOB_S3_ENDPOINT", text, None,
    "the S3 / MinIO endpoint as the pods of a `--runner kubernetes` job reach it",
    "object store", default_doc="TICKRUN_S3_ENDPOINT",
)  # fmt: skip
REGISTRY_URL = define(
    "TICKRUN_REGISTRY", registry_ref, None,
    "registry the builder pushes kubernetes images to, e.g. registry.example:5000/tickrun; "
    "pods then pull the image by digest (unset: images stay local)", "controller",
    type_name="host[:port][/path]",
)  # fmt: skip
REGISTRY_AUTH_FILE = define(
    "TICKRUN_REGISTRY_AUTH_FILE", path, None,
    "credentials for the registry: a containers auth.json or docker config.json", "controller",
)  # fmt: skip
REGISTRY_USERNAME = define(
    "TICKRUN_REGISTRY_USERNAME", text, None,
    "registry user (with TICKRUN_REGISTRY_PASSWORD; wins over the auth file)", "controller",
)  # fmt: skip
REGISTRY_PASSWORD = define(
    "TICKRUN_REGISTRY_PASSWORD", text, None,
    "registry password or token (handed to podman in a 0600 auth file, never an argument)",
    "controller", secret=True,
)  # fmt: skip
REGISTRY_TLS_VERIFY = define(
    "TICKRUN_REGISTRY_TLS_VERIFY", boolean, True,
    "verify the registry's TLS certificate (false: also plain http, for a loopback registry)",
    "controller",
)  # fmt: skip
KAFKA_BROKERS = define(
    "TICKRUN_KAFKA_BROKERS", broker_list, (),
    "the cluster's Kafka brokers (host:port, comma-separated): a kafka-cluster trigger that "
    "names no brokers gets these, filled into its spec by the controller at deploy; a replica "
    "run without a controller (tickrun serve) reads the variable from its own environment",
    "controller",
)  # fmt: skip
REPLICA_LOG_MAX_BYTES = define(
    "TICKRUN_REPLICA_LOG_MAX_BYTES", integer, 16 * 1024 * 1024,
    "a replica's log is rotated past this size (one old generation kept)", "controller",
)  # fmt: skip
LAG_INTERVAL_S = define(
    "TICKRUN_LAG_INTERVAL_S", number, 1.0,
    "how often the controller reads the consumer-group lag of Kafka-triggered functions",
    "controller",
)  # fmt: skip
CRON_WAKE_LEAD_S = define(
    "TICKRUN_CRON_WAKE_LEAD_S", number, 10.0,
    "a function scaled to zero is woken this long before a cron firing (its start-up time)",
    "controller",
)  # fmt: skip

PUBLIC_GATEWAY = define(
    "TICKRUN_PUBLIC_GATEWAY", boolean, False, "serve /fn/… and function ports without the token",
    "edge",
)  # fmt: skip
FUNCTION_PORTS = define(
    "TICKRUN_FUNCTION_PORTS", boolean, True, "a TCP gateway port per function", "edge"
)
HEADER_TIMEOUT_S = define(
    "TICKRUN_HEADER_TIMEOUT_S", number, 10.0, "close a connection whose request head is unfinished",
    "edge",
)  # fmt: skip
KEEPALIVE_TIMEOUT_S = define(
    "TICKRUN_KEEPALIVE_TIMEOUT_S", number, 30.0, "close a connection idle between requests", "edge"
)
BODY_TIMEOUT_S = define(
    "TICKRUN_BODY_TIMEOUT_S", number, 30.0,
    "close a connection whose request body stalls this long", "edge",
)  # fmt: skip
MAX_CONNECTIONS = define(
    "TICKRUN_MAX_CONNECTIONS", integer, 1000,
    "client connections at once (also bounded by the fd limit)", "edge",
)  # fmt: skip
PROXY = define(
    "TICKRUN_PROXY", one_of("python", "haproxy", "auto"), "auto",
    "the public front: the Python edge and gateway, HAProxy in front (Debian's package), or "
    "HAProxy when installed (else Python)", "edge",
)  # fmt: skip

HUB_PATH = define(
    "TICKRUN_HUB_PATH", path_list, (), "private hub folders, os.pathsep-separated", "hub"
)
HUB_URL = define(
    "TICKRUN_HUB_URL", text, None, "a remote hub, e.g. https://controller:8070/api/hub", "hub",
    type_name="url",
)  # fmt: skip
HUB_ALLOW_HTTP = define(
    "TICKRUN_HUB_ALLOW_HTTP", boolean, False, "let the remote hub be plain http", "hub"
)
HUB_PINS = define(
    "TICKRUN_HUB_PINS", text, None, "a pin file private and remote items must match", "hub",
    type_name="path",
)  # fmt: skip

LOG_FORMAT = define(
    "TICKRUN_LOG_FORMAT", one_of("json", "text"), None,
    "log line format; replicas and workers default to json", "logging",
    default_doc="json unless stderr is a terminal",
)  # fmt: skip
LOG_LEVEL = define("TICKRUN_LOG_LEVEL", text, "INFO", "root log level of replicas", "logging")
LOG_LEVELS = define(
    "TICKRUN_LOG_LEVELS", text, "", "per-logger levels, e.g. kafka=DEBUG,urllib3=INFO", "logging"
)

_R = "replica (set by tickrun)"
FUNCTION = define("TICKRUN_FUNCTION", text, None, "the replica's function", _R, internal=True)
REPLICA_ID = define("TICKRUN_REPLICA_ID", text, None, "the replica's id", _R, internal=True)
CONTROLLER_ID = define(
    "TICKRUN_CONTROLLER_ID", text, None, "the controller that started the replica", _R,
    internal=True,
)  # fmt: skip
GATEWAY_URL = define(
    "TICKRUN_GATEWAY_URL", text, "http://127.0.0.1:8070",
    "where context.platform.call_function sends calls", _R, type_name="url", internal=True,
)  # fmt: skip
BUILD_DIR = define(
    "TICKRUN_BUILD_DIR", text, None, "the function's build/ folder", _R, type_name="path",
    internal=True,
)  # fmt: skip
WORKER_CONFIG = define(
    "TICKRUN_WORKER_CONFIG", text, None, "a worker process's config (JSON)", _R, type_name="json",
    internal=True,
)  # fmt: skip
READY_DIR = define(
    "TICKRUN_READY_DIR", text, None, "where workers report ready or failed", _R, type_name="path",
    internal=True,
)  # fmt: skip
STATS_DIR = define(
    "TICKRUN_STATS_DIR", text, None, "where workers write their stats", _R, type_name="path",
    internal=True,
)  # fmt: skip
PARENT_PID = define(
    "TICKRUN_PARENT_PID", text, None, "a child exits when this process is gone", _R,
    type_name="pid", internal=True,
)  # fmt: skip


# --- the docs table ---------------------------------------------------------------------------


def _default_text(setting: Setting[object]) -> str:
    if setting.secret:
        return ""
    if setting.default_doc is not None:
        return setting.default_doc
    value = setting.default
    if value is None or value in ("", ()):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "-".join(str(v) for v in value)
    return str(value)


def render_markdown() -> str:
    """docs/settings.md: every variable by group, with its type, default and meaning."""
    lines = [
        "# Settings",
        "",
        "<!-- generated: python -m tickrun.functions.settings > docs/settings.md -->",
        "",
        "Every `TICKRUN_*` environment variable, from `functions/settings.py`. An empty value "
        "counts as unset. Everything local lives under `TICKRUN_HOME` unless its own variable "
        "says otherwise; `XDG_STATE_HOME` and `XDG_CACHE_HOME` are not consulted.",
    ]
    for group in GROUPS:
        lines += ["", f"## {group}", "", "| variable | type | default | meaning |"]
        lines.append("|---|---|---|---|")
        for s in REGISTRY.values():
            if s.group == group:
                default = _default_text(s)
                cell = f"`{default}`" if default and " " not in default else default
                note = " (secret)" if s.secret else ""
                lines.append(f"| `{s.name}` | {s.type_name} | {cell} | {s.doc}{note} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render_markdown(), end="")
