"""How a sweep ends: the best iteration by the selector, and the parent's record of the sweep.

Shared by the local pool (:mod:`.hyper`), the Optuna strategy (:mod:`.optunasweep`) and the
indexed Kubernetes Job (:mod:`.indexed`): the parent run gets the best iteration's results and
artifacts, an ``iteration_results`` table and an ``iteration_plot``.

Selection never grades its own homework when it can avoid it: ``max.auc`` selects on
``validation_auc`` when the iterations report it, and the parent reports the winner's ``auc``
(its test figure) untouched. Without a validation counterpart the selection is made on ``auc``
itself, and the parent says so (``selection_biased``, a warning): the best of N on the same data
is optimistic. When the iterations report ``sharpe`` (with ``periods_per_year``, ``n_periods``,
``returns_skew``, ``returns_kurtosis``), the parent also reports the winner's deflated Sharpe
ratio (:mod:`.deflated`) against the best Sharpe N trials would show by luck.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, TypeGuard

from ..artifacts import ArtifactStore
from ..errors import BadRequestError
from .context import RunContext
from .db.base import RunDB
from .deflated import deflated_sharpe
from .execution import RunEnv
from .records import ArtifactRecord, RunRecord, RunState
from .runobject import RunObject
from .tracker import RunTracker

logger = logging.getLogger(__name__)

VALIDATION = "validation_"


def parse_selector(selector: str) -> tuple[str, str]:
    """``"max.accuracy"`` → ("max", "accuracy")."""
    op, _, key = selector.partition(".")
    if op not in ("max", "min") or not key:
        raise BadRequestError(f"selector {selector!r} must be max.<result> or min.<result>")
    return op, key


@dataclass(frozen=True)
class Selection:
    """What a selector selects on, given what the iterations report."""

    op: str  # max or min
    metric: str  # the selector's metric (auc)
    key: str  # the result compared: validation_auc when reported, else auc itself
    held_out: bool  # key is a validation figure: the winner's test ``metric`` is unbiased

    @property
    def biased(self) -> bool:
        return not self.held_out


def _number(v: Any) -> TypeGuard[int | float]:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def selection(children: list[RunRecord], selector: str) -> Selection:
    """``max.auc`` selects on ``validation_auc`` once any completed iteration reports it."""
    op, metric = parse_selector(selector)
    if metric.startswith(VALIDATION):
        return Selection(op, metric, metric, True)
    held_out = VALIDATION + metric
    if any(c.state is RunState.COMPLETED and _number(c.results.get(held_out)) for c in children):
        return Selection(op, metric, held_out, True)
    return Selection(op, metric, metric, False)


def objective(results: dict[str, Any], metric: str) -> float | None:
    """The figure one iteration is judged by: ``validation_<metric>`` when it has one."""
    if not metric.startswith(VALIDATION) and _number(results.get(VALIDATION + metric)):
        return float(results[VALIDATION + metric])
    value = results.get(metric)
    return float(value) if _number(value) else None


def select_best(children: list[RunRecord], selector: str | None) -> RunRecord | None:
    done = [c for c in children if c.state is RunState.COMPLETED]
    if not done:
        return None
    if not selector:
        return done[0]
    sel = selection(done, selector)
    op, key = sel.op, sel.key
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
    own: list[ArtifactRecord] | None = None,
) -> RunObject:
    """End the sweep's parent: the best iteration's results and artifacts, the iterations'
    table and plot. ``done``: the iterations that ran; ``arts``: their artifacts by iteration;
    ``own``: artifacts the strategy already logged on the parent (Optuna's plots)."""
    done.sort(key=lambda r: r.iteration)
    ctx = RunContext(tracker, store)
    best = select_best(done, selector)
    table = _results_table(done)
    own = [*(own or []), ctx.log_artifact("iteration_results", table, kind="table", format="csv")]
    fig = _plot(done, selector, best)
    if fig is not None:
        own.append(ctx.log_artifact("iteration_plot", fig))
    best_arts: list[ArtifactRecord] = []
    if best is not None:
        results = {**best.results, "best_iteration": best.iteration}
        if selector:
            results.update(_selected_on(done, selection(done, selector), best, tracker))
        results.update(sweep_deflated_sharpe(done, best))
        tracker.set_results(results)
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


def _selected_on(
    done: list[RunRecord], sel: Selection, best: RunRecord, tracker: RunTracker
) -> dict[str, Any]:
    tracker.set_label("hyper.selected_on", sel.key)
    if sel.held_out:
        return {"selected_on": sel.key, "selection_biased": False}
    ran = sum(r.state is RunState.COMPLETED for r in done)
    logger.warning(
        "the sweep selected on %s itself, the figure it reports: no iteration reports %s%s, "
        "so the winner's %s = %s is optimistically biased (the best of %d tries on the same "
        "data, not what the winner will do on new data). Have the iterations report %s%s "
        "(e.g. auto_trainer with validation_size > 0) to select on it and keep %s untouched.",
        sel.key,
        VALIDATION,
        sel.metric,
        sel.metric,
        best.results.get(sel.metric),
        ran,
        VALIDATION,
        sel.metric,
        sel.metric,
        extra={"uid": best.uid, "selected_on": sel.key},
    )
    return {"selected_on": sel.key, "selection_biased": True}


def sweep_deflated_sharpe(done: list[RunRecord], best: RunRecord) -> dict[str, Any]:
    """``deflated_sharpe``, ``sharpe_benchmark``, ``trials`` of the winner, when the completed
    iterations report ``sharpe`` (backtest 1.2: with ``periods_per_year``, ``n_periods``,
    ``returns_skew``, ``returns_kurtosis``); empty otherwise."""
    trials = [r for r in done if r.state is RunState.COMPLETED and _number(r.results.get("sharpe"))]
    r = best.results
    if best not in trials or len(trials) < 2:
        return {}
    if not (_number(r.get("n_periods")) and _number(r.get("periods_per_year"))):
        logger.warning(
            "no deflated Sharpe ratio: the winner reports sharpe without n_periods and "
            "periods_per_year",
            extra={"uid": best.uid},
        )
        return {}
    skew = float(r["returns_skew"]) if _number(r.get("returns_skew")) else 0.0
    kurt = float(r["returns_kurtosis"]) if _number(r.get("returns_kurtosis")) else 3.0
    try:
        d = deflated_sharpe(
            float(r["sharpe"]),
            [float(t.results["sharpe"]) for t in trials],
            int(r["n_periods"]),
            skew,
            kurt,
            float(r["periods_per_year"]),
        )
    except ValueError as exc:
        logger.warning("no deflated Sharpe ratio: %s", exc, extra={"uid": best.uid})
        return {}
    return {
        "deflated_sharpe": d.deflated_sharpe,
        "sharpe_benchmark": d.sharpe_benchmark,
        "trials": d.trials,
    }


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
        selection(done, selector).key
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
    ax.set_title(f"{key} by iteration (green: best, red: failed or pruned)", fontsize=9)
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
