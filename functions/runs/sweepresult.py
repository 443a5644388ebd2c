"""How a sweep ends: the best iteration by the selector, and the parent's record of the sweep.

Shared by the local pool (:mod:`.hyper`) and the indexed Kubernetes Job (:mod:`.indexed`): the
parent run gets the best iteration's results and artifacts, an ``iteration_results`` table and an
``iteration_plot``.
"""

from __future__ import annotations

from typing import Any

from ..artifacts import ArtifactStore
from ..errors import BadRequestError
from .context import RunContext
from .db.base import RunDB
from .execution import RunEnv
from .records import ArtifactRecord, RunRecord, RunState
from .runobject import RunObject
from .tracker import RunTracker


def parse_selector(selector: str) -> tuple[str, str]:
    """``"max.accuracy"`` → ("max", "accuracy")."""
    op, _, key = selector.partition(".")
    if op not in ("max", "min") or not key:
        raise BadRequestError(f"selector {selector!r} must be max.<result> or min.<result>")
    return op, key


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


def conclude(
    tracker: RunTracker,
    store: ArtifactStore,
    done: list[RunRecord],
    arts: dict[int, list[ArtifactRecord]],
    selector: str | None,
    db: RunDB,
    env: RunEnv,
) -> RunObject:
    """End the sweep's parent: the best iteration's results and artifacts, the iterations'
    table and plot. ``done``: the iterations that ran; ``arts``: their artifacts by iteration."""
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
    return RunObject(
        final, own + best_arts, iterations=done, db=db, s3=env.s3, roots=env.artifact_roots
    )


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
