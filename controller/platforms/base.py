"""The platform interfaces: :class:`Platform` starts, inspects, stops, adopts and reads logs of
replicas one by one; :class:`ClusterPlatform` hands a whole workload to a cluster that runs them."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tickrun.functions.processor.exitcodes import ExitStatus
from tickrun.functions.spec import FunctionSpec


@dataclass(frozen=True)
class LaunchSpec:
    """Everything a platform needs to start one replica."""

    function: str
    replica_id: str
    revision: str
    port: int
    workers: int
    env: dict[str, str]
    artifact: dict[str, Any]
    cpus: float | None = None
    memory_bytes: int | None = None
    log_path: str | None = None
    # Host folders the replica reads at the same path (models bound by the controller).
    mounts: tuple[str, ...] = ()


@dataclass
class Launched:
    pid: int | None = None
    pid_start: int | None = None
    container: str | None = None
    log_path: str | None = None


@dataclass(frozen=True)
class ReplicaRef:
    """What the store remembers about a running replica (enough to find it again)."""

    id: str
    function: str
    pid: int | None = None
    pid_start: int | None = None
    container: str | None = None
    log_path: str | None = None


@dataclass(frozen=True)
class Liveness:
    running: bool
    exit_code: int | None = None
    detail: str = ""


@dataclass
class AdoptResult:
    alive: set[str] = field(default_factory=set)
    removed_orphans: list[str] = field(default_factory=list)


class Platform(abc.ABC):
    name: str

    @abc.abstractmethod
    async def start(self, launch: LaunchSpec) -> Launched: ...

    @abc.abstractmethod
    async def inspect(self, refs: Sequence[ReplicaRef]) -> dict[str, Liveness]:
        """Liveness of each replica, by id (one batched look per call)."""

    @abc.abstractmethod
    async def stop(self, ref: ReplicaRef, timeout_s: float) -> None:
        """Stop gracefully (SIGTERM, drain), then force; leaves nothing behind."""

    @abc.abstractmethod
    async def adopt(self, refs: Sequence[ReplicaRef], controller_id: str) -> AdoptResult:
        """After a controller restart: which recorded replicas still run; remove the ones this
        controller started but never recorded, so nothing is ever duplicated."""

    @abc.abstractmethod
    async def logs(self, ref: ReplicaRef, tail: int) -> list[str]: ...

    async def exit_status(self, ref: ReplicaRef) -> ExitStatus | None:
        """What a stopped replica's processor said about why it stopped (its status line),
        or None. Display data: the caller keeps it only when its code is the exit code."""
        return None

    async def why_stopped(
        self, ref: ReplicaRef, live: Liveness
    ) -> tuple[int | None, ExitStatus | None]:
        """A stopped replica's exit code and, when it agrees with that code, its status.
        The platform's own code wins; the status's stands in only when the platform lost it
        (a replica adopted after a controller restart is not the new controller's child)."""
        status = await self.exit_status(ref)
        code = live.exit_code
        if code is None and status is not None:
            code = status.code
        if status is not None and status.code != code:
            status = None  # an older run's, or a line the handler printed
        return code, status

    def isolation(self) -> dict[str, Any]:
        """How this platform keeps replicas from the controller's secrets (for /api/version)."""
        return {"mechanism": "none"}

    async def acts_on(self) -> set[str]:
        """Spec fields (see :func:`unacted_fields`) this platform acts on."""
        return set()

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release platform resources (not the replicas: they outlive the controller)."""


# --- cluster platforms ---------------------------------------------------------------------------
# A cluster (Kubernetes) already starts, probes, restarts and rolls replicas: tickrun hands it a
# workload and reads its status back, instead of driving replicas one by one as above.


@dataclass(frozen=True)
class Workload:
    """One function's objects on a cluster, at one revision."""

    function: str
    revision: str
    replicas: int
    spec: FunctionSpec
    image: str  # by digest when the builder recorded one, else the tag
    env: dict[str, str]  # plain values
    secret_env: dict[str, str]  # env name → resolved secret value (goes into a cluster Secret)
    controller_id: str
    labels: dict[str, str] = field(default_factory=dict)
    ready_timeout_s: float = 120.0


@dataclass(frozen=True)
class PodStatus:
    name: str
    ready: bool
    restarts: int
    phase: str
    reason: str  # why it is not running/ready (CrashLoopBackOff, ErrImagePull, …), or ""
    ip: str | None
    revision: str | None
    started_at: float | None = None
    ready_at: float | None = None
    exit_code: int | None = None
    terminating: bool = False
    failed: bool = False  # it will not get better by waiting (CrashLoopBackOff, ErrImagePull, …)


@dataclass(frozen=True)
class ClusterEvent:
    uid: str
    kind: str  # of the object it is about: Deployment, ReplicaSet, Pod, …
    object: str
    type: str  # Normal | Warning
    reason: str
    message: str
    count: int = 1


@dataclass(frozen=True)
class WorkloadStatus:
    revision: str | None  # the revision the Deployment's pod template carries
    desired: int
    updated: int
    ready: int
    available: int
    pods: list[PodStatus] = field(default_factory=list)
    events: list[ClusterEvent] = field(default_factory=list)
    stalled: str = ""  # the rollout gave up (ProgressDeadlineExceeded): why


@dataclass(frozen=True)
class PodLogs:
    pod: str
    lines: list[str]
    error: str = ""  # the cluster could not give this pod's log


class ClusterPlatform(abc.ABC):
    """A platform whose replicas a cluster runs. Every call is idempotent; errors are
    :class:`~tickrun.functions.errors.PlatformError`."""

    name: str
    port: int  # the port a function's pods serve on

    @abc.abstractmethod
    async def apply(self, workload: Workload) -> None:
        """Create or update the function's objects for the workload's revision and count."""

    @abc.abstractmethod
    async def scale(self, function: str, replicas: int) -> None: ...

    @abc.abstractmethod
    async def status(self, function: str) -> WorkloadStatus | None:
        """None when the function has no objects on the cluster."""

    @abc.abstractmethod
    async def remove(self, function: str) -> None:
        """Everything the function has on the cluster goes (nothing is left)."""

    @abc.abstractmethod
    async def adopt(self, controller_id: str) -> set[str]:
        """The functions this controller has objects of (found by their labels)."""

    @abc.abstractmethod
    async def logs(self, function: str, tail: int) -> list[PodLogs]: ...

    def isolation(self) -> dict[str, Any]:
        return {"mechanism": "none"}

    async def acts_on(self) -> set[str]:
        """Spec fields (see :func:`unacted_fields`) this platform acts on."""
        return set()

    async def acts_on_spec(self, spec: FunctionSpec) -> set[str]:
        """:meth:`acts_on` for this spec (how a function is scaled can depend on it)."""
        return await self.acts_on()

    def owns_count(self, spec: FunctionSpec) -> bool:
        """The cluster (an HPA, KEDA) sets the replica count: tickrun never scales it."""
        return spec.spec.target_cpu_percent is not None

    def warnings(self, spec: FunctionSpec) -> list[str]:
        """What ``spec`` asks for that this platform's scaling will not do (deploy warnings)."""
        return []

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release the client (the cluster's objects stay)."""


# In a platform's acted-on fields: its scaler reads Kafka lag beside targetCPU.
LAG_WITH_CPU = "targetLag+targetCPU"


def unacted_fields(spec: FunctionSpec, acted_on: set[str], platform: str) -> list[str]:
    """Deploy warnings: the fields ``spec`` sets that ``platform`` accepts without acting on
    them (a user must not believe a GPU or a CPU target is in force when it is not)."""
    s = spec.spec
    # Lag is read from Kafka triggers, and an HPA (targetCPU where acted on) owns the count,
    # unless the scaler weighs lag and CPU together (KEDA: LAG_WITH_CPU).
    lag_unread = not any(t.kind == "kafka-cluster" for t in s.effective_triggers()) or (
        s.target_cpu_percent is not None
        and "targetCPU" in acted_on
        and LAG_WITH_CPU not in acted_on
    )
    set_fields = {
        "nvidia.com/gpu": bool(s.resources.limits.gpu or s.resources.requests.gpu),
        "targetCPU": s.target_cpu_percent is not None,
        "targetLag": bool({"target_lag", "lag_window_s"} & s.model_fields_set) and lag_unread,
        "nodeSelector": bool(s.node_selector),
        "tolerations": bool(s.tolerations),
        "priorityClassName": bool(s.priority_class_name),
        "volumes": bool(s.volumes),
    }
    return [
        f"spec field {name} is accepted but not acted on by the {platform} platform"
        for name, present in set_fields.items()
        if present and name not in acted_on
    ]
