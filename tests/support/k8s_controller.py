"""What the tests on the real control plane share: a namespace of their own, polling helpers,
and the controller's reconciler in-process on the kubernetes platform with a function row saved
as ``deploying`` (the state the API leaves it in before the reconciler applies it)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from kubernetes import client as k8s

from tests.peers.k8s import KubeControlPlane
from tickrun.controller.builder import Builder
from tickrun.controller.platforms.base import ClusterPlatform
from tickrun.controller.platforms.kubernetes.platform import KubernetesPlatform
from tickrun.controller.reconciler import Reconciler
from tickrun.controller.service import FunctionService, make_private_dirs
from tickrun.controller.settings import Settings
from tickrun.controller.store import FunctionRow, Store
from tickrun.functions.spec import FunctionSpec

T = TypeVar("T")


def eventually(
    probe: Callable[[], T | None], what: str, timeout: float = 60.0, interval_s: float = 0.25
) -> T:
    """``probe()`` once it is not None."""
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got is not None:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval_s)


@contextmanager
def kube_namespace(kube: KubeControlPlane, prefix: str) -> Iterator[str]:
    """A fresh namespace, deleted afterwards (the control plane is shared between tests)."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    with kube.admin_client() as api:
        core = k8s.CoreV1Api(api)
        core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
        # Pods need the namespace's "default" ServiceAccount, made by the controller manager.
        eventually(lambda: core.list_namespaced_service_account(name).items or None, "SA", 30)
        try:
            yield name
        finally:
            core.delete_namespace(name)


def deployment(kube: KubeControlPlane, ns: str, name: str) -> Any:
    with kube.admin_client() as api:
        return k8s.AppsV1Api(api).read_namespaced_deployment(name, ns)


async def until(
    reconciler: Reconciler, cond: Callable[[], Any], what: str, timeout_s: float = 40.0
) -> float:
    """Run reconcile passes until ``cond``; the seconds it took."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        await reconciler.tick()
        if cond():
            return time.monotonic() - t0
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class InProcessController:
    settings: Settings
    store: Store
    platform: KubernetesPlatform
    service: FunctionService
    reconciler: Reconciler

    def save_deploying(self, name: str, spec: FunctionSpec) -> None:
        """Record ``name`` as the API does before the reconciler's first pass applies it."""
        now = time.time()
        self.store.save_function(
            FunctionRow(
                name=name,
                spec=spec,
                platform="kubernetes",
                version=1,
                state="deploying",
                message="",
                code_hash="c" * 64,
                artifact={"image": f"localhost/tickrun/{name}:1"},
                revision="r1",
                created_at=now,
                updated_at=now,
            )
        )


@asynccontextmanager
async def in_process_controller(
    tmp_path: Path, platform: KubernetesPlatform, controller_id: str, **settings: Any
) -> AsyncIterator[InProcessController]:
    """The controller's store, service and reconciler on ``platform`` (closed afterwards, with
    the reconciler's lag monitor stopped if a test started it). ``settings``: Settings fields
    beyond its state and cache folders under ``tmp_path``."""
    conf = Settings(state_dir=tmp_path / "state", cache_dir=tmp_path / "cache", **settings)
    make_private_dirs(conf)
    store = Store(conf.database_url)
    store.open()
    clusters: dict[str, ClusterPlatform] = {"kubernetes": platform}
    service = FunctionService(conf, store, Builder(conf), {}, clusters)
    reconciler = Reconciler(conf, store, service, {}, controller_id)
    try:
        yield InProcessController(conf, store, platform, service, reconciler)
    finally:
        await asyncio.to_thread(reconciler.lag.stop)
        await platform.close()
        store.close()
