"""The ``optuna`` sweep strategy: Optuna's TPE sampler asks for each iteration's parameters, a
median pruner stops iterations whose intermediate values trail earlier trials'.

It is one sweep like the others (:mod:`.hyper`): one run uid, iterations 1..N (``max_iterations``
trials, 10 by default) recorded as ``created`` from the start, their parameters chosen when they
start, and a parent concluded by :func:`~.sweepresult.conclude` (selection on the validation
figure, the deflated Sharpe ratio), plus two plots of the study: ``optimization_history`` and
``param_importances``.

Ask-and-tell in batches of ``parallel``: the sweep asks ``parallel`` trials, runs them at once
in the worker pool, records each as it ends, and tells the study the batch's results in trial
order once the whole batch has ended. The sampler and the pruner therefore see the same history
whatever order the batch finished in, so a seed reproduces a sweep exactly, even in parallel;
the price is that a batch waits for its slowest trial.

Pruning: the handler calls ``context.report_intermediate(step, value)`` (value in the
selector's direction) and ``context.should_prune()`` (:mod:`.trials`). In a worker process the
report travels over the worker's pipe to this process, which holds the study, and the answer
comes back the same way. A pruned iteration ends ``aborted``, label ``hyper.pruned``, and is
told to the study as pruned. The Kubernetes indexed Job refuses this strategy (400): its pods
have no channel back to the study.

The search space comes from the hyperparameters: a list of values is categorical; a range is
``{"low": 0.01, "high": 1, "log": true}`` (also ``"step"``, and ``"type": "int"|"float"``;
integer bounds give an integer range unless ``"type": "float"``).
"""

from __future__ import annotations

import collections
import functools
import logging
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..artifacts import ArtifactStore
from ..errors import BadRequestError
from .context import RunContext
from .db.base import RunDB
from .execution import RunEnv
from .hyper import DEFAULT_RANDOM_ITERATIONS, parse_condition
from .pool import IterationTask
from .records import ArtifactRecord, RunRecord, RunState
from .runobject import RunObject
from .sweepframe import SweepFrame, new_children, pool_usable
from .sweepresult import VALIDATION, objective, parse_selector
from .tracker import RunTracker
from .trials import reporting

if TYPE_CHECKING:
    from optuna.study import Study
    from optuna.trial import Trial

logger = logging.getLogger(__name__)

STRATEGY = "optuna"
# The median pruner prunes nothing before this many trials completed (Optuna's default).
PRUNER_STARTUP_TRIALS = 5
_RANGE_KEYS = {"low", "high", "log", "step", "type"}


def startup_trials(n_trials: int) -> int:
    """Trials TPE samples at random before it models the history: Optuna's 10 would leave a
    budget of 10 (the default) all random, so a quarter of the budget, between 3 and 10."""
    return min(10, max(3, n_trials // 4))


def _optuna() -> Any:
    try:
        import optuna
    except ImportError as exc:
        raise BadRequestError(
            "strategy optuna needs the optuna package: pip install 'tickrun[ml]'"
        ) from exc
    return optuna


def _num(name: str, field: str, v: Any) -> int | float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise BadRequestError(f"hyperparameter {name!r}: {field} must be a number, not {v!r}")
    return v


def parse_range(name: str, spec: dict[str, Any]) -> Any:
    """``{"low": 0.01, "high": 1, "log": true}`` → an Optuna Float/IntDistribution."""
    dist = _optuna().distributions
    unknown = set(spec) - _RANGE_KEYS
    if unknown or "low" not in spec or "high" not in spec:
        raise BadRequestError(
            f"hyperparameter {name!r}: a range is {{'low': L, 'high': H}} with optional 'log', "
            f"'step', 'type' (got keys {sorted(spec)})"
        )
    low, high = _num(name, "low", spec["low"]), _num(name, "high", spec["high"])
    step = None if spec.get("step") is None else _num(name, "step", spec["step"])
    log = spec.get("log", False)
    kind = spec.get("type")
    if not isinstance(log, bool) or kind not in (None, "int", "float"):
        raise BadRequestError(f"hyperparameter {name!r}: 'log' is true/false, 'type' int/float")
    if low > high:
        raise BadRequestError(f"hyperparameter {name!r}: low {low} is above high {high}")
    if log and (low <= 0 or step is not None):
        raise BadRequestError(f"hyperparameter {name!r}: a log range needs low > 0 and no step")
    if step is not None and step <= 0:
        raise BadRequestError(f"hyperparameter {name!r}: step must be positive")
    ints = all(isinstance(v, int) for v in (low, high, step) if v is not None)
    if kind == "int" or (kind is None and ints):
        if not ints:
            raise BadRequestError(f"hyperparameter {name!r}: an int range needs int bounds")
        return dist.IntDistribution(int(low), int(high), log=log, step=int(step or 1))
    return dist.FloatDistribution(float(low), float(high), log=log, step=step)


def search_space(hyperparams: dict[str, Any]) -> dict[str, Any]:
    """Name → Optuna distribution: a list is categorical, a dict a numeric range."""
    dist = _optuna().distributions
    space: dict[str, Any] = {}
    for name, values in hyperparams.items():
        if isinstance(values, dict):
            space[name] = parse_range(name, values)
        elif isinstance(values, list | tuple) and values:
            bad = [v for v in values if v is not None and not isinstance(v, str | int | float)]
            if bad:
                raise BadRequestError(
                    f"hyperparameter {name!r}: optuna's categorical values are numbers, "
                    f"strings, booleans or null (not {bad[0]!r})"
                )
            space[name] = dist.CategoricalDistribution(list(values))
        else:
            raise BadRequestError(
                f"hyperparameter {name!r} needs a non-empty list of values or a range "
                "{'low': L, 'high': H}"
            )
    if not space:
        raise BadRequestError("strategy optuna needs at least one hyperparameter")
    return space


class Search:
    """The study and the trial behind each iteration."""

    def __init__(
        self,
        selector: str | None,
        space: dict[str, Any],
        seed: int | None,
        width: int,
        n_trials: int = DEFAULT_RANDOM_ITERATIONS,
    ) -> None:
        if not selector:
            raise BadRequestError(
                "strategy optuna needs a selector (max.<result> or min.<result>): the figure "
                "its sampler optimizes"
            )
        op, self.metric = parse_selector(selector)
        optuna = _optuna()
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial is ours
        with warnings.catch_warnings():  # constant_liar is marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = optuna.samplers.TPESampler(
                seed=seed, constant_liar=width > 1, n_startup_trials=startup_trials(n_trials)
            )
        self.study: Study = optuna.create_study(
            direction="maximize" if op == "max" else "minimize",
            sampler=sampler,
            pruner=optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS),
        )
        self.space = space
        self.target = self.metric  # what the study's values are, for the plots
        self.trials: dict[int, Trial] = {}
        self.pruned = 0

    def ask(self, child: RunRecord) -> None:
        """Choose ``child``'s parameters (before it is handed to a worker)."""
        trial = self.study.ask(self.space)
        self.trials[child.iteration] = trial
        child.params = {**child.params, **trial.params}
        child.labels["hyper.trial"] = str(trial.number)

    def report(self, child: RunRecord, step: int, value: float) -> bool:
        """An intermediate value of ``child``; True when the pruner says stop."""
        trial = self.trials.get(child.iteration)
        if trial is None:
            return False
        try:
            trial.report(value, step)
            return bool(trial.should_prune())
        except Exception as exc:  # a bad report never ends the sweep; the iteration goes on
            logger.warning(
                "intermediate value not used",
                extra={"iteration": child.iteration, "step": step, "error": str(exc)},
            )
            return False

    def tell(self, rec: RunRecord) -> None:
        state = _optuna().trial.TrialState
        trial = self.trials.pop(rec.iteration, None)
        if trial is None:
            return
        value = objective(rec.results, self.metric) if rec.state is RunState.COMPLETED else None
        if value is not None:
            if value != rec.results.get(self.metric):  # judged by its validation figure
                self.target = VALIDATION + self.metric
            self.study.tell(trial, value)
        elif rec.state is RunState.ABORTED and rec.labels.get("hyper.pruned") == "true":
            self.pruned += 1
            self.study.tell(trial, state=state.PRUNED)
        else:
            if rec.state is RunState.COMPLETED:
                logger.warning(
                    "iteration reports no numeric %s: told to the study as failed",
                    self.metric,
                    extra={"uid": rec.uid, "iteration": rec.iteration},
                )
            self.study.tell(trial, state=state.FAIL)


def run_optuna(
    fn: Callable[..., Any],
    ref: str,
    parent: RunRecord,
    inputs: dict[str, Any],
    *,
    db: RunDB,
    store: ArtifactStore,
    env: RunEnv,
    hyperparams: dict[str, Any],
    strategy: str = STRATEGY,
    selector: str | None = None,
    stop_condition: str | None = None,
    max_iterations: int | None = None,
    parallel: int = 1,
    seed: int | None = None,
    progress: bool = True,
) -> RunObject:
    """``run_sweep``'s signature; ``max_iterations`` is the number of trials."""
    if strategy != STRATEGY:
        raise BadRequestError(f"run_optuna runs strategy {STRATEGY}, not {strategy}")
    space = search_space(hyperparams)
    use_pool = pool_usable(parallel, env, ref)
    n = max_iterations or DEFAULT_RANDOM_ITERATIONS
    search = Search(selector, space, seed, parallel if use_pool else 1, n)
    stop = parse_condition(stop_condition) if stop_condition else None
    parent.labels.setdefault("hyper.strategy", STRATEGY)
    if seed is not None:
        parent.labels.setdefault("hyper.seed", str(seed))
    frame = SweepFrame(
        parent,
        new_children(parent, [{} for _ in range(n)]),  # parameters: asked at the start
        inputs,
        db=db,
        store=store,
        env=env,
        ref=ref,
        selector=selector,
        stop=stop,
        parallel=parallel,
        use_pool=use_pool,
        progress=progress,
        unit="trials",
        log_each=False,
    )

    def own(tracker: RunTracker) -> list[ArtifactRecord]:
        tracker.set_results({"pruned_iterations": search.pruned})
        return study_plots(search.study, RunContext(tracker, store), search.target)

    with frame.guard():
        if use_pool:
            _run_batches(frame, search, ref, parallel)
        else:
            items = frame.local_inputs()
            for child in frame.children:
                search.ask(child)
                with reporting(functools.partial(search.report, child)):
                    rec, a = frame.execute(fn, child, items)
                search.tell(rec)
                if frame.finished(rec, a):
                    break
        return frame.conclude(own)


def _run_batches(frame: SweepFrame, search: Search, ref: str, parallel: int) -> None:
    inputs = frame.worker_inputs()
    waiting = collections.deque(frame.children)
    stopped = False
    with frame.pool() as pool:
        while waiting and not stopped:
            batch = [waiting.popleft() for _ in range(min(parallel, len(waiting)))]
            for child in batch:
                search.ask(child)
                frame.queued.take(child)
                pool.submit(IterationTask(ref, child, inputs, frame.env, reports=True))
            ended: list[RunRecord] = []
            while pool.busy:
                for child, outcome in pool.wait(on_report=search.report):
                    rec, a = frame.ended(child, outcome)
                    ended.append(rec)
                    stopped = frame.finished(rec, a) or stopped
            for rec in sorted(ended, key=lambda r: r.iteration):  # the same history every time
                search.tell(rec)


def study_plots(study: Study, ctx: RunContext, target: str = "objective") -> list[ArtifactRecord]:
    """``optimization_history`` and ``param_importances`` (Optuna's matplotlib plots) as PNG
    artifacts of the parent; a plot the study cannot make yet is left out with a warning."""
    import matplotlib
    import matplotlib.pyplot as plt

    optuna = _optuna()
    vis = optuna.visualization.matplotlib
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    varied = {
        k for t in complete for k in t.params if len({str(u.params.get(k)) for u in complete}) > 1
    }
    out: list[ArtifactRecord] = []
    plots: list[tuple[str, Callable[..., Any]]] = []
    if complete:
        plots.append(("optimization_history", vis.plot_optimization_history))
    if len(complete) >= 2 and varied:  # importance needs parameters that varied
        plots.append(("param_importances", vis.plot_param_importances))
    if len(plots) < 2:
        logger.warning(
            "study plots left out: %d trials completed",
            len(complete),
            extra={"uid": ctx.uid, "plots": [k for k, _ in plots]},
        )
    for key, plot in plots:
        # Optuna sets a pyplot style globally; keep it to these figures.
        with matplotlib.rc_context(), warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            warnings.simplefilter("ignore", UserWarning)  # legend chatter
            try:
                ax = plot(study, target_name=target)
            except Exception as exc:  # a plot never fails the sweep
                logger.warning("no %s plot: %s", key, exc, extra={"uid": ctx.uid})
                continue
            fig = ax.figure
            try:
                out.append(ctx.log_artifact(key, fig))
            finally:
                plt.close(fig)
    return out
