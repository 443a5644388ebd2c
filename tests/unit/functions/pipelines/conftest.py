from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tickrun.functions.runs import SqlRunDB, TrackingSettings

JOBS = Path(__file__).resolve().parent / "pipeline_jobs_for_tests.py"


def job(name: str) -> str:
    """A step target in the test jobs file."""
    return f"{JOBS}:{name}"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private TICKRUN_HOME so nothing touches ~/.tickrun."""
    h = tmp_path / "home"
    monkeypatch.setenv("TICKRUN_HOME", str(h))
    for var in (
        "TICKRUN_CONTROLLER_URL",
        "TICKRUN_DB_URL",
        "TICKRUN_ARTIFACT_PATH",
        "TICKRUN_TOKEN",
    ):
        monkeypatch.delenv(var, raising=False)
    return h


@pytest.fixture
def settings(home: Path) -> TrackingSettings:
    return TrackingSettings.from_env()


@pytest.fixture
def db(settings: TrackingSettings) -> Iterator[SqlRunDB]:
    d = SqlRunDB(settings.db_url)
    yield d
    d.close()
