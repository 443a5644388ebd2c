"""Training overhead: ``hub://auto_trainer:1.3`` with its defaults (a tracked run: targets
dropped, the time series split in time and purged, fit, metrics beside baselines, the test set
and the model logged) vs the plain scikit-learn / XGBoost script a user would otherwise write
(read, drop the targets, the same purged time split, fit, the same metrics and baselines), on the
same features file, in the same run: each round runs both, the first of the pair alternating.

The goal is judged on the median of the rounds' ratios (each round's pair ran back to back), as
``bench/http`` and ``bench/kafka`` judge theirs: the same fit's time swings by a fifth between
rounds on a shared 2-core host, on either side, and a ratio of the two sides' medians can pair
one side's slow round with the other's fast one. The ratio of the medians is printed beside it.

Plots are off for the headline figure (the plain script draws none); the cost of auto_trainer's
four PNGs is printed separately.

    python -m bench.train [--rows 72000] [--rounds 5] [--trees 100] [--uri hub://auto_trainer:1.1]
        [--omp-wait-policy passive|active|default]

Both sides fit in this one process, so they share its OpenMP runtime (XGBoost's libgomp,
loaded once): ``OMP_WAIT_POLICY`` is set for the process before the first fit (PASSIVE unless
told otherwise or already set in the environment) and printed. With libgomp's default policy
an idle OpenMP thread spins at each barrier, and on a 2-core host busy with other processes the
spinning thread burns the CPU its partner needs: the same XGBoost fit took 1.0 to 10.7 s (CPU
1.25 to 6.8 s) at load 4, on either side, against 0.95 to 1.15 s (CPU 0.70 s) with PASSIVE.
That swing is the host, not either side's overhead, and it drowned the ratio.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from bench.rounds import in_turn
from tickrun.hub.sampledata import market_data

DATA = market_data()
HUB_URI = "hub://auto_trainer:1.3"
GOAL = 1.1  # issue 17: auto_trainer <= 1.1x the plain script, each model
MODELS = {
    "logistic": ("sklearn.linear_model.LogisticRegression", {"scale": True}),
    "xgboost": ("xgboost.XGBClassifier", {}),
}


class Row(NamedTuple):
    """One model's figures: medians over the rounds."""

    label: str
    hub_s: float
    plain_s: float
    plots_s: float  # one auto_trainer run with its plots
    hub_over_s: float  # time outside the fit
    plain_over_s: float
    cpu_ratio: float  # median of the rounds' CPU ratios
    ratio: float  # median of the rounds' wall ratios: the judged figure


def plain(features_path: Path, model_class: str, trees: int) -> dict[str, float]:
    """What a user writes by hand: the same split, metrics and baselines as auto_trainer."""
    from sklearn import metrics as m

    df = pd.read_parquet(features_path)
    x = df.drop(columns=["label", "future_return", "timestamp"])
    y = df["label"].to_numpy()
    # last 20% of rows to test, one bar purged before them (the label looks one bar ahead)
    cut = len(x) - round(len(x) * 0.2)
    x_train, x_test, y_train, y_test = x.iloc[: cut - 1], x.iloc[cut:], y[: cut - 1], y[cut:]
    if model_class.startswith("xgboost"):
        from xgboost import XGBClassifier

        model: Any = XGBClassifier(n_estimators=trees, max_depth=4)
    else:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        model = make_pipeline(StandardScaler(), LogisticRegression())
    model.fit(x_train, y_train)
    pred = model.predict(x_test)
    proba = model.predict_proba(x_test)
    rate = y_train.mean()
    return {
        "accuracy": m.accuracy_score(y_test, pred),
        "f1_score": m.f1_score(y_test, pred),
        "precision_score": m.precision_score(y_test, pred),
        "recall_score": m.recall_score(y_test, pred),
        "auc": m.roc_auc_score(y_test, proba[:, 1]),
        "log_loss": m.log_loss(y_test, proba),
        "base_rate": y_test.mean(),
        "majority_accuracy": (y_test == int(rate >= 0.5)).mean(),
        "baseline_log_loss": m.log_loss(y_test, np.tile([1.0 - rate, rate], (len(y_test), 1))),
    }


def hub_run(
    features_path: Path,
    model_class: str,
    extra: dict[str, Any],
    trees: int,
    plots: bool,
    uri: str = HUB_URI,
) -> dict[str, float]:
    import tickrun

    # the defaults: no drop_columns, no split parameter (auto: time-ordered, purged)
    params: dict[str, Any] = {"model_class": model_class, "plots": plots, **extra}
    if model_class.startswith("xgboost"):
        params.update(CLASS_n_estimators=trees, CLASS_max_depth=4)
    run = tickrun.import_function(uri).run(
        "train", params=params, inputs={"dataset": str(features_path)}, progress=False
    )
    run.raise_for_state()
    if run.results["split"] != "time" or run.results["purge_bars"] != 1:
        raise SystemExit(f"unexpected split: {run.results}")
    return dict(run.results)


def timed(fn: Any, *args: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


FIT_SECONDS: list[float] = []
FIT_CPU: list[float] = []


def time_fits() -> None:
    """Time every fit of the two estimators both sides use (XGBClassifier, and the scaler +
    LogisticRegression pipeline), wherever it is called from: the fit's own time is the same
    work on both sides, and on a shared machine it swings most; what is left is the overhead."""
    from sklearn.pipeline import Pipeline
    from xgboost import XGBClassifier

    for cls in (XGBClassifier, Pipeline):
        real = cls.fit

        def fit(self: Any, *args: Any, _real: Any = real, **kwargs: Any) -> Any:
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                return _real(self, *args, **kwargs)
            finally:
                FIT_SECONDS.append(time.perf_counter() - t0)
                FIT_CPU.append(time.process_time() - c0)

        cls.fit = fit  # type: ignore[method-assign]


def timed_with_fit(fn: Any, *args: Any) -> tuple[float, float, float, float, Any]:
    """(wall time, of which in fit, CPU time of the process's threads, of which in fit,
    result). CPU time does not grow with the host's load as wall time does."""
    FIT_SECONDS.clear()
    FIT_CPU.clear()
    c0 = time.process_time()
    total, out = timed(fn, *args)
    return total, sum(FIT_SECONDS), time.process_time() - c0, sum(FIT_CPU), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=72_000, help="hourly bars to use")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--trees", type=int, default=100)
    parser.add_argument("--uri", default=HUB_URI, help="the auto_trainer version to measure")
    parser.add_argument(
        "--omp-wait-policy",
        default="passive",
        choices=["passive", "active", "default"],
        help="OMP_WAIT_POLICY for both sides' fits ('default': leave libgomp's; an "
        "OMP_WAIT_POLICY already in the environment wins)",
    )
    args = parser.parse_args()
    if args.omp_wait_policy != "default":
        # Read once, when libgomp loads (the first xgboost import, below): set it before.
        os.environ.setdefault("OMP_WAIT_POLICY", args.omp_wait_policy.upper())
    omp_policy = os.environ.get("OMP_WAIT_POLICY", "libgomp's default")

    workdir = Path(tempfile.mkdtemp(prefix="bench-train-"))
    os.environ["TICKRUN_HOME"] = str(workdir / "home")
    for var in ("TICKRUN_ARTIFACT_PATH", "TICKRUN_DB_URL", "TICKRUN_CONTROLLER_URL"):
        os.environ.pop(var, None)
    import tickrun

    mf = tickrun.import_function("hub://market_features").module()
    features = mf.compute_features(pd.read_csv(DATA).iloc[-args.rows :])
    features_path = workdir / "features.parquet"
    features.to_parquet(features_path)
    print(
        f"features: {len(features):,} rows x {len(mf.feature_columns(features))} features",
        flush=True,
    )

    time_fits()
    rows: list[Row] = []
    for label, (model_class, extra) in MODELS.items():
        hub_s: list[float] = []
        plain_s: list[float] = []
        hub_over: list[float] = []
        plain_over: list[float] = []
        hub_cpu: list[float] = []
        plain_cpu: list[float] = []
        # one untimed warm-up each: imports, the run DB's schema
        hub_run(features_path, model_class, extra, args.trees, False, args.uri)
        plain(features_path, model_class, args.trees)
        sides = {
            "hub": (hub_run, features_path, model_class, extra, args.trees, False, args.uri),
            "plain": (plain, features_path, model_class, args.trees),
        }
        for r in range(args.rounds):
            got = {side: timed_with_fit(*sides[side]) for side in in_turn(r, "hub", "plain")}
            t_hub, fit_hub, cpu_hub, fit_cpu_hub, hub_metrics = got["hub"]
            t_plain, fit_plain, cpu_plain, fit_cpu_plain, plain_metrics = got["plain"]
            hub_s.append(t_hub)
            plain_s.append(t_plain)
            hub_over.append(t_hub - fit_hub)
            plain_over.append(t_plain - fit_plain)
            hub_cpu.append(cpu_hub)
            plain_cpu.append(cpu_plain)
            same = all(abs(hub_metrics[k] - v) < 1e-9 for k, v in plain_metrics.items())
            print(
                f"{label} round {r + 1}/{args.rounds}: auto_trainer {t_hub:.2f}s (fit "
                f"{fit_hub:.2f}s), plain {t_plain:.2f}s (fit {fit_plain:.2f}s), ratio "
                f"{t_hub / t_plain:.2f}x; CPU {cpu_hub:.2f}s (fit {fit_cpu_hub:.2f}s) vs "
                f"{cpu_plain:.2f}s (fit {fit_cpu_plain:.2f}s), {cpu_hub / cpu_plain:.2f}x; "
                f"same metrics: {same}",
                flush=True,
            )
            if not same:
                raise SystemExit(f"metrics differ: {hub_metrics} vs {plain_metrics}")
        t_plots, _ = timed(hub_run, features_path, model_class, extra, args.trees, True, args.uri)
        rows.append(
            Row(
                label,
                statistics.median(hub_s),
                statistics.median(plain_s),
                t_plots,
                statistics.median(hub_over),
                statistics.median(plain_over),
                statistics.median(h / p for h, p in zip(hub_cpu, plain_cpu, strict=True)),
                statistics.median(h / p for h, p in zip(hub_s, plain_s, strict=True)),
            )
        )

    print()
    print(
        f"bench/train  {args.uri} defaults: {len(features):,} rows, time-ordered 80/20 split "
        "purged by 1 bar, "
        f"medians of {args.rounds} (cores={os.cpu_count()}, OMP_WAIT_POLICY={omp_policy}, "
        f"load {os.getloadavg()[0]:.1f})"
    )
    print(
        f"{'model':<10}{'auto_trainer s':>16}{'plain s (same run)':>20}{'ratio':>8}"
        f"{'of medians':>12}{'goal':>8}{'with plots s':>15}"
    )
    for row in rows:
        met = "met" if row.ratio <= GOAL else "NOT met"
        print(
            f"{row.label:<10}{row.hub_s:>16.2f}{row.plain_s:>20.2f}{row.ratio:>7.2f}x"
            f"{row.hub_s / row.plain_s:>11.2f}x{'<=' + str(GOAL) + 'x':>8} {met:<8}"
            f"{row.plots_s:>10.2f}"
        )
    print("ratio: the median of the rounds' ratios (each round's pair back to back), judged")
    print("time outside the estimator's fit (medians; the same fit on both sides):")
    for row in rows:
        print(
            f"  {row.label:<10} auto_trainer {row.hub_over_s:.2f}s, plain "
            f"{row.plain_over_s:.2f}s: auto_trainer's overhead "
            f"{row.hub_over_s - row.plain_over_s:+.2f}s"
        )
    print("CPU time, auto_trainer / plain (median of the rounds' ratios; load-independent):")
    for row in rows:
        print(f"  {row.label:<10} {row.cpu_ratio:.2f}x")
    worst = max(row.ratio for row in rows)
    print(
        f"goal: auto_trainer <= {GOAL}x plain for each model "
        f"({'met' if worst <= GOAL else 'NOT met'}; worst {worst:.2f}x)"
    )
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
