"""`tickrun` as a command (tickrun.cli.entrypoint): the collector is off while the command
starts and back on, with start-up's objects frozen, before any code of the user's runs."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tickrun.functions.runs.db.sql import SqlRunDB

JOB = """
import gc

# Module level: the user's code starts here, while the run's target is imported.
AT_IMPORT = (gc.isenabled(), gc.get_freeze_count())


def job(context):
    context.log_result("enabled_at_import", AT_IMPORT[0])
    context.log_result("frozen_at_import", AT_IMPORT[1])
    context.log_result("enabled", gc.isenabled())
"""


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TICKRUN_HOME": str(tmp_path)}
    for name in ("TICKRUN_CONTROLLER_URL", "TICKRUN_DB_URL", "TICKRUN_ARTIFACT_PATH"):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "tickrun", "--log-level", "WARNING", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )


def test_the_users_code_runs_with_the_collector_on(tmp_path: Path) -> None:
    (tmp_path / "gcjob.py").write_text(JOB)
    proc = _run(tmp_path, "run", "gcjob.py:job")
    assert proc.returncode == 0, proc.stderr[-2000:]
    (run,) = SqlRunDB(f"sqlite:///{tmp_path / 'runs.db'}").list_runs()
    assert run.results["enabled_at_import"] is True
    assert run.results["enabled"] is True
    # what start-up made (pydantic, the runner: imported before the user's module) is frozen
    assert run.results["frozen_at_import"] > 10_000


def test_a_command_that_fails_to_start_exits_with_its_usage_error(tmp_path: Path) -> None:
    proc = _run(tmp_path, "run", "gcjob.py:job", "--strategy", "nope")
    assert proc.returncode == 2
    assert "invalid choice" in proc.stderr


def test_in_process_callers_keep_their_collector(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tickrun.cli import main

    monkeypatch.setenv("TICKRUN_HOME", str(tmp_path))
    for name in ("TICKRUN_CONTROLLER_URL", "TICKRUN_DB_URL", "TICKRUN_ARTIFACT_PATH"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "gcjob.py").write_text(JOB)
    frozen = gc.get_freeze_count()
    with pytest.raises(SystemExit) as exited:
        main(["--log-level", "WARNING", "run", f"{tmp_path / 'gcjob.py'}:job"])
    assert exited.value.code == 0
    assert gc.isenabled()
    assert gc.get_freeze_count() == frozen
