"""Both ends of a tracked run in another process, the parts that belong to tracked runs.

The submitting side (the CLI's ``tickrun run --runner``, ``HubFunction.run(runner=…)``)
builds a :class:`~tickrun.functions.runs.plugins.JobRequest`, hands it to that runner's job
launcher (``tickrun.job_runners``) and reads the finished run back with :func:`load_run`. The
launcher starts a process (or a container) whose entry point is :func:`main`: it takes the
request as JSON, runs it with :func:`~tickrun.functions.runs.runner.run_function` under the
request's uid, and exits 0 when the run completed.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from ..errors import TickrunError
from .plugins import configure_job_logging, parse_job_request
from .runobject import RunObject
from .settings import TrackingSettings

logger = logging.getLogger(__name__)


def load_run(uid: str, settings: TrackingSettings | None = None) -> RunObject:
    """The run ``uid`` with its iterations and artifacts, as ``run_function`` returns it.

    Raises NotFoundError when the job never recorded it (it died before starting the run).
    """
    from .db import open_db

    settings = settings or TrackingSettings.from_env()
    db = open_db(settings)
    record = db.get_run(uid)
    iterations = [r for r in db.list_runs(None, uid=uid, limit=100_000) if r.iteration > 0]
    iterations.sort(key=lambda r: r.iteration)
    artifacts = db.list_artifacts(record.project, uid=uid, iteration=0)
    return RunObject(record, artifacts, iterations, db=db, s3=settings.s3)


def main(argv: Sequence[str] | None = None) -> None:
    """The job process: ``argv[0]`` is the JobRequest as JSON; exits 0 when the run completed,
    1 when it did not, 2 for a request it cannot run."""
    from .runner import run_function

    configure_job_logging()
    # This process runs one run: what the job prints goes into the run's log too.
    from .runlog import enable_stdio_capture

    enable_stdio_capture()
    try:
        request = parse_job_request(argv)
    except (ValueError, ValidationError) as exc:
        print(f"tickrun job: bad request: {exc}", file=sys.stderr)
        sys.exit(2)
    try:
        run = run_function(request.target, **request.run_kwargs())
    except TickrunError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        sys.exit(2 if exc.status in (400, 404, 409, 413) else 1)
    except KeyboardInterrupt:  # SIGINT/SIGTERM (the boot code): the runner marked it aborted
        sys.exit(130)
    sys.exit(0 if run.state == "completed" else 1)


__all__ = ["load_run", "main"]
