"""Run and artifact records: what the run DB stores and the REST API carries.

A run is keyed by ``(uid, iteration)``. A plain run is iteration 0. A hyperparameter sweep is one
uid: iteration 0 is the parent (best iteration's results), iterations 1..N are the children.

Artifact URIs: ``store://<project>/<run uid>/<iteration>/<key>``; the short form
``store://<project>/<run uid>/<key>`` means iteration 0, where a sweep's parent also lists the best
iteration's artifacts.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Annotated, Any

from ..datamodel import Meta, Model
from ..errors import BadRequestError
from ..names import PROJECT_MAX, PROJECT_PATTERN

STORE_SCHEME = "store://"


class RunState(enum.StrEnum):
    CREATED = "created"
    RUNNING = "running"
    COMPLETED = "completed"
    ERROR = "error"
    ABORTED = "aborted"

    @property
    def terminal(self) -> bool:
        return self in (RunState.COMPLETED, RunState.ERROR, RunState.ABORTED)


class ArtifactKind(enum.StrEnum):
    MODEL = "model"
    DATASET = "dataset"
    PLOT = "plot"
    TABLE = "table"
    FILE = "file"
    LOG = "log"  # a run's own log (runlog.py): what its handler logged and printed


@dataclass(kw_only=True)
class RunRecord(Model):
    uid: Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
    iteration: Annotated[int, Meta(ge=0)] = 0
    project: Annotated[str, Meta(min_length=1, max_length=PROJECT_MAX, pattern=PROJECT_PATTERN)] = (
        "default"
    )
    name: str = ""
    handler: str = ""
    state: RunState = RunState.CREATED
    error: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    artifact_path: str = ""
    best_iteration: int | None = None
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    ended_at: float | None = None
    updated_at: float = field(default_factory=time.time)
    heartbeat_at: float | None = None
    pid: int | None = None
    host: str | None = None

    def summary(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


@dataclass(kw_only=True)
class ArtifactRecord(Model):
    project: str
    uid: str
    iteration: int = 0
    key: str
    kind: ArtifactKind = ArtifactKind.FILE
    target: Annotated[
        str, Meta(description="where the bytes are: an absolute path or s3://bucket/key")
    ]
    format: str = ""
    size_bytes: int = 0
    sha256: str = ""
    preview: Any = None
    meta: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)

    @property
    def uri(self) -> str:
        return store_uri(self.project, self.uid, self.key, self.iteration)


@dataclass(kw_only=True)
class RunBatch(Model):
    """One write to the run DB: full run states (upserts) plus new artifact records."""

    runs: list[RunRecord] = field(default_factory=list)
    artifacts: list[ArtifactRecord] = field(default_factory=list)


def store_uri(project: str, uid: str, key: str, iteration: int | None = 0) -> str:
    if iteration:
        return f"{STORE_SCHEME}{project}/{uid}/{iteration}/{key}"
    return f"{STORE_SCHEME}{project}/{uid}/{key}"


def parse_store_uri(uri: str) -> tuple[str, str, int, str]:
    """``store://project/uid[/iteration]/key`` → (project, uid, iteration, key)."""
    if not uri.startswith(STORE_SCHEME):
        raise BadRequestError(f"not a store:// URI: {uri[:100]!r}")
    parts = uri[len(STORE_SCHEME) :].split("/")
    if len(parts) == 3 and all(parts):
        return parts[0], parts[1], 0, parts[2]
    if len(parts) == 4 and all(parts) and parts[2].isdigit():
        return parts[0], parts[1], int(parts[2]), parts[3]
    raise BadRequestError(
        f"bad store URI {uri[:100]!r}: expected store://<project>/<run uid>[/<iteration>]/<key>"
    )
