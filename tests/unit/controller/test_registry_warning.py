"""A kubernetes deploy without TICKRUN_REGISTRY still works (a cluster that shares the controller's
image store, or kwok, never pulls) but says that real nodes cannot pull its image; with a registry
it says nothing. The cluster platform is a stand-in: the warning depends on settings alone."""

from __future__ import annotations

from pathlib import Path

from tickrun.controller.builder import Builder
from tickrun.controller.platforms.base import ClusterPlatform, PodLogs, Workload, WorkloadStatus
from tickrun.controller.service import FunctionService
from tickrun.controller.settings import Settings
from tickrun.controller.store import Store
from tickrun.functions.spec import parse_spec


class ActsOnEverything(ClusterPlatform):
    name = "kubernetes"
    port = 8080

    async def apply(self, workload: Workload) -> None:
        raise AssertionError("not deployed here")

    async def scale(self, function: str, replicas: int) -> None:
        raise AssertionError("not deployed here")

    async def status(self, function: str) -> WorkloadStatus | None:
        return None

    async def remove(self, function: str) -> None:
        raise AssertionError("not deployed here")

    async def adopt(self, controller_id: str) -> set[str]:
        return set()

    async def logs(self, function: str, tail: int) -> list[PodLogs]:
        return []


def _service(tmp_path: Path, **settings: object) -> FunctionService:
    s = Settings(state_dir=tmp_path / "state", cache_dir=tmp_path / "cache", **settings)  # type: ignore[arg-type]
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    return FunctionService(s, store, Builder(s), {}, {"kubernetes": ActsOnEverything()})


SPEC = parse_spec({"metadata": {"name": "scorer"}, "spec": {"handler": "main:handler"}})


async def test_kubernetes_without_a_registry_warns_that_nodes_cannot_pull(tmp_path: Path) -> None:
    warnings = await _service(tmp_path).spec_warnings(SPEC, "kubernetes")
    assert warnings == [
        "no registry is set (TICKRUN_REGISTRY): the kubernetes platform runs the local image "
        "localhost/tickrun/scorer, which the nodes of a real cluster cannot pull"
    ]


async def test_kubernetes_with_a_registry_and_other_platforms_do_not_warn(
    tmp_path: Path,
) -> None:
    with_registry = _service(tmp_path, registry="127.0.0.1:5000/tickrun")
    assert await with_registry.spec_warnings(SPEC, "kubernetes") == []
    assert await _service(tmp_path).spec_warnings(SPEC, "process") == []


async def test_a_per_function_build_registry_is_warned_about_on_every_platform(
    tmp_path: Path,
) -> None:
    nuclio = parse_spec(
        {
            "metadata": {"name": "scorer"},
            "spec": {"handler": "main:handler", "build": {"registry": "quay.io/team"}},
        }
    )
    service = _service(tmp_path, registry="127.0.0.1:5000/tickrun")
    for platform in ("kubernetes", "process"):
        assert await service.spec_warnings(nuclio, platform) == [
            "spec field build.registry is accepted but not acted on: images are pushed to the "
            "controller's registry (TICKRUN_REGISTRY), if any"
        ]
