"""Session-scoped real peers for integration tests: ``kafka_broker``, ``minio_server``,
``podman_env``, ``kube`` (a Kubernetes control plane with kwok nodes), ``postgres`` and
``registry`` (a container registry with htpasswd auth).

A peer that cannot be provided FAILS the tests that need it (never skips): CI must not go green
because Kafka, MinIO or podman silently went missing. Provision peers with
``deploy/peers/ensure.sh all`` first.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn, Protocol, TypeVar

import pytest

_REPO_ROOT = Path(__file__).resolve().parents[2]
if str(_REPO_ROOT) not in sys.path:
    # `python -m pytest` puts the repo root on sys.path; plain `pytest` does not.
    sys.path.insert(0, str(_REPO_ROOT))

from tests.peers import (  # noqa: E402
    KafkaBroker,
    MinioServer,
    PeerUnavailable,
    require_base_image,
)
from tests.peers.k8s import KubeControlPlane  # noqa: E402
from tests.peers.postgres import PostgresServer  # noqa: E402
from tests.peers.registry import RegistryServer  # noqa: E402

logger = logging.getLogger(__name__)

# Peer start-up times, printed in the terminal summary so CI logs show where setup time goes.
_STARTUP_SECONDS: dict[str, float] = {}


def _unavailable(peer: str, exc: BaseException) -> NoReturn:
    # `from None`: the PeerUnavailable message already says everything; chaining would print
    # it twice under "During handling of the above exception".
    raise pytest.fail.Exception(f"{peer} peer unavailable: {exc}", pytrace=False) from None


class _Peer(Protocol):
    startup_seconds: float | None

    def start(self) -> object: ...

    def stop(self) -> None: ...


P = TypeVar("P", bound=_Peer)


def _running(peer: P, name: str, key: str) -> Iterator[P]:
    """Start ``peer`` for the session (failing, never skipping, when it cannot be had), record
    its start-up time under ``key``, stop it afterwards."""
    try:
        peer.start()
    except PeerUnavailable as exc:
        _unavailable(name, exc)
    except BaseException:
        peer.stop()
        raise
    _STARTUP_SECONDS[key] = peer.startup_seconds or 0.0
    try:
        yield peer
    finally:
        peer.stop()


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaBroker]:
    """A real single-node Kafka 3.9 broker (KRaft). Use ``.bootstrap_servers`` and
    ``.create_topic()``; the broker allows consumer session timeouts down to 1 s."""
    yield from _running(KafkaBroker(), "Kafka", "kafka")


@pytest.fixture(scope="session")
def minio_server() -> Iterator[MinioServer]:
    """A real MinIO server with random root credentials (``.endpoint``, ``.access_key``,
    ``.secret_key``, ``.client()``)."""
    yield from _running(MinioServer(), "MinIO", "minio")


@pytest.fixture(scope="session")
def podman_env() -> dict[str, str]:
    """Environment for running ``podman`` with tickrun's containers.conf and image store
    (CONTAINERS_CONF, CONTAINERS_STORAGE_CONF, TICKRUN_BASE_IMAGE); the base image is
    guaranteed to exist. Tests must not mutate it: copy before changing."""
    t0 = time.monotonic()
    try:
        env = require_base_image()
    except PeerUnavailable as exc:
        _unavailable("podman", exc)
    _STARTUP_SECONDS["podman"] = time.monotonic() - t0
    return env


@pytest.fixture(scope="session")
def kube() -> Iterator[KubeControlPlane]:
    """A real Kubernetes control plane (etcd, kube-apiserver with RBAC, controller-manager,
    scheduler) with two kwok nodes: ``.kubeconfig_path``, ``.admin_client()``,
    ``.service_account_kubeconfig(namespace, name)``. Pods are simulated (no container runs).
    Tests share it: work in a namespace of your own and delete it afterwards."""
    yield from _running(KubeControlPlane(), "Kubernetes", "kube")


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL server: ``.url`` (SQLAlchemy, psycopg 3) of database ``tickrun``;
    ``.create_database(name)`` gives an isolated one."""
    yield from _running(PostgresServer(), "PostgreSQL", "postgres")


@pytest.fixture(scope="session")
def registry() -> Iterator[RegistryServer]:
    """A real CNCF distribution registry on loopback (plain http) with htpasswd auth:
    ``.host``, ``.username``, ``.password``, ``.manifest_digest(repo, tag)``,
    ``.requests(method, path_part)`` (counted in its access log)."""
    yield from _running(RegistryServer(), "registry", "registry")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _STARTUP_SECONDS:
        parts = ", ".join(f"{name} {secs:.1f}s" for name, secs in _STARTUP_SECONDS.items())
        terminalreporter.write_line(f"peer start-up: {parts}")
