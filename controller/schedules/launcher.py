"""One firing's job, in its own process, launched as ``tickrun run --runner R`` launches it.

The controller starts ``launch_main`` in a fresh interpreter (``functions/launch.py``: it gets
SIGTERM when the controller dies); there, in its main thread, the runner's job launcher
(``tickrun.job_runners``: ``controller/jobs.py:run_job`` for subprocess and container) runs
the request and waits, exactly as for the CLI. So aborting a run is what Ctrl-C of the CLI
does: SIGTERM to the launcher, which interrupts the job (the run ends ``aborted``) and settles
it. The job tracks into the controller's own database (``TICKRUN_DB_URL``), where
``/api/runs`` reads it. Its output goes to ``<state>/logs/schedules/<schedule>.log``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Protocol

from tickrun.functions.errors import NotFoundError, TickrunError
from tickrun.functions.launch import parent_env, python_command
from tickrun.functions.runs.db import SqlRunDB
from tickrun.functions.runs.plugins import (
    JobRequest,
    configure_job_logging,
    job_launcher,
    parse_job_request,
)
from tickrun.functions.settings import DB_URL

logger = logging.getLogger(__name__)

# After SIGTERM the launcher gives the job jobs.GRACE_S (10 s) to stop, then kills it.
KILL_AFTER_S = 20.0
LOG_MAX_BYTES = 16 * 1024 * 1024


def launch_main() -> int:
    """The launcher process: ``sys.argv[1]`` is the JobRequest as JSON; the job's exit status."""
    configure_job_logging()
    try:
        request = parse_job_request(None)
        return job_launcher(request.runner)(request)
    except TickrunError as exc:
        print(f"tickrun schedule: {exc.message}", file=sys.stderr, flush=True)
        return 2
    except ValueError as exc:  # a request that does not parse (pydantic's error is one)
        print(f"tickrun schedule: bad request: {exc}", file=sys.stderr, flush=True)
        return 2


class RunningJob(Protocol):
    """A started firing: its run's uid, its end, and how to abort it."""

    uid: str

    async def wait(self) -> int: ...

    def abort(self) -> None: ...


class Launcher(Protocol):
    async def start(self, schedule: str, request: JobRequest) -> RunningJob: ...

    async def run_state(self, uid: str) -> str | None:
        """The run's state in the run DB; None when it was never recorded."""

    def close(self) -> None: ...


class _ProcessJob:
    def __init__(self, uid: str, proc: asyncio.subprocess.Process) -> None:
        self.uid = uid
        self.proc = proc
        self._killer: asyncio.TimerHandle | None = None

    async def wait(self) -> int:
        try:
            return await self.proc.wait()
        finally:
            if self._killer is not None:
                self._killer.cancel()

    def abort(self) -> None:
        if self.proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        if self._killer is None:
            self._killer = asyncio.get_running_loop().call_later(KILL_AFTER_S, self._kill)

    def _kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)


class ProcessLauncher:
    """Constructor does no I/O; the run DB opens on first use."""

    def __init__(self, db_url: str, log_dir: Path) -> None:
        self.db_url = db_url
        self.log_dir = log_dir
        self._db = SqlRunDB(db_url)

    def _log(self, schedule: str) -> int:
        self.log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.log_dir / f"{schedule}.log"
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_size > LOG_MAX_BYTES:
                path.replace(path.with_suffix(".log.1"))
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    async def start(self, schedule: str, request: JobRequest) -> RunningJob:
        cmd = python_command(launch_main, request.model_dump_json(), on_parent_death=signal.SIGTERM)
        # The controller's own database: explicit, so it wins over a controller URL.
        env = {**os.environ, DB_URL.name: self.db_url, "PYTHONUNBUFFERED": "1", **parent_env()}
        fd = await asyncio.to_thread(self._log, schedule)
        try:
            proc = await asyncio.create_subprocess_exec(
                *cmd,
                stdin=subprocess.DEVNULL,
                stdout=fd,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        finally:
            os.close(fd)
        return _ProcessJob(request.uid, proc)

    async def run_state(self, uid: str) -> str | None:
        def read() -> str | None:
            try:
                return self._db.get_run(uid).state.value
            except NotFoundError:
                return None

        return await asyncio.to_thread(read)

    def close(self) -> None:
        self._db.close()
