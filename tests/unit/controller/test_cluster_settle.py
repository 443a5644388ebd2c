"""A status pass marks a function ready only over the row it read: a deploy that came in during
the pass's awaits keeps its state (CI once saw `wait_ready(version=N+1)` return on the old
revision: the pass had read version N "deploying" and wrote "ready" over N+1 "building")."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from tests.support.controller_rows import function_row
from tickrun.controller.cluster import ClusterReconciler
from tickrun.controller.platforms.base import PodStatus, WorkloadStatus
from tickrun.controller.store import Store


def _rolled(revision: str, pods: int) -> WorkloadStatus:
    ready = [
        PodStatus(
            name=f"p{i}",
            ready=True,
            restarts=0,
            phase="Running",
            reason="",
            ip=None,
            revision=revision,
        )
        for i in range(pods)
    ]
    return WorkloadStatus(
        revision=revision, desired=pods, updated=pods, ready=pods, available=pods, pods=ready
    )


def _reconciler(store: Store) -> ClusterReconciler:
    service: Any = SimpleNamespace(clusters={}, platforms={})
    return ClusterReconciler(
        settings=None,  # type: ignore[arg-type]
        store=store,
        service=service,
        endpoints=None,  # type: ignore[arg-type]
        controller_id="c",
        unready={},
    )


async def test_a_pass_never_marks_ready_over_a_deploy_that_came_in_meanwhile(
    tmp_path: Path,
) -> None:
    store = Store(f"sqlite:///{tmp_path / 'state.db'}")
    store.open()
    try:
        row = function_row("f", version=2, state="deploying")
        row.revision = "r1"
        store.save_function(row)
        recon = _reconciler(store)
        cluster: Any = SimpleNamespace(name="kubernetes")
        stale = store.get_function("f")  # what the pass read before its cluster calls
        store.update_function("f", version=3, state="building")  # a code change's deploy
        await recon._settle(stale, cluster, _rolled("r1", 2), want=2)
        now = store.get_function("f")
        assert (now.version, now.state) == (3, "building")
        assert not [e for e in store.list_events("f") if e.kind == "ready"]

        # The build done (a new revision, deploying) and rolled out: the next pass marks it.
        store.update_function("f", state="deploying", revision="r2")
        await recon._settle(store.get_function("f"), cluster, _rolled("r2", 2), want=2)
        assert store.get_function("f").state == "ready"
        assert [e for e in store.list_events("f") if e.kind == "ready"]
    finally:
        store.close()
