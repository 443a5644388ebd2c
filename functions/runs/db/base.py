"""The run DB interface: one write call (a batch) and a few reads."""

from __future__ import annotations

import socket
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ...processes import pid_alive
from ..records import ArtifactRecord, RunBatch, RunRecord, RunState

if TYPE_CHECKING:
    from .registry_base import ModelRegistry

HOST = socket.gethostname()


@dataclass(frozen=True, slots=True)
class DbLocator:
    """How a child process reopens the same DB (picklable; the token stays in memory only)."""

    kind: str  # "sql" | "http"
    url: str
    token: str | None = None

    def __repr__(self) -> str:  # never show the token
        return f"DbLocator(kind={self.kind!r}, url={self.url!r})"


def stale_reason(run: RunRecord, stale_after_s: float, now: float) -> str | None:
    """Why a non-terminal run can no longer be running, or None if it may still be."""
    if run.state.terminal:
        return None
    if run.host == HOST and run.pid is not None and not pid_alive(run.pid):
        return f"process {run.pid} on {run.host} died while the run was {run.state.value}"
    last = run.heartbeat_at or run.updated_at
    if now - last > stale_after_s:
        return f"no heartbeat for {now - last:.0f}s (process {run.pid} on {run.host} gone?)"
    return None


def merge_incoming(existing: RunRecord | None, incoming: RunRecord) -> RunRecord:
    """A late write from a run already marked terminal must not bring it back to life."""
    if existing is not None and existing.state.terminal and not incoming.state.terminal:
        return incoming.model_copy(
            update={
                "state": existing.state,
                "error": existing.error,
                "ended_at": existing.ended_at,
            }
        )
    return incoming


class RunDB(ABC):
    stale_after_s: float = 60.0

    @abstractmethod
    def apply(self, batch: RunBatch) -> None:
        """Upsert the batch's runs (full records) and insert its artifact records."""

    @abstractmethod
    def get_run(self, uid: str, iteration: int = 0) -> RunRecord: ...

    @abstractmethod
    def list_runs(
        self,
        project: str | None = None,
        *,
        uid: str | None = None,
        state: str | None = None,
        name: str | None = None,
        iterations: bool = False,
        limit: int = 100,
        label: str | None = None,
    ) -> list[RunRecord]:
        """Newest first. Only iteration 0 unless ``iterations`` (or ``uid``) is given.

        ``label``: ``"key=value"``, the runs carrying that label (an indexed lookup; a run's
        labels are indexed when it is created and when it ends)."""

    @abstractmethod
    def list_artifacts(
        self,
        project: str | None = None,
        *,
        uid: str | None = None,
        iteration: int | None = None,
        key: str | None = None,
        kind: str | None = None,
        limit: int = 1000,
    ) -> list[ArtifactRecord]: ...

    def get_artifact(self, project: str, uid: str, iteration: int, key: str) -> ArtifactRecord:
        from ...errors import NotFoundError

        found = self.list_artifacts(project, uid=uid, iteration=iteration, key=key, limit=1)
        if not found:
            where = f"{project}/{uid}" + (f"/{iteration}" if iteration else "")
            raise NotFoundError(f"artifact {key!r} not found in run {where}")
        return found[0]

    @abstractmethod
    def mark_stale(self, now: float | None = None) -> list[RunRecord]:
        """Mark runs whose process died (or went silent) aborted; return the ones marked."""

    def registry(self) -> ModelRegistry:
        """The model registry kept in this run DB (``models:/`` URIs resolve through it)."""
        from ...errors import StoreError

        raise StoreError(f"{type(self).__name__} keeps no model registry")

    def locator(self) -> DbLocator | None:
        """How to reopen this DB in another process; None if it cannot be."""
        return None

    def close(self) -> None:
        return None

    @staticmethod
    def aborted(run: RunRecord, reason: str, now: float | None = None) -> RunRecord:
        t = time.time() if now is None else now
        return run.model_copy(
            update={
                "state": RunState.ABORTED,
                "error": reason,
                "ended_at": t,
                "updated_at": t,
            }
        )
