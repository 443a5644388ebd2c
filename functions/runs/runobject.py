"""``RunObject``: what ``run_function`` returns — state, results, artifacts, iterations."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import NotFoundError, RunError
from .dataitem import DataItem
from .records import ArtifactRecord, RunRecord, RunState

if TYPE_CHECKING:
    from ..artifacts import ArtifactRoots, S3Settings
    from .db.base import RunDB


@dataclass
class RunObject:
    record: RunRecord
    artifacts: list[ArtifactRecord] = field(default_factory=list)
    iterations: list[RunRecord] = field(default_factory=list)
    db: RunDB | None = field(default=None, repr=False)
    s3: S3Settings | None = field(default=None, repr=False)
    # The stores this run's artifacts may be read from (its own store among them).
    roots: ArtifactRoots | None = field(default=None, repr=False)

    @property
    def uid(self) -> str:
        return self.record.uid

    @property
    def project(self) -> str:
        return self.record.project

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def state(self) -> str:
        return self.record.state.value

    @property
    def error(self) -> str | None:
        return self.record.error

    @property
    def results(self) -> dict[str, Any]:
        return dict(self.record.results)

    @property
    def outputs(self) -> dict[str, Any]:
        """Results plus each artifact's ``store://`` URI, by key (MLRun's ``outputs``)."""
        out: dict[str, Any] = dict(self.record.results)
        for a in self.artifacts:
            out[a.key] = a.uri
        return out

    def artifact_record(self, key: str) -> ArtifactRecord:
        for a in self.artifacts:
            if a.key == key:
                return a
        raise NotFoundError(
            f"run {self.uid} has no artifact {key!r} "
            f"(artifacts: {', '.join(a.key for a in self.artifacts) or 'none'})"
        )

    def artifact(self, key: str) -> DataItem:
        rec = self.artifact_record(key)
        return DataItem(rec.uri, key=key, db=self.db, s3=self.s3, meta=rec, roots=self.roots)

    def raise_for_state(self) -> RunObject:
        if self.record.state is not RunState.COMPLETED:
            raise RunError(f"run {self.uid} {self.state}: {self.error or 'no error recorded'}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.record.model_dump(mode="json"),
            "artifacts": [a.model_dump(mode="json") for a in self.artifacts],
            "iterations": [i.model_dump(mode="json") for i in self.iterations],
        }
