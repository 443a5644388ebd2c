"""``run_function``: run a handler as a tracked job (one run, or a hyperparameter sweep)."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..artifacts import ArtifactRoots, ArtifactStore, S3Settings, open_store
from ..errors import BadRequestError, TickrunError
from .context import RunContext
from .dataitem import DataItem, using_roots
from .db import DbLocator, RunDB, open_db, open_locator
from .handlers import call_handler, handler_name, handler_ref, load_callable
from .model import ArtifactRecord, RunRecord, RunState
from .plugins import ResolvedTarget, target_resolver
from .runobject import RunObject
from .serialize import jsonable
from .settings import TrackingSettings
from .tracker import RunTracker

logger = logging.getLogger(__name__)

Handler = str | Callable[..., Any]


def new_uid() -> str:
    return uuid.uuid4().hex


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


def resolve_handler(handler: Handler) -> ResolvedTarget:
    """The callable, a reference string for the record and for child processes, and labels.

    For ``hub://`` handlers the labels record the resolved item, version, source and handler.
    """
    if callable(handler):
        return ResolvedTarget(handler, handler_ref(handler) or handler_name(handler))
    scheme, sep, _rest = handler.partition("://")
    if sep:
        # hub:// (and any later scheme) comes from the layer above, through its entry point.
        target = target_resolver(scheme)(handler)
        return replace(target, ref=handler_ref(target.fn) or target.ref)
    return ResolvedTarget(load_callable(handler), handler)


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
    ctx = RunContext(tracker, store, inputs=dict(inputs))
    try:
        store.prepare()
        with using_roots(roots):
            out = call_handler(fn, ctx, record.params, inputs)
        if isinstance(out, dict):
            ctx.log_results(out)
        elif out is not None:
            ctx.log_result("return", jsonable(out))
    except KeyboardInterrupt:
        tracker.finish(RunState.ABORTED, "interrupted")
        raise
    except SystemExit as exc:
        # A job calling sys.exit() ends its run, not the caller (a sweep, a notebook).
        ok = exc.code in (None, 0)
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
        final = tracker.finish(RunState.ERROR, msg[:2000])
    else:
        final = tracker.finish(RunState.COMPLETED)
    finally:
        for item in inputs.values():
            item.cleanup()
    return final, list(ctx.artifacts.values())


def run_function(
    handler: Handler,
    *,
    params: Mapping[str, Any] | None = None,
    inputs: Mapping[str, Any] | None = None,
    project: str = "default",
    name: str | None = None,
    labels: Mapping[str, str] | None = None,
    hyperparams: Mapping[str, list[Any]] | None = None,
    hyper_strategy: str = "grid",
    selector: str | None = None,
    stop_condition: str | None = None,
    max_iterations: int | None = None,
    parallel: int = 1,
    artifact_path: str | Path | None = None,
    db: RunDB | None = None,
    store: ArtifactStore | None = None,
    settings: TrackingSettings | None = None,
    seed: int | None = None,
    progress: bool = True,
    uid: str | None = None,
) -> RunObject:
    """Run ``handler`` (a callable, ``"file.py:fn"``, ``"module:fn"`` or ``"hub://item"``).

    Parameters and inputs are injected by name. With ``hyperparams`` this is a sweep: one
    iteration per parameter combination (``grid``, ``list`` or ``random``), up to ``parallel``
    of them at once in worker processes, and a parent run (iteration 0) holding the best
    iteration's results by ``selector`` (``"max.accuracy"``, ``"min.loss"``).
    """
    s = settings or TrackingSettings.from_env()
    db = db or open_db(s)
    store = store or open_store(str(artifact_path) if artifact_path else s.artifact_path, s.s3)
    target = resolve_handler(handler)
    fn, ref = target.fn, target.ref
    labels = {**target.labels, **(labels or {})}
    name = name or target.name
    if target.check is not None:
        target.check(params or {}, inputs or {})
    try:
        record = _new_record(handler, ref, store, params, inputs, project, name, labels, uid)
    except ValidationError as exc:
        bad = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise BadRequestError(f"invalid run: {bad}") from None
    # A run whose process died since the last look must not stay "running" forever.
    db.mark_stale()
    env = RunEnv(
        db=db.locator(),
        artifact_path=store.url,
        s3=getattr(store, "settings", s.s3),
        flush_interval_s=s.flush_interval_s,
        heartbeat_interval_s=s.heartbeat_interval_s,
        stale_after_s=s.stale_after_s,
        artifact_roots=s.artifact_roots(store.url),
    )
    if hyperparams:
        from .hyper import run_sweep

        return run_sweep(
            fn,
            ref,
            record,
            dict(inputs or {}),
            db=db,
            store=store,
            env=env,
            hyperparams=dict(hyperparams),
            strategy=hyper_strategy,
            selector=selector,
            stop_condition=stop_condition,
            max_iterations=max_iterations,
            parallel=parallel,
            seed=seed,
            progress=progress,
        )
    t0 = time.perf_counter()
    final, arts = execute(
        fn,
        record,
        db=db,
        store=store,
        inputs=make_inputs(inputs, db, env.s3, env.artifact_roots),
        flush_interval_s=s.flush_interval_s,
        heartbeat_interval_s=s.heartbeat_interval_s,
        roots=env.artifact_roots,
    )
    logger.info(
        "run finished",
        extra={
            "uid": final.uid,
            "state": final.state.value,
            "elapsed_s": round(time.perf_counter() - t0, 3),
        },
    )
    return RunObject(final, arts, db=db, s3=env.s3, roots=env.artifact_roots)


def _new_record(
    handler: Handler,
    ref: str,
    store: ArtifactStore,
    params: Mapping[str, Any] | None,
    inputs: Mapping[str, Any] | None,
    project: str,
    name: str | None,
    labels: Mapping[str, str] | None,
    uid: str | None,
) -> RunRecord:
    return RunRecord(
        uid=uid or new_uid(),
        project=project,
        name=name or handler_name(handler),
        handler=ref,
        params={k: jsonable(v) for k, v in (params or {}).items()},
        inputs={
            k: (v.url if isinstance(v, DataItem) else str(v)) for k, v in (inputs or {}).items()
        },
        labels={str(k): str(v) for k, v in (labels or {}).items()},
        artifact_path=store.url,
    )
