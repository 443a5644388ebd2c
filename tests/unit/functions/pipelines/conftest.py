from __future__ import annotations

from pathlib import Path

# The tracked-runs fixtures (a private TICKRUN_HOME, its settings and run DB) are the runs
# tests' own: imported here so pytest registers them for the pipeline tests too.
from tests.unit.functions.runs.conftest import db, home, settings

__all__ = ["JOBS", "db", "home", "job", "settings"]

JOBS = Path(__file__).resolve().parent / "pipeline_jobs_for_tests.py"


def job(name: str) -> str:
    """A step target in the test jobs file."""
    return f"{JOBS}:{name}"
