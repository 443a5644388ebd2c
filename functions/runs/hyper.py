"""Hyperparameter sweeps: grid / list / random iterations, a selector, a stop condition, and
iterations in a bounded pool of worker processes.

The sweep is one run uid: iteration 0 is the parent (best iteration's results, an
``iteration_results`` table and an ``iteration_plot``), iterations 1..N are the children. A failing
iteration is recorded as error and the sweep goes on.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import operator
import random
import re
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from ..artifacts import ArtifactStore
from ..errors import BadRequestError, TickrunError
from .context import RunContext
from .db.base import RunDB
from .handlers import load_callable
from .model import ArtifactRecord, RunRecord, RunState
from .runner import RunEnv, execute, make_inputs
from .runobject import RunObject
from .tracker import RunTracker

logger = logging.getLogger(__name__)

STRATEGIES = ("grid", "list", "random")
DEFAULT_RANDOM_ITERATIONS = 10
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    "<": operator.lt,
}
_COND = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.-]*)\s*(>=|<=|==|!=|>|<)\s*(\S+)\s*$")


def expand(
    hyperparams: dict[str, list[Any]],
    strategy: str = "grid",
    max_iterations: int | None = None,
    seed: int | None = None,
) -> list[dict[str, Any]]:
    """The parameter combination of each iteration, in order."""
    if strategy not in STRATEGIES:
        raise BadRequestError(f"hyper strategy must be one of {', '.join(STRATEGIES)}")
    for k, v in hyperparams.items():
        if not isinstance(v, list | tuple) or not v:
            raise BadRequestError(f"hyperparameter {k!r} needs a non-empty list of values")
    keys = list(hyperparams)
    if strategy == "grid":
        combos = [
            dict(zip(keys, vals, strict=True))
            for vals in itertools.product(*(hyperparams[k] for k in keys))
        ]
    elif strategy == "list":
        lengths = {len(v) for v in hyperparams.values()}
        if len(lengths) != 1:
            raise BadRequestError("the 'list' strategy needs value lists of equal length")
        combos = [
            dict(zip(keys, vals, strict=True))
            for vals in zip(*(hyperparams[k] for k in keys), strict=True)
        ]
    else:
        rng = random.Random(seed)
        n = max_iterations or DEFAULT_RANDOM_ITERATIONS
        combos = [{k: rng.choice(list(hyperparams[k])) for k in keys} for _ in range(n)]
    return combos[:max_iterations] if max_iterations else combos


def parse_selector(selector: str) -> tuple[str, str]:
    """``"max.accuracy"`` → ("max", "accuracy")."""
    op, _, key = selector.partition(".")
    if op not in ("max", "min") or not key:
        raise BadRequestError(f"selector {selector!r} must be max.<result> or min.<result>")
    return op, key


def parse_condition(text: str) -> Callable[[dict[str, Any]], bool]:
    """``"accuracy >= 0.9"`` → a predicate over an iteration's results (no eval)."""
    m = _COND.match(text)
    if not m:
        raise BadRequestError(
            f"stop condition {text!r} must look like '<result> <op> <number>' (ops: "
            f"{' '.join(_OPS)})"
        )
    key, op, raw = m.groups()
    try:
        target: Any = float(raw)
    except ValueError:
        target = raw.strip("'\"")

    def check(results: dict[str, Any]) -> bool:
        value = results.get(key)
        if value is None:
            return False
        try:
            return bool(_OPS[op](value, target))
        except TypeError:
            return False

    return check


def select_best(children: list[RunRecord], selector: str | None) -> RunRecord | None:
    done = [c for c in children if c.state is RunState.COMPLETED]
    if not done:
        return None
    if not selector:
        return done[0]
    op, key = parse_selector(selector)
    scored = [c for c in done if isinstance(c.results.get(key), int | float)]
    if not scored:
        return None
    pick = max if op == "max" else min
    return pick(
        scored,
        key=lambda c: (
            (c.results[key], -c.iteration) if op == "max" else (c.results[key], c.iteration)
        ),
    )


@dataclass(frozen=True)
class IterationTask:
    handler: str
    record: RunRecord
    inputs: dict[str, str]
    env: RunEnv


def run_task(task: IterationTask) -> tuple[RunRecord, list[ArtifactRecord]]:
    """Entry point of a worker process: reopen DB and store, run one iteration."""
    if not logging.getLogger().handlers:  # a spawned worker logs like its parent
        import os

        from ..logs import configure_logging

        fmt = os.environ.get("TICKRUN_LOG_FORMAT")
        configure_logging(json_logs=None if fmt is None else fmt == "json")
    db = task.env.open_db()
    try:
        return execute(
            load_callable(task.handler),
            task.record,
            db=db,
            store=task.env.open_store(),
            inputs=make_inputs(task.inputs, db, task.env.s3),
            flush_interval_s=task.env.flush_interval_s,
            heartbeat_interval_s=task.env.heartbeat_interval_s,
        )
    finally:
        db.close()


def _loadable(ref: str) -> bool:
    try:
        load_callable(ref)
    except TickrunError:
        return False
    return True


def run_sweep(
    fn: Callable[..., Any],
    ref: str,
    parent: RunRecord,
    inputs: dict[str, Any],
    *,
    db: RunDB,
    store: ArtifactStore,
    env: RunEnv,
    hyperparams: dict[str, list[Any]],
    strategy: str = "grid",
    selector: str | None = None,
    stop_condition: str | None = None,
    max_iterations: int | None = None,
    parallel: int = 1,
    seed: int | None = None,
    progress: bool = True,
) -> RunObject:
    combos = expand(hyperparams, strategy, max_iterations, seed)
    if selector:
        parse_selector(selector)
    stop = parse_condition(stop_condition) if stop_condition else None
    parent.labels.setdefault("hyper.strategy", strategy)
    tracker = RunTracker(
        db,
        parent,
        flush_interval_s=env.flush_interval_s,
        heartbeat_interval_s=env.heartbeat_interval_s,
    )
    tracker.start()
    str_inputs = {k: getattr(v, "url", str(v)) for k, v in inputs.items()}
    children = [
        parent.model_copy(
            deep=True,
            update={
                "iteration": i,
                "params": {**parent.params, **combo},
                "state": RunState.CREATED,
                "created_at": time.time(),
            },
        )
        for i, combo in enumerate(combos, start=1)
    ]
    use_pool = parallel > 1 and env.db is not None and _loadable(ref)
    if parallel > 1 and not use_pool:
        logger.warning(
            "running iterations one at a time: the handler or the run DB cannot "
            "be opened in a worker process",
            extra={"handler": ref},
        )
    done: list[RunRecord] = []
    arts: dict[int, list[ArtifactRecord]] = {}
    t0 = time.monotonic()

    def finished(rec: RunRecord, a: list[ArtifactRecord]) -> bool:
        done.append(rec)
        arts[rec.iteration] = a
        best = select_best(done, selector)
        line = (
            f"[{len(done)}/{len(children)}] iteration {rec.iteration} {rec.state.value}"
            + (
                f" {_metric(rec, selector)}"
                if rec.state is RunState.COMPLETED
                else f": {rec.error}"
            )
            + (f"  best: iteration {best.iteration}" if best else "")
            + f"  ({time.monotonic() - t0:.1f}s)"
        )
        logger.info(
            "iteration finished",
            extra={"uid": parent.uid, "iteration": rec.iteration, "state": rec.state.value},
        )
        if progress:
            print(line, file=sys.stderr, flush=True)
        return bool(stop and rec.state is RunState.COMPLETED and stop(rec.results))

    try:
        if use_pool:
            _run_pool(children, ref, str_inputs, env, parallel, finished)
        else:
            items = make_inputs(inputs, db, env.s3)
            for child in children:
                rec, a = execute(
                    fn,
                    child,
                    db=db,
                    store=store,
                    inputs=items,
                    flush_interval_s=env.flush_interval_s,
                    heartbeat_interval_s=env.heartbeat_interval_s,
                )
                if finished(rec, a):
                    break
        return _conclude(tracker, store, done, arts, selector, db, env)
    except BaseException as exc:
        state = RunState.ABORTED if isinstance(exc, KeyboardInterrupt) else RunState.ERROR
        tracker.finish(state, f"sweep failed: {type(exc).__name__}: {exc}"[:2000])
        raise


def _metric(rec: RunRecord, selector: str | None) -> str:
    if selector:
        key = parse_selector(selector)[1]
        return f"{key}={rec.results.get(key)}"
    return " ".join(f"{k}={v}" for k, v in list(rec.results.items())[:3])


def _run_pool(
    children: list[RunRecord],
    ref: str,
    inputs: dict[str, str],
    env: RunEnv,
    parallel: int,
    finished: Callable[[RunRecord, list[ArtifactRecord]], bool],
) -> None:
    # spawn, not fork: the parent holds DB connections and a flusher thread.
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(parallel, len(children)), mp_context=ctx) as pool:
        pending: dict[Future[tuple[RunRecord, list[ArtifactRecord]]], RunRecord] = {
            pool.submit(run_task, IterationTask(ref, c, inputs, env)): c for c in children
        }
        while pending:
            ready, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in ready:
                child = pending.pop(fut)
                try:
                    rec, a = fut.result()
                except Exception as exc:  # the worker died or could not record the run
                    msg = exc.message if isinstance(exc, TickrunError) else type(exc).__name__
                    rec = child.model_copy(
                        update={
                            "state": RunState.ERROR,
                            "error": f"iteration failed to run: {msg}",
                            "ended_at": time.time(),
                        }
                    )
                    a = []
                if finished(rec, a):
                    for f in pending:
                        f.cancel()
                    pending = {f: c for f, c in pending.items() if not f.cancelled()}


def _conclude(
    tracker: RunTracker,
    store: ArtifactStore,
    done: list[RunRecord],
    arts: dict[int, list[ArtifactRecord]],
    selector: str | None,
    db: RunDB,
    env: RunEnv,
) -> RunObject:
    done.sort(key=lambda r: r.iteration)
    ctx = RunContext(tracker, store)
    best = select_best(done, selector)
    table = _results_table(done)
    own = [ctx.log_artifact("iteration_results", table, kind="table", format="csv")]
    fig = _plot(done, selector, best)
    if fig is not None:
        own.append(ctx.log_artifact("iteration_plot", fig))
    best_arts: list[ArtifactRecord] = []
    if best is not None:
        tracker.set_results({**best.results, "best_iteration": best.iteration})
        tracker.update(best_iteration=best.iteration)
        for a in arts.get(best.iteration, []):
            # The parent lists the best iteration's artifacts, so store://project/uid/key
            # resolves to the winner.
            copy = a.model_copy(
                update={"iteration": 0, "meta": {**a.meta, "from_iteration": best.iteration}}
            )
            tracker.add_artifact(copy)
            best_arts.append(copy)
        final = tracker.finish(RunState.COMPLETED)
    else:
        failed = [r for r in done if r.state is not RunState.COMPLETED]
        first = failed[0].error if failed else "no iteration ran"
        why = (
            f"no iteration has a numeric {selector!r} result"
            if selector and not failed
            else f"{len(failed)} of {len(done)} iterations failed; first error: {first}"
        )
        final = tracker.finish(RunState.ERROR, why[:2000])
    return RunObject(final, own + best_arts, iterations=done, db=db, s3=env.s3)


def _results_table(done: list[RunRecord]) -> Any:
    import pandas as pd

    rows = []
    for r in done:
        row: dict[str, Any] = {"iteration": r.iteration, "state": r.state.value}
        row.update({f"param.{k}": v for k, v in r.params.items()})
        row.update(
            {
                f"result.{k}": v
                for k, v in r.results.items()
                if isinstance(v, int | float | str | bool) or v is None
            }
        )
        row["error"] = r.error or ""
        rows.append(row)
    return pd.DataFrame(rows)


def _plot(done: list[RunRecord], selector: str | None, best: RunRecord | None) -> Any:
    """Selector metric per iteration, and against each numeric hyperparameter that varied."""
    from matplotlib.figure import Figure

    key = (
        parse_selector(selector)[1]
        if selector
        else next(
            (k for r in done for k, v in r.results.items() if isinstance(v, int | float)), None
        )
    )
    if key is None:
        return None
    ok = [
        r
        for r in done
        if r.state is RunState.COMPLETED and isinstance(r.results.get(key), int | float)
    ]
    varied = [
        k
        for k in (done[0].params if done else {})
        if len({str(r.params.get(k)) for r in done}) > 1
        and all(isinstance(r.params.get(k), int | float) for r in done)
    ][:3]
    fig = Figure(figsize=(4.5 + 3.5 * len(varied), 3.6))
    axes = fig.subplots(1, 1 + len(varied), squeeze=False)[0]
    ax = axes[0]
    colors = [
        "tab:green"
        if best is not None and r.iteration == best.iteration
        else ("tab:red" if r.state is not RunState.COMPLETED else "tab:blue")
        for r in done
    ]
    ys = [
        float(v) if isinstance(v := r.results.get(key), int | float) else float("nan") for r in done
    ]
    ax.scatter(range(len(done)), ys, c=colors, s=40, zorder=3)
    for x, r in enumerate(done):  # failed iterations: a red tick on the axis
        if r.state is not RunState.COMPLETED:
            ax.axvline(x, color="tab:red", alpha=0.3)
    ax.set_xticks(range(len(done)), [str(r.iteration) for r in done])
    ax.set_xlabel("iteration")
    ax.set_ylabel(key)
    ax.grid(alpha=0.3)
    ax.set_title(f"{key} by iteration (green: best, red: failed)", fontsize=9)
    for axp, param in zip(axes[1:], varied, strict=True):
        axp.scatter(
            [float(r.params[param]) for r in ok],
            [float(r.results[key]) for r in ok],
            c=[
                "tab:green" if best is not None and r.iteration == best.iteration else "tab:blue"
                for r in ok
            ],
            s=40,
            zorder=3,
        )
        axp.set_xlabel(param)
        axp.set_ylabel(key)
        axp.grid(alpha=0.3)
        axp.set_title(f"{key} vs {param}", fontsize=9)
    fig.tight_layout()
    return fig
