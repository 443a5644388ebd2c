"""Tracking settings from the environment.

======================== =============================================================
``TICKRUN_HOME``          root of local state (default ``~/.tickrun``)
``TICKRUN_ARTIFACT_PATH`` where artifacts go: a folder or ``s3://bucket/prefix``
                          (default ``$TICKRUN_HOME/artifacts``)
``TICKRUN_DB_URL``        SQLAlchemy URL of the run DB (default
                          ``sqlite:///$TICKRUN_HOME/runs.db``)
``TICKRUN_CONTROLLER_URL`` when set (and no ``TICKRUN_DB_URL``), runs are tracked in the
                          controller's store through its REST API
``TICKRUN_TOKEN``         bearer token for the controller
``TICKRUN_FLUSH_INTERVAL_S`` how often buffered results reach the DB (default 1.0)
``TICKRUN_STALE_AFTER_S`` a running run whose heartbeat is older is marked aborted (60)
``TICKRUN_ARTIFACT_STORES`` more artifact stores (comma-separated folders or
                          ``s3://bucket[/prefix]``) that artifact records may point into,
                          besides ``TICKRUN_ARTIFACT_PATH``
======================== =============================================================

S3 endpoint and keys: see :mod:`tickrun.functions.artifacts.settings`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from ..artifacts.settings import S3Settings
from ..artifacts.targets import ArtifactRoots

# Where a controller is: runs are tracked there, and hub deploys go through it.
CONTROLLER_URL_ENV = "TICKRUN_CONTROLLER_URL"


class TrackingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    home: Path
    artifact_path: str
    artifact_stores: tuple[str, ...] = ()
    db_url: str
    controller_url: str | None = None
    token: SecretStr | None = None
    flush_interval_s: float = Field(default=1.0, gt=0)
    heartbeat_interval_s: float = Field(default=5.0, gt=0)
    stale_after_s: float = Field(default=60.0, gt=0)
    s3: S3Settings = Field(default_factory=lambda: S3Settings())

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TrackingSettings:
        e = os.environ if env is None else env
        home = Path(e.get("TICKRUN_HOME") or Path.home() / ".tickrun").expanduser()
        explicit_db = e.get("TICKRUN_DB_URL")
        controller = (e.get(CONTROLLER_URL_ENV) or "").rstrip("/") or None
        token = e.get("TICKRUN_TOKEN")
        return cls(
            home=home,
            artifact_path=e.get("TICKRUN_ARTIFACT_PATH") or str(home / "artifacts"),
            artifact_stores=tuple(
                u.strip() for u in e.get("TICKRUN_ARTIFACT_STORES", "").split(",") if u.strip()
            ),
            db_url=explicit_db or f"sqlite:///{home / 'runs.db'}",
            controller_url=None if explicit_db else controller,
            token=SecretStr(token) if token else None,
            flush_interval_s=float(e.get("TICKRUN_FLUSH_INTERVAL_S", "1.0")),
            stale_after_s=float(e.get("TICKRUN_STALE_AFTER_S", "60")),
            heartbeat_interval_s=min(5.0, float(e.get("TICKRUN_STALE_AFTER_S", "60")) / 4),
            s3=S3Settings.from_env(e),
        )

    def artifact_roots(self, *extra: str | Path) -> ArtifactRoots:
        """The stores an artifact record may point into: the artifact path, the extra
        ``TICKRUN_ARTIFACT_STORES`` and ``extra`` (e.g. a run's explicit ``artifact_path``)."""
        return ArtifactRoots.of([self.artifact_path, *self.artifact_stores, *extra])
