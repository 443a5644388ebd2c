"""``run_function``: run a handler as a tracked job (one run, or a hyperparameter sweep)."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..artifacts import ArtifactStore, open_store
from ..errors import BadRequestError, InvalidFieldError
from .codehash import fingerprint_labels
from .dataitem import DataItem
from .db import RunDB, open_recording_db
from .execution import RunEnv, execute, make_inputs
from .job_handler import handler_name, handler_ref, load_callable
from .plugins import ResolvedTarget, target_resolver
from .records import RunRecord
from .runobject import RunObject
from .serialize import jsonable
from .settings import TrackingSettings

logger = logging.getLogger(__name__)

Handler = str | Callable[..., Any]


def new_uid() -> str:
    return uuid.uuid4().hex


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


def run_function(
    handler: Handler,
    *,
    params: Mapping[str, Any] | None = None,
    inputs: Mapping[str, Any] | None = None,
    project: str = "default",
    name: str | None = None,
    labels: Mapping[str, str] | None = None,
    hyperparams: Mapping[str, Any] | None = None,
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
    iteration per parameter combination (``grid``, ``list`` or ``random``) or per trial
    (``optuna``: lists and ``{"low":…, "high":…}`` ranges), up to ``parallel`` of them at once
    in worker processes, and a parent run (iteration 0) holding the best iteration's results by
    ``selector`` (``"max.accuracy"``, ``"min.loss"``; on ``validation_accuracy`` when reported).
    """
    s = settings or TrackingSettings.from_env()
    db = db or open_recording_db(s)
    store = store or open_store(str(artifact_path) if artifact_path else s.artifact_path, s.s3)
    target = resolve_handler(handler)
    fn, ref = target.fn, target.ref
    # code.hash / requirements.lock first: a caller's labels win (a job that already knows them).
    labels = {**fingerprint_labels(fn), **target.labels, **(labels or {})}
    name = name or target.name
    if target.check is not None:
        target.check(params or {}, inputs or {})
    try:
        record = new_record(handler, ref, store, params, inputs, project, name, labels, uid)
    except InvalidFieldError as exc:
        raise BadRequestError(f"invalid run: {exc.message}") from None
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
        if hyper_strategy == "optuna":
            from .optunasweep import run_optuna as run_sweep
        else:
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


def new_record(
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
