"""The reconciler: keeps each function's replicas at its revision and count, restarts crashed
replicas with backoff (recording every restart), re-adopts replicas after a controller restart,
and publishes each function's ready replicas into the :class:`EndpointTable` the gateways route
by (``endpoints.py``); it answers the table's questions (hold a request? bring a replica back?
re-probe one that refused?) as its :class:`ReplicaSource`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Sequence

import aiohttp

from tickrun.functions.errors import TickrunError
from tickrun.functions.processor.exitcodes import ExitCode, ExitStatus, not_ready_reason

from .autoscaler import Autoscaler
from .cluster import ClusterReconciler
from .endpoints import EndpointTable
from .lag import LagMonitor
from .platforms.base import LaunchSpec, Liveness, Platform
from .portgateway import PortGateway
from .ports import PortAllocator
from .service import FunctionService, replica_ref
from .settings import Settings
from .store import FunctionRow, ReplicaRow, Store
from .wake import CronWaker

logger = logging.getLogger(__name__)

RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0)


STABLE_AFTER_S = 60.0  # a replica up this long has its backoff reset
# How long a replaced revision's replicas may finish the requests routed to them (and the
# function port's busy connections move off) before they are stopped.
RETIRE_TIMEOUT_S = 10.0


class Reconciler:
    """Constructor does no I/O; :meth:`start` adopts replicas and starts the loop."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        service: FunctionService,
        platforms: dict[str, Platform],
        controller_id: str,
    ) -> None:
        self.settings = settings
        self.store = store
        self.service = service
        self.platforms = platforms
        self.controller_id = controller_id
        self.ports = PortAllocator(*settings.port_range, in_use=self._ports_in_use)
        # What the gateways route by: published here, read there.
        self.endpoints = EndpointTable(self)
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._wake = asyncio.Event()
        # Set by the app when per-function ports are on (see portgateway.py).
        self.port_gateway: PortGateway | None = None
        self.autoscaler = Autoscaler()
        # Scaling signals besides in-flight requests: Kafka lag (a thread the app starts and
        # stops) and cron firings of functions at zero.
        self.lag = LagMonitor(settings.lag_interval_s)
        self.cron = CronWaker(self.autoscaler, settings.cron_wake_lead_s)
        self._served: dict[str, int] = {}
        # Each replica's last exit status, and why a starting one is not ready yet (its
        # /readyz reason), for the API.
        self.exits: dict[str, ExitStatus] = {}
        self.unready: dict[str, str] = {}
        # Functions on a cluster platform: the cluster runs their replicas (cluster.py).
        self.cluster = ClusterReconciler(
            settings, store, service, self.endpoints, controller_id, self.unready
        )

    def _ports_in_use(self) -> list[int]:
        ports = [r.port for r in self.store.list_replicas()]
        ports += [f.gateway_port for f in self.store.list_functions() if f.gateway_port]
        return ports

    def wake(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.0))
        await self.adopt()
        self._task = asyncio.create_task(self._loop(), name="reconciler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._session is not None:
            await self._session.close()

    # --- adoption -------------------------------------------------------------------------------

    async def adopt(self) -> None:
        await self.cluster.adopt()
        rows = self.store.list_replicas()
        for name, platform in self.platforms.items():
            mine = [r for r in rows if r.platform == name]
            try:
                result = await platform.adopt([replica_ref(r) for r in mine], self.controller_id)
            except TickrunError as exc:
                logger.warning(
                    "cannot re-adopt replicas", extra={"platform": name, "error": exc.message}
                )
                continue
            for orphan in result.removed_orphans:
                logger.warning("removed an unrecorded replica", extra={"replica": orphan})
            for row in mine:
                if row.id in result.alive:
                    # re-probe readiness before routing to it
                    row.state, row.started_at, row.ready_at = "starting", time.time(), None
                    self.store.save_replica(row)
                    self.store.add_event(
                        row.function,
                        "replica_adopted",
                        f"replica {row.id} re-adopted after a controller restart",
                        replica=row.id,
                    )
                elif row.state != "failed":
                    row.state, row.restart_at = "failed", 0.0
                    self.store.save_replica(row)
                    self.store.add_event(
                        row.function,
                        "replica_lost",
                        f"replica {row.id} stopped while the controller was down; replacing it",
                        replica=row.id,
                    )

    # --- loop -----------------------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            # Cleared before the pass, so a wake-up during the pass is not lost.
            self._wake.clear()
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("reconcile pass failed")
            # A replica coming up is probed often: readiness latency is deploy latency.
            starting = any(r.state == "starting" for r in self.store.list_replicas())
            interval = (
                min(0.05, self.settings.reconcile_interval_s)
                if starting
                else self.settings.reconcile_interval_s
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)

    async def tick(self) -> None:
        functions = [f for f in self.store.list_functions() if f.state != "deleting"]
        self.lag.watch((f.name, f.spec) for f in functions)
        self.cron.check((f.name, f.spec) for f in functions)
        replicas = self.store.list_replicas()
        by_fn: dict[str, list[ReplicaRow]] = {}
        for r in replicas:
            by_fn.setdefault(r.function, []).append(r)
        liveness: dict[str, Liveness] = {}
        for name, platform in self.platforms.items():
            refs = [replica_ref(r) for r in replicas if r.platform == name]
            if refs:
                try:
                    liveness.update(await platform.inspect(refs))
                except TickrunError as exc:
                    logger.warning(
                        "cannot inspect replicas", extra={"platform": name, "error": exc.message}
                    )
        await asyncio.gather(
            *(
                self._reconcile_cluster(fn)
                if self.cluster.owns(fn)
                else self._reconcile(fn, by_fn.get(fn.name, []), liveness)
                for fn in functions
            )
        )
        await self.cluster.sweep(functions)
        live_names = {f.name for f in functions}
        for name in self.endpoints.names():
            if name not in live_names:
                self.endpoints.drop(name)
                if self.port_gateway is not None:
                    await self.port_gateway.close(name)

    async def _reconcile(
        self, fn: FunctionRow, rows: list[ReplicaRow], liveness: dict[str, Liveness]
    ) -> None:
        lock = self.service.lock(fn.name)
        if lock.locked():
            return  # a delete is stopping this function's replicas
        async with lock:
            await self._reconcile_locked(fn, rows, liveness)

    async def _reconcile_cluster(self, fn: FunctionRow) -> None:
        lock = self.service.lock(fn.name)
        if lock.locked():
            return  # a delete is removing it from the cluster
        async with lock:
            await self._ensure_port(fn)
            await self.cluster.reconcile(fn, self.desired(fn))
            self._sample(fn.name)

    async def _reconcile_locked(
        self, fn: FunctionRow, rows: list[ReplicaRow], liveness: dict[str, Liveness]
    ) -> None:
        now = time.time()
        platform = self.platforms.get(fn.platform)
        await self._ensure_port(fn)
        # 1. exits and readiness
        probes = []
        for row in rows:
            live = liveness.get(row.id)
            if row.state in ("starting", "ready") and live is not None and not live.running:
                await self._on_exit(row, live, now)
            elif row.state == "starting":
                probes.append(row)
        results = await asyncio.gather(*(self._probe(r) for r in probes))
        for row, why in zip(probes, results, strict=True):
            if why is None:
                self.unready.pop(row.id, None)
                row.state, row.ready_at = "ready", time.time()
                self.store.save_replica(row)
                self.store.add_event(
                    fn.name,
                    "replica_ready",
                    f"replica {row.id} ready on port "
                    f"{row.port} after {row.ready_at - row.started_at:.2f} s",
                    replica=row.id,
                )
            elif now - row.started_at > self._ready_timeout(fn):
                self.unready.pop(row.id, None)
                self.store.add_event(
                    fn.name,
                    "replica_unready",
                    f"replica {row.id} not ready after {self._ready_timeout(fn):.0f} s "
                    f"({why or 'no answer'}); restarting",
                    replica=row.id,
                    data={"reason": why or None},
                )
                if platform is not None:
                    await platform.stop(replica_ref(row), self.settings.stop_timeout_s)
                await self._on_exit(
                    row, Liveness(False, None, "not ready in time"), now, record=False
                )
        if platform is None or fn.revision is None or fn.artifact is None:
            self._publish(fn, rows)
            return
        # 2. restarts due
        current = [r for r in rows if r.revision == fn.revision]
        old = [r for r in rows if r.revision != fn.revision]
        desired = self.desired(fn)
        for row in current:
            if row.state == "failed" and now >= row.restart_at:
                if sum(1 for r in current if r.state != "failed") < desired:
                    await self._launch(fn, platform, row)
                else:
                    await self._remove(row, platform)
        # 3. scale to the desired count
        active = [r for r in current if r.state in ("starting", "ready", "failed")]
        if len(active) < desired:
            await asyncio.gather(
                *(self._launch(fn, platform, None) for _ in range(desired - len(active)))
            )
        elif len(active) > desired:
            # Failed and not-yet-ready replicas go first, then the newest.
            order = {"failed": 0, "starting": 1, "ready": 2}
            extra = sorted(active, key=lambda r: (order[r.state], -r.started_at))
            leaving = extra[: len(active) - desired]
            if self.endpoints.mirror is not None:
                # HAProxy routes on its own: it stops sending there before the replica stops.
                await self._retire(fn, leaving)
            for row in leaving:
                await self._remove(row, platform, reason="scaled down")
        # 4. retire replicas of older revisions once the new ones serve
        ready_now = [
            r
            for r in self.store.list_replicas(fn.name)
            if r.revision == fn.revision and r.state == "ready"
        ]
        if old and (len(ready_now) >= desired):
            await self._retire(fn, old)
            for row in old:
                plat = self.platforms.get(row.platform, platform)
                await self._remove(row, plat, reason="replaced by a new revision")
        self._sample(fn.name)
        if (
            fn.state == "deploying"
            and len(ready_now) >= desired
            # Not over a deploy that came in during this pass's awaits.
            and self.store.update_function_if(fn.name, fn.seen(), state="ready", message="")
        ):
            self.store.add_event(fn.name, "ready", f"{len(ready_now)} replica(s) ready")
        self._publish(fn, self.store.list_replicas(fn.name))

    async def _ensure_port(self, fn: FunctionRow) -> None:
        """The function's own port listens (on the port it had, so callers keep it)."""
        if self.port_gateway is None:
            return
        port = self.port_gateway.port_of(fn.name)
        if port is None:
            try:
                port = await self.port_gateway.ensure(
                    fn.name, fn.gateway_port or self.ports.allocate(), on_fail=self.ports.allocate
                )
            except OSError as exc:
                logger.warning("no function port", extra={"function": fn.name, "error": str(exc)})
        if port is not None and port != fn.gateway_port:
            self.store.update_function(fn.name, gateway_port=port)

    def desired(self, fn: FunctionRow) -> int:
        return self.autoscaler.desired(fn.name, fn.spec)

    def _sample(self, name: str) -> None:
        in_flight, served = self.endpoints.load(name)
        seen = served > self._served.get(name, 0)
        self._served[name] = served
        self.autoscaler.observe(name, in_flight, seen)
        lag = self.lag.reading(name)
        if lag is not None:
            self.autoscaler.observe_lag(name, lag.lag, lag.partitions, now=lag.at)

    # --- the endpoint table's ReplicaSource ------------------------------------------------------

    def should_hold(self, name: str) -> bool:
        """Worth holding a request: the function is scaled to zero or a replica is starting."""
        fn = self.store.find_function(name)
        if fn is None or fn.state not in ("ready", "deploying"):
            return False
        spec = fn.spec
        if self.autoscaler.scales_to_zero(spec) and self.autoscaler.desired(name, spec) == 0:
            return True
        return any(
            r.state == "starting" and r.revision == fn.revision
            for r in self.store.list_replicas(name)
        )

    def want_replica(self, name: str) -> None:
        """A request is held for ``name``: the next pass brings a replica back from zero."""
        self.autoscaler.wake(name)
        self.wake()

    def recheck(self, name: str, replica_id: str) -> None:
        """A gateway could not connect (the table stopped routing there): probe the replica
        again, as a starting one, until it says ready."""
        for row in self.store.list_replicas(name):
            if row.id == replica_id and row.state == "ready":
                row.state = "starting"
                row.started_at = time.time()
                self.store.save_replica(row)
        self.wake()

    def _ready_timeout(self, fn: FunctionRow) -> float:
        spec_timeout = fn.spec.spec.readiness_timeout_s
        return float(spec_timeout or self.settings.ready_timeout_s)

    async def _probe(self, row: ReplicaRow) -> str | None:
        """None when the replica is ready; else why not, from its /readyz body ("" if it
        did not answer or gave no reason)."""
        assert self._session is not None
        try:
            async with self._session.get(f"http://127.0.0.1:{row.port}/readyz") as resp:
                if resp.status == 200:
                    return None
                why = not_ready_reason(await resp.content.read(4096))
        except (aiohttp.ClientError, TimeoutError):
            why = ""
        if why:
            self.unready[row.id] = why
        return why

    async def _on_exit(
        self, row: ReplicaRow, live: Liveness, now: float, *, record: bool = True
    ) -> None:
        up_s = now - (row.ready_at or row.started_at)
        failures = 0 if row.ready_at and up_s > STABLE_AFTER_S else row.restarts
        delay = RESTART_BACKOFF_S[min(failures, len(RESTART_BACKOFF_S) - 1)]
        code, status = live.exit_code, None
        platform = self.platforms.get(row.platform)
        if record and platform is not None:
            code, status = await platform.why_stopped(replica_ref(row), live)
        if code == ExitCode.CONFIG:
            # The handler cannot load: restarting soon will not help, and the user must see why.
            delay = RESTART_BACKOFF_S[-1]
            self._function_cannot_start(row, status)
        row.state, row.exit_code, row.restart_at = "failed", code, now + delay
        self.store.save_replica(row)
        if status is not None:
            self.exits[row.id] = status
        else:
            self.exits.pop(row.id, None)
        if record:
            why = f" ({status.summary()})" if status is not None else ""
            self.store.add_event(
                row.function,
                "replica_exited",
                f"replica {row.id} {live.detail}{why}; restarting in {delay:g} s",
                replica=row.id,
                data={
                    "exit_code": code,
                    "exit": ExitCode.describe(code),
                    "reason": status.reason.value if status is not None else None,
                    "restart_in_s": delay,
                },
            )
            logger.warning(
                "replica exited",
                extra={"function": row.function, "replica": row.id, "detail": live.detail},
            )

    def _function_cannot_start(self, row: ReplicaRow, status: ExitStatus | None) -> None:
        if status is not None:
            reason = f"function cannot start ({status.summary()})"
        else:
            reason = f"function cannot start (exit code {int(ExitCode.CONFIG)})"
        reason += "; see `tickrun logs`"
        fn = self.store.find_function(row.function)
        if fn is not None and fn.state in ("deploying", "ready") and fn.revision == row.revision:
            self.store.update_function(fn.name, state="error", message=reason)
            self.store.add_event(fn.name, "error", reason, replica=row.id)

    async def _launch(self, fn: FunctionRow, platform: Platform, row: ReplicaRow | None) -> None:
        spec = fn.spec
        restart = row is not None
        if row is None:
            rid = uuid.uuid4().hex[:10]
            row = ReplicaRow(
                id=rid,
                function=fn.name,
                revision=fn.revision or "",
                platform=fn.platform,
                port=0,
                state="starting",
                restarts=0,
                restart_at=0.0,
                started_at=time.time(),
            )
        else:
            # The dead replica's container/process leftovers go before its replacement starts.
            await platform.stop(replica_ref(row), 1.0)
            row.restarts += 1
        row.port = self.ports.allocate()
        row.state, row.started_at, row.ready_at = "starting", time.time(), None
        row.pid = row.pid_start = None
        row.container = None
        log_path = self.settings.logs_dir / fn.name / f"{row.id}.log"
        # Recorded before the launch, so a controller crash in between leaves a trace to adopt.
        self.store.save_replica(row)
        assert fn.artifact is not None
        try:
            # Secret values are read only now, and live only in the replica's environment.
            secrets = self.service.secrets.resolve(spec.spec.secret_refs())
            bound: dict[str, str] = {}
            mounts: tuple[str, ...] = ()
            if self.service.bindings is not None:
                bound, mounts = self.service.bindings.launch_env(fn)
            launch = LaunchSpec(
                function=fn.name,
                replica_id=row.id,
                revision=row.revision,
                port=row.port,
                workers=spec.spec.workers,
                env=spec.spec.env_dict() | secrets | bound,
                artifact=fn.artifact,
                mounts=mounts,
                cpus=spec.spec.resources.limits.cpus,
                memory_bytes=spec.spec.resources.limits.memory_bytes,
                log_path=str(log_path),
            )
            launched = await platform.start(launch)
        except TickrunError as exc:
            row.state, row.restart_at = (
                "failed",
                time.time() + RESTART_BACKOFF_S[min(row.restarts, len(RESTART_BACKOFF_S) - 1)],
            )
            self.store.save_replica(row)
            self.store.add_event(
                fn.name,
                "replica_failed",
                f"replica {row.id} could not start: {exc.message}",
                replica=row.id,
            )
            return
        row.pid, row.pid_start = launched.pid, launched.pid_start
        row.container, row.log_path = launched.container, launched.log_path
        self.store.save_replica(row)
        verb = f"restarted (restart #{row.restarts})" if restart else "started"
        self.store.add_event(
            fn.name,
            "replica_restarted" if restart else "replica_started",
            f"replica {row.id} {verb} on port {row.port}",
            replica=row.id,
            data={
                "port": row.port,
                "pid": row.pid,
                "container": row.container,
                "restarts": row.restarts,
            },
        )

    async def _remove(self, row: ReplicaRow, platform: Platform, *, reason: str = "") -> None:
        await platform.stop(replica_ref(row), self.settings.stop_timeout_s)
        self.store.delete_replica(row.id)
        self.exits.pop(row.id, None)
        self.unready.pop(row.id, None)
        if reason:
            self.store.add_event(
                row.function, "replica_stopped", f"replica {row.id} {reason}", replica=row.id
            )

    async def _retire(self, fn: FunctionRow, old: list[ReplicaRow]) -> None:
        """Stop routing to ``old`` replicas and let the requests on them finish before they are
        stopped: unpublish, move the function port's connections to ready replicas (idle ones
        now, busy ones at their next request), wait for in-flight requests, up to
        RETIRE_TIMEOUT_S. Stopping a replica that is still routed to fails requests."""
        ids = {r.id for r in old}
        entry = self.endpoints.get(fn.name)
        leaving = [e for e in entry.endpoints if e.replica_id in ids] if entry else []
        self._publish(fn, [r for r in self.store.list_replicas(fn.name) if r.id not in ids])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RETIRE_TIMEOUT_S
        while loop.time() < deadline:
            on_port = self.port_gateway.retire(fn.name, ids) if self.port_gateway else 0
            busy = self.endpoints.busy(fn.name, ids)  # HAProxy drains them too
            if not on_port and not busy and not any(e.in_flight > 0 for e in leaving):
                return
            await asyncio.sleep(0.05)
        logger.warning("replicas retired with requests in flight", extra={"function": fn.name})

    # --- publishing ------------------------------------------------------------------------------

    def _publish(self, fn: FunctionRow, rows: Sequence[ReplicaRow]) -> None:
        ready = {r.id: f"http://127.0.0.1:{r.port}" for r in rows if r.state == "ready"}
        self.endpoints.publish(fn.name, ready)

    async def forget(self, function: str) -> None:
        """A function is being deleted: no more routing to it, its port closes."""
        self.endpoints.drop(function)
        self.autoscaler.forget(function)
        self.cluster.forget(function)
        if self.port_gateway is not None:
            await self.port_gateway.close(function)
