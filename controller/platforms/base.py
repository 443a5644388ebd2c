"""The platform interface: start, inspect, stop, adopt and read logs of replicas."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tickrun.functions.processor.exitcodes import ExitStatus


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

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release platform resources (not the replicas: they outlive the controller)."""
