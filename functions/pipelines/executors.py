"""Running one step attempt: in this process (``runner="local"``, ``run_function`` in the
scheduler's thread) or as a job (any other runner, through the ``tickrun.job_runners`` plugin:
a process, a container or a Kubernetes Job of its own, read back from the run DB).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ..errors import BadRequestError, NotFoundError, TickrunError
from ..runs.codehash import fingerprint
from ..runs.job import load_run
from ..runs.job_handler import handler_ref
from ..runs.plugins import JobRequest, job_launcher
from ..runs.runner import new_uid, resolve_handler, run_function
from ..runs.runobject import RunObject
from ..runs.settings import TrackingSettings
from .steps import COMPLETED, ERROR, Outcome, StepCall

logger = logging.getLogger(__name__)


def outcome_of(run: RunObject, started: float) -> Outcome:
    rec = run.record
    return Outcome(
        COMPLETED if run.state == COMPLETED else ERROR,
        run_uid=run.uid,
        outputs=run.outputs,
        results=run.results,
        error=None if run.state == COMPLETED else (run.error or f"run {run.state}"),
        started_at=rec.started_at or started,
        ended_at=rec.ended_at or time.time(),
    )


class LocalExecutor:
    """Each attempt a ``run_function`` call here (threads: steps run side by side)."""

    def __init__(self, settings: TrackingSettings) -> None:
        self.settings = settings

    def __call__(self, job: StepCall) -> Outcome:
        step = job.step
        started = time.time()
        run = run_function(
            step.target,
            params=job.params,
            inputs=job.inputs,
            project=job.project,
            name=step.name,
            labels=job.labels,
            hyperparams=step.hyperparams or None,
            hyper_strategy=step.hyper_strategy,
            selector=step.selector,
            settings=self.settings,
            progress=False,
        )
        return outcome_of(run, started)


class JobExecutor:
    """Each attempt a JobRequest for the runner's launcher; the run is read back by uid."""

    def __init__(
        self, runner: str, settings: TrackingSettings, *, artifact_path: str | None = None
    ) -> None:
        self.runner = runner
        self.settings = settings
        # Only a path the caller chose: else the runner's own default (a Job's is not ours).
        self.artifact_path = artifact_path
        self.launch = job_launcher(runner)  # a 400 now for an unknown runner, before any step

    def request(self, job: StepCall) -> JobRequest:
        step = job.step
        target = step.target
        if not isinstance(target, str):
            ref = handler_ref(target)
            if ref is None:
                raise BadRequestError(
                    f"step {step.name}: runner {self.runner} runs a target another process can "
                    "load (file.py:fn, module:fn, hub://…), not a lambda or a closure"
                )
            target = ref
        labels = dict(job.labels)
        requirements: list[str] = []
        if self.runner == "kubernetes" and "://" in target:
            # The Job's image is built from the handler's folder (as HubFunction.run does):
            # the item's file, with its requirements; the labels still name the item.
            resolved = resolve_handler(target)
            fp = fingerprint(resolved.fn)
            labels = {**resolved.labels, **labels}
            requirements = list(fp.requirements) if fp is not None else []
            target = resolved.ref
        fields: dict[str, Any] = {
            "runner": self.runner,
            "target": target,
            "uid": new_uid(),
            "params": job.params,
            "inputs": job.inputs,
            "project": job.project,
            "name": step.name,
            "labels": labels,
            "artifact_path": self.artifact_path,
            "requirements": requirements,
        }
        if step.hyperparams:
            fields.update(
                hyperparams=step.hyperparams,
                hyper_strategy=step.hyper_strategy,
                selector=step.selector,
            )
        try:
            return JobRequest.model_validate(fields)
        except ValueError as exc:
            raise BadRequestError(f"step {step.name}: invalid job: {exc}") from None

    def __call__(self, job: StepCall) -> Outcome:
        request = self.request(job)
        started = time.time()
        status = self.launch(request)
        try:
            run = load_run(request.uid, self.settings)
        except NotFoundError:
            return Outcome(
                ERROR,
                error=f"the {self.runner} job exited with status {status} before recording "
                f"run {request.uid}",
                started_at=started,
                ended_at=time.time(),
            )
        except TickrunError as exc:
            return Outcome(ERROR, run_uid=request.uid, error=exc.message, started_at=started)
        return outcome_of(run, started)


__all__ = ["JobExecutor", "LocalExecutor", "outcome_of"]
