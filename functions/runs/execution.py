"""One run executed in this process: the engine under ``run_function`` and a sweep's iterations.

Apart from :mod:`.runner` so that a sweep (:mod:`.hyper`, :mod:`.pool`) and ``run_function``,
which starts sweeps, do not import each other.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..artifacts import ArtifactRoots, ArtifactStore, S3Settings, open_store
from ..errors import TickrunError
from .context import RunContext
from .dataitem import DataItem, using_roots
from .db import DbLocator, RunDB, open_locator
from .job_handler import call_handler
from .records import ArtifactRecord, RunRecord, RunState
from .runlog import LivePublisher, RunLog, add_failure, capture_stdio, write_log
from .serialize import jsonable
from .tracker import RunTracker
from .trials import TrialPruned

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunEnv:
    """Everything a (child) process needs to reopen the same DB and artifact store."""

    db: DbLocator | None
    artifact_path: str
    s3: S3Settings
    flush_interval_s: float = 1.0
    heartbeat_interval_s: float = 5.0
    stale_after_s: float = 60.0
    # Where store:// inputs may point: the configured stores plus this run's own.
    artifact_roots: ArtifactRoots = field(default_factory=ArtifactRoots)

    def open_db(self) -> RunDB:
        if self.db is None:
            raise TickrunError("this run DB cannot be reopened in another process")
        return open_locator(self.db, self.stale_after_s)

    def open_store(self) -> ArtifactStore:
        return open_store(self.artifact_path, self.s3)


def make_inputs(
    inputs: Mapping[str, Any] | None,
    db: RunDB | None,
    s3: S3Settings,
    roots: ArtifactRoots | None = None,
) -> dict[str, DataItem]:
    items: dict[str, DataItem] = {}
    for name, value in (inputs or {}).items():
        if isinstance(value, DataItem):
            items[name] = value
        else:
            items[name] = DataItem(str(value), key=name, db=db, s3=s3, roots=roots)
    return items


def execute(
    fn: Callable[..., Any],
    record: RunRecord,
    *,
    db: RunDB,
    store: ArtifactStore,
    inputs: Mapping[str, DataItem],
    flush_interval_s: float = 1.0,
    heartbeat_interval_s: float = 5.0,
    roots: ArtifactRoots | None = None,
) -> tuple[RunRecord, list[ArtifactRecord]]:
    """Run ``fn`` as the run ``record``; handler errors end the run in state error.

    ``roots``: the artifact stores the handler's own ``store://`` reads may point into."""
    tracker = RunTracker(
        db, record, flush_interval_s=flush_interval_s, heartbeat_interval_s=heartbeat_interval_s
    )
    tracker.start()
    # The run's own log (context.logger, and stdout/stderr in a job's process): published as
    # its "log" artifact while it runs (a thread started by its first line), and stored complete
    # when the run ends, before the end is recorded.
    run_log = RunLog()
    ctx = RunContext(tracker, store, inputs=dict(inputs), run_log=run_log)
    live = LivePublisher(
        run_log,
        # A store that keeps refusing is reported once, not every few seconds.
        lambda log: write_log(ctx, log, final=False, warn=live.failures == 0),
        name=f"run-log-{record.uid}-{record.iteration}",
    )

    def store_log() -> None:
        live.stop()  # no live copy after this: the final log is the last one written
        write_log(ctx, run_log)

    try:
        store.prepare()
        with using_roots(roots), capture_stdio(run_log):
            out = call_handler(fn, ctx, record.params, inputs)
        if isinstance(out, dict):
            ctx.log_results(out)
        elif out is not None:
            ctx.log_result("return", jsonable(out))
        if ctx.pruned_at is not None:  # told to stop, and it did: whatever it returned
            raise TrialPruned
    except TrialPruned:
        # Pruned by the sweep: ended early by the sweep's decision, as iterations the stop
        # condition skips are: aborted, never a failure of the handler.
        ctx.set_label("hyper.pruned", "true")
        at = ctx.pruned_at
        why = f"pruned at step {at[0]} (intermediate value {at[1]:.6g})" if at else "pruned"
        store_log()
        final = tracker.finish(RunState.ABORTED, why)
    except KeyboardInterrupt:
        store_log()
        tracker.finish(RunState.ABORTED, "interrupted")
        raise
    except SystemExit as exc:
        # A job calling sys.exit() ends its run, not the caller (a sweep, a notebook).
        ok = exc.code in (None, 0)
        if not ok:
            add_failure(run_log, f"handler called sys.exit({exc.code!r})")
        store_log()
        final = tracker.finish(
            RunState.COMPLETED if ok else RunState.ERROR,
            None if ok else f"handler called sys.exit({exc.code!r})",
        )
        return final, list(ctx.artifacts.values())
    except Exception as exc:
        msg = exc.message if isinstance(exc, TickrunError) else f"{type(exc).__name__}: {exc}"
        # The traceback is for the operator's log; the record keeps the one-line message.
        logger.error(
            "run failed",
            exc_info=True,
            extra={"uid": record.uid, "iteration": record.iteration, "error": msg},
        )
        add_failure(run_log, msg, exc)  # the traceback: the user's own code, in the run's log
        store_log()
        final = tracker.finish(RunState.ERROR, msg[:2000])
    else:
        store_log()
        final = tracker.finish(RunState.COMPLETED)
    finally:
        live.stop()  # ended by an exception none of the above caught
        for item in inputs.values():
            item.cleanup()
    return final, list(ctx.artifacts.values())
