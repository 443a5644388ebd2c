"""A pipeline as a job: load ``FILE.py:NAME`` and run it inside the current tracked run.

``run_pipeline`` is a job handler, so a controller schedule (a JobRequest whose target is
``tickrun.functions.pipelines.job:run_pipeline``) or ``tickrun run`` can run a pipeline: the
job's own run becomes the pipeline run (labels ``tickrun.pipeline``, result/artifact ``graph``).
"""

from __future__ import annotations

import hashlib
import importlib
from pathlib import Path
from typing import Any

from ..errors import BadRequestError, TickrunError
from ..modules import import_file
from ..runs.db import open_db
from ..runs.settings import TrackingSettings
from .execution import StepRun, drive
from .runnable import Pipeline

JOB_TARGET = "tickrun.functions.pipelines.job:run_pipeline"


def load_pipeline(ref: str, params: dict[str, Any] | None = None) -> Pipeline:
    """The Pipeline named by ``FILE.py:NAME`` (or ``module:NAME``): a module-level Pipeline,
    or a function returning one (called with ``params`` as keyword arguments)."""
    target, sep, name = ref.rpartition(":")
    if not sep or not target or not name:
        raise BadRequestError(f"pipeline {ref!r} must look like FILE.py:NAME or module:NAME")
    try:
        if target.endswith(".py"):
            path = Path(target).expanduser().resolve()
            if not path.is_file():
                raise BadRequestError(f"pipeline file {path} does not exist")
            # The name load_callable gives the same file: one import per process.
            digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]  # noqa: S324
            module = import_file(path, f"tickrun_job_{digest}", siblings=True)
        else:
            module = importlib.import_module(target)
    except TickrunError:
        raise
    except Exception as exc:
        raise BadRequestError(f"importing {target} raised {type(exc).__name__}: {exc}") from exc
    obj: Any = getattr(module, name, None)
    if obj is None:
        raise BadRequestError(f"{target} has no pipeline {name!r}")
    if not isinstance(obj, Pipeline) and callable(obj):
        obj = obj(**(params or {}))
    if not isinstance(obj, Pipeline):
        raise BadRequestError(f"{ref} is not a Pipeline nor returns one ({type(obj).__name__})")
    return obj


def run_pipeline(
    context: Any,
    pipeline: str,
    runner: str = "local",
    parallel: int = 4,
    cache: bool = True,
    params: dict[str, Any] | None = None,
) -> None:
    """Run the pipeline ``pipeline`` (``FILE.py:NAME``) in this run; steps on ``runner``."""
    p = load_pipeline(pipeline, params)
    settings = TrackingSettings.from_env()
    steps: dict[str, StepRun] = {}
    drive(
        p,
        context,
        runner=runner,
        parallel=int(parallel),
        cache=_flag(cache),
        settings=settings,
        db=open_db(settings),
        into=steps,
    )


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


__all__ = ["JOB_TARGET", "load_pipeline", "run_pipeline"]
