"""Tracking settings from the environment: the run DB, the controller, the artifact stores.

The variables (``TICKRUN_HOME``, ``TICKRUN_DB_URL``, ``TICKRUN_ARTIFACT_PATH``…) are defined in
:mod:`tickrun.functions.settings` (table: docs/settings.md). S3 endpoint and keys: see
:mod:`tickrun.functions.artifacts.settings`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from .. import settings
from ..artifacts.settings import S3Settings
from ..artifacts.targets import ArtifactRoots
from ..datamodel import Meta, Model, Secret

# Where a controller is: runs are tracked there, and hub deploys go through it.
CONTROLLER_URL_ENV = settings.CONTROLLER_URL.name


@dataclass(frozen=True, kw_only=True)
class TrackingSettings(Model):
    home: Path
    artifact_path: str
    artifact_stores: tuple[str, ...] = ()
    db_url: str
    controller_url: str | None = None
    token: Secret | None = None
    flush_interval_s: Annotated[float, Meta(gt=0)] = 1.0
    heartbeat_interval_s: Annotated[float, Meta(gt=0)] = 5.0
    stale_after_s: Annotated[float, Meta(gt=0)] = 60.0
    s3: S3Settings = field(default_factory=S3Settings)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TrackingSettings:
        home = settings.HOME.get(env)
        explicit_db = settings.DB_URL.lookup(env)
        controller = (settings.CONTROLLER_URL.get(env) or "").rstrip("/") or None
        token = settings.TOKEN.get(env)
        stale_after_s = settings.STALE_AFTER_S.get(env)
        return cls(
            home=home,
            artifact_path=settings.ARTIFACT_PATH.get(env),
            artifact_stores=settings.ARTIFACT_STORES.get(env),
            db_url=explicit_db or settings.DB_URL.get(env),
            controller_url=None if explicit_db else controller,
            token=Secret(token) if token else None,
            flush_interval_s=settings.FLUSH_INTERVAL_S.get(env),
            stale_after_s=stale_after_s,
            heartbeat_interval_s=min(5.0, stale_after_s / 4),
            s3=S3Settings.from_env(env),
        )

    def artifact_roots(self, *extra: str | Path) -> ArtifactRoots:
        """The stores an artifact record may point into: the artifact path, the extra
        ``TICKRUN_ARTIFACT_STORES`` and ``extra`` (e.g. a run's explicit ``artifact_path``)."""
        return ArtifactRoots.of([self.artifact_path, *self.artifact_stores, *extra])
