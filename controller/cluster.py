"""The cluster reconciler: brings a function on a cluster platform (Kubernetes) to its revision
and replica count by handing the cluster a workload, and reads the cluster's view back.

The cluster starts, probes, restarts and rolls the pods; tickrun does not do it again on top.
Per pass and function: apply when the applied revision differs from the function's, scale when
the autoscaler's count differs from the applied one, then mirror the pods into replica rows (so
``tickrun get`` and the API show them as for the other platforms), publish ready pods' addresses
into the endpoint table, write the cluster's events as function events, and move the function to
ready (or error). :class:`~controller.reconciler.Reconciler` calls it for the functions whose
platform is a :class:`ClusterPlatform`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from tickrun.functions.errors import TickrunError

from .endpoints import EndpointTable
from .platforms.base import ClusterPlatform, PodStatus, Workload, WorkloadStatus
from .service import FunctionService, replica_ref
from .settings import Settings
from .store import FunctionRow, ReplicaRow, Store

logger = logging.getLogger(__name__)

# The cluster is asked for a function's status at most this often while it rolls out (the
# reconciler's loop runs every 50 ms while anything is starting), and this often once it is
# ready (a pod the cluster restarts shows within it).
POLL_S = 0.25
STEADY_POLL_S = 2.0
# After an apply or scale the cluster refused, the next attempt waits this long.
RETRY_S = 5.0


def image_ref(artifact: dict[str, object]) -> str:
    """What the pods pull: by digest once the builder recorded one (``image_digest``: a
    ``repo@sha256:…`` reference, or the bare ``sha256:…`` of ``image``), else the tag."""
    image = str(artifact["image"])
    digest = artifact.get("image_digest")
    if not digest:
        return image
    digest = str(digest)
    if "@" in digest:
        return digest
    repo = image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image
    return f"{repo}@{digest}"


def pod_state(pod: PodStatus) -> str:
    if pod.terminating:
        return "stopping"
    if pod.ready:
        return "ready"
    return "failed" if pod.failed else "starting"


class ClusterReconciler:
    """Constructor does no I/O. ``unready`` is the reconciler's map of why a starting replica
    is not ready (shown by the API), filled here for pods."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        service: FunctionService,
        endpoints: EndpointTable,
        controller_id: str,
        unready: dict[str, str],
    ) -> None:
        self.settings = settings
        self.store = store
        self.service = service
        self.clusters: dict[str, ClusterPlatform] = service.clusters
        self.endpoints = endpoints
        self.controller_id = controller_id
        self.unready = unready
        # function → (cluster, revision applied, replicas asked for)
        self._applied: dict[str, tuple[str, str | None, int]] = {}
        # function → the replica bounds its HPA or ScaledObject was applied with: they are not
        # part of the revision (a count change never rebuilds), yet the cluster's scaler holds
        # them, so a change re-applies.
        self._bounds: dict[str, tuple[int, int] | None] = {}
        self._polled: dict[str, float] = {}
        self._retry_at: dict[str, float] = {}
        self._trouble: dict[str, str] = {}
        self._seen: dict[str, set[str]] = {}  # cluster event ids already written
        self._quiet: set[str] = set()  # adopted: their older events were written before

    def owns(self, fn: FunctionRow) -> bool:
        return fn.platform in self.clusters

    def forget(self, function: str) -> None:
        self._applied.pop(function, None)
        self._bounds.pop(function, None)
        self._polled.pop(function, None)
        self._retry_at.pop(function, None)
        self._trouble.pop(function, None)
        self._seen.pop(function, None)
        self._quiet.discard(function)

    # --- after a controller restart -------------------------------------------------------------

    async def adopt(self) -> None:
        """Functions found on a cluster by this controller's labels are its own again; objects
        of a function the store does not have there (deleted or moved while the controller was
        down) are removed, so nothing is ever left running twice."""
        for name, cluster in self.clusters.items():
            try:
                found = await cluster.adopt(self.controller_id)
            except TickrunError as exc:
                logger.warning("cannot re-adopt", extra={"platform": name, "error": exc.message})
                continue
            for function in sorted(found):
                fn = self.store.find_function(function)
                if fn is not None and fn.platform == name and fn.state != "deleting":
                    self._quiet.add(function)
                    self.store.add_event(
                        function, "adopted", f"re-adopted on {name} after a controller restart"
                    )
                    continue
                if fn is not None and fn.state == "deleting":
                    continue  # finish_deletes removes it
                logger.warning("removing an unrecorded function", extra={"function": function})
                try:
                    await cluster.remove(function)
                except TickrunError as exc:
                    logger.warning(
                        "cannot remove", extra={"function": function, "error": exc.message}
                    )

    async def sweep(self, functions: Sequence[FunctionRow]) -> None:
        """A function redeployed from a cluster onto a replica platform leaves the cluster once
        it is ready where it is now."""
        for fn in functions:
            where = self._applied.get(fn.name)
            if where is None or self.owns(fn) or fn.state != "ready":
                continue
            try:
                await self.clusters[where[0]].remove(fn.name)
            except TickrunError as exc:
                logger.warning("cannot remove", extra={"function": fn.name, "error": exc.message})
                continue
            self.forget(fn.name)
            self.store.add_event(fn.name, "cluster_removed", f"removed from {where[0]}")

    # --- one pass -------------------------------------------------------------------------------

    async def reconcile(self, fn: FunctionRow, desired: int) -> None:
        cluster = self.clusters[fn.platform]
        if fn.revision is None or fn.artifact is None:
            return  # the first build is still running
        now = time.monotonic()
        autoscaled = cluster.owns_count(fn.spec)
        lo, hi = fn.spec.spec.replica_bounds()
        bounds = (int(lo), int(hi)) if autoscaled else None
        try:
            if fn.name not in self._applied:
                # After a start: what the cluster runs already need not be applied again.
                current = await cluster.status(fn.name)
                if current is not None:
                    self._applied[fn.name] = (cluster.name, current.revision, current.desired)
            _, revision, asked = self._applied.get(fn.name, (cluster.name, None, -1))
            # After a start the bounds applied are unknown: a scaler's are applied once more.
            unknown = (-1, -1) if autoscaled else None
            rescaler = self._bounds.get(fn.name, unknown) != bounds
            if now >= self._retry_at.get(fn.name, 0.0):
                if revision != fn.revision or rescaler:
                    await cluster.apply(self._workload(fn, desired))
                    self._applied[fn.name] = (cluster.name, fn.revision, desired)
                    self._bounds[fn.name] = bounds
                    self._polled.pop(fn.name, None)
                    self.store.add_event(
                        fn.name,
                        "applied",
                        f"revision {fn.revision[:12]} applied to {cluster.name} "
                        f"({desired} replica(s))",
                        data={"revision": fn.revision, "replicas": desired},
                    )
                elif not autoscaled and asked != desired:
                    await cluster.scale(fn.name, desired)
                    self._applied[fn.name] = (cluster.name, revision, desired)
                    self._polled.pop(fn.name, None)
                    self.store.add_event(
                        fn.name,
                        "scaled",
                        f"scaled to {desired} replica(s) on {cluster.name}",
                        data={"from": asked, "to": desired},
                    )
            every = STEADY_POLL_S if fn.state == "ready" else POLL_S
            if now - self._polled.get(fn.name, 0.0) < every:
                return
            self._polled[fn.name] = now
            status = await cluster.status(fn.name)
        except TickrunError as exc:
            self._retry_at[fn.name] = now + RETRY_S
            self._fail(fn, exc.message)
            return
        self._retry_at.pop(fn.name, None)
        if status is None:
            # Its objects were deleted behind tickrun's back: applied again on the next pass.
            self._applied.pop(fn.name, None)
            self.endpoints.publish(fn.name, {})
            return
        self._mirror(fn, cluster, status)
        self._events(fn, status)
        ready = {
            p.name: f"http://{p.ip}:{cluster.port}"
            for p in status.pods
            if p.ready and p.ip and not p.terminating
        }
        self.endpoints.publish(fn.name, ready)
        await self._settle(fn, cluster, status, status.desired if autoscaled else desired)

    def _workload(self, fn: FunctionRow, desired: int) -> Workload:
        # Checked by the caller (a function without them has nothing to run yet).
        assert fn.artifact is not None
        assert fn.revision is not None
        s = fn.spec.spec
        return Workload(
            function=fn.name,
            revision=fn.revision,
            replicas=desired,
            spec=fn.spec,
            image=image_ref(fn.artifact),
            env=s.env_dict(),
            # Read now, so a secret set after the function was deployed reaches the next apply.
            secret_env=self.service.secrets.resolve(s.secret_refs()),
            controller_id=self.controller_id,
            ready_timeout_s=float(s.readiness_timeout_s or self.settings.ready_timeout_s),
        )

    def _fail(self, fn: FunctionRow, message: str) -> None:
        if self._trouble.get(fn.name) == message:
            return  # said once
        self._trouble[fn.name] = message
        logger.warning("cluster call failed", extra={"function": fn.name, "error": message})
        if fn.state == "deploying":
            self.store.update_function_if(fn.name, fn.seen(), state="error", message=message)
        self.store.add_event(fn.name, "error", message)

    def _mirror(self, fn: FunctionRow, cluster: ClusterPlatform, status: WorkloadStatus) -> None:
        rows = {r.id: r for r in self.store.list_replicas(fn.name)}
        pods = {p.name for p in status.pods}
        for pod in status.pods:
            state = pod_state(pod)
            row = rows.get(pod.name)
            if row is None:
                row = ReplicaRow(
                    id=pod.name,
                    function=fn.name,
                    revision=pod.revision or "",
                    platform=cluster.name,
                    port=cluster.port,
                    state=state,
                    restarts=pod.restarts,
                    restart_at=0.0,
                    started_at=pod.started_at or time.time(),
                    ready_at=pod.ready_at,
                    exit_code=pod.exit_code,
                )
            elif (row.state, row.restarts, row.exit_code, row.ready_at) == (
                state,
                pod.restarts,
                pod.exit_code,
                pod.ready_at,
            ):
                continue
            row.state, row.restarts, row.exit_code = state, pod.restarts, pod.exit_code
            row.ready_at = pod.ready_at
            if pod.started_at:
                row.started_at = pod.started_at
            self.store.save_replica(row)
            if state in ("starting", "failed") and pod.reason:
                self.unready[pod.name] = pod.reason
            else:
                self.unready.pop(pod.name, None)
        for rid, row in rows.items():
            if rid not in pods and row.platform == cluster.name:
                self.store.delete_replica(rid)
                self.unready.pop(rid, None)

    def _events(self, fn: FunctionRow, status: WorkloadStatus) -> None:
        seen = self._seen.get(fn.name, set())
        quiet = fn.name in self._quiet
        self._quiet.discard(fn.name)
        for e in status.events:
            if e.uid in seen or quiet:
                continue
            self.store.add_event(
                fn.name,
                "cluster_warning" if e.type == "Warning" else "cluster_event",
                f"{e.kind} {e.object}: {e.reason}: {e.message}",
                replica=e.object if e.kind == "Pod" else None,
                data={"kind": e.kind, "object": e.object, "reason": e.reason, "count": e.count},
            )
        # The cluster expires events: only the ones it still has need remembering.
        self._seen[fn.name] = {e.uid for e in status.events}

    async def _settle(
        self, fn: FunctionRow, cluster: ClusterPlatform, status: WorkloadStatus, want: int
    ) -> None:
        # Ready pods of this revision, not the Deployment's available count: mid-rollout that
        # still counts the old revision's pods.
        serving = sum(
            1 for p in status.pods if pod_state(p) == "ready" and p.revision == fn.revision
        )
        rolled = status.revision == fn.revision and min(status.updated, serving) >= want
        errored_here = fn.name in self._trouble
        if rolled and (fn.state == "deploying" or (fn.state == "error" and errored_here)):
            self._trouble.pop(fn.name, None)
            if not self.store.update_function_if(fn.name, fn.seen(), state="ready", message=""):
                return  # a deploy came in since this pass read the row: the next pass looks
            self.store.add_event(
                fn.name, "ready", f"{status.available} pod(s) available on {cluster.name}"
            )
            await self._retire_replicas(fn, cluster)
            return
        if fn.state != "deploying":
            return
        failing = [p for p in status.pods if p.failed and p.revision == fn.revision]
        if failing:
            pod = failing[0]
            self._fail(fn, f"pod {pod.name} cannot run ({pod.reason}); see the function's events")
        elif status.stalled:
            self._fail(fn, f"the rollout stalled ({status.stalled})")

    async def _retire_replicas(self, fn: FunctionRow, cluster: ClusterPlatform) -> None:
        """Replicas a replica platform ran before the function moved to the cluster stop once
        the cluster serves it."""
        for row in self.store.list_replicas(fn.name):
            if row.platform == cluster.name:
                continue
            platform = self.service.platforms.get(row.platform)
            if platform is not None:
                await platform.stop(replica_ref(row), self.settings.stop_timeout_s)
            self.store.delete_replica(row.id)
            self.store.add_event(
                fn.name,
                "replica_stopped",
                f"replica {row.id} replaced by the {cluster.name} platform",
                replica=row.id,
            )
