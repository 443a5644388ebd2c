"""A sweep selects on a validation figure and reports the winner's test figure untouched; says
plainly when it could only select on the figure it reports; deflates the winner's Sharpe ratio by
the number of trials (Bailey & López de Prado 2014)."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest

from tickrun.functions.runs import RunState, SqlRunDB, TrackingSettings, run_function
from tickrun.functions.runs.deflated import (
    deflated_sharpe,
    expected_max_sharpe,
    probabilistic_sharpe,
)

from .sweep_jobs_for_tests import ref


def _phi(z: float) -> float:
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


def test_selects_on_validation_and_reports_the_winners_test_figure(
    settings: TrackingSettings, db: SqlRunDB, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        run = run_function(
            ref("trains"),
            hyperparams={"c": [1.0, 2.0, 3.0]},
            selector="max.auc",
            settings=settings,
            db=db,
            progress=False,
        )
    assert run.state == "completed", run.error
    by_c = {i.params["c"]: i for i in run.iterations}
    # Test auc would pick c=3 (0.8); validation picks c=2, whose test auc is 0.7.
    assert max(by_c, key=lambda c: by_c[c].results["auc"]) == 3.0
    assert run.results["best_iteration"] == by_c[2.0].iteration
    assert run.results["auc"] == pytest.approx(0.7)
    assert run.results["validation_auc"] == pytest.approx(0.8)
    assert run.results["selected_on"] == "validation_auc"
    assert run.results["selection_biased"] is False
    assert run.record.labels["hyper.selected_on"] == "validation_auc"
    assert db.get_run(run.uid).results["selected_on"] == "validation_auc"
    assert "optimistically biased" not in caplog.text

    explicit = run_function(
        ref("trains"),
        hyperparams={"c": [1.0, 2.0, 3.0]},
        selector="max.validation_auc",
        settings=settings,
        db=db,
        progress=False,
    )
    assert explicit.results["best_iteration"] == run.results["best_iteration"]
    assert explicit.results["auc"] == pytest.approx(0.7)
    assert explicit.results["selected_on"] == "validation_auc"


def test_selecting_on_the_reported_figure_is_recorded_and_warned(
    settings: TrackingSettings, db: SqlRunDB, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="tickrun.functions.runs.sweepresult"):
        run = run_function(
            ref("trains"),
            params={"validation": False},
            hyperparams={"c": [1.0, 2.0, 3.0]},
            selector="max.auc",
            settings=settings,
            db=db,
            progress=False,
        )
    assert run.state == "completed", run.error
    assert run.results["auc"] == pytest.approx(0.8)  # the best of 3 on the same data
    assert run.results["selected_on"] == "auc"
    assert run.results["selection_biased"] is True
    assert run.record.labels["hyper.selected_on"] == "auc"
    warned = [r.getMessage() for r in caplog.records if "optimistically biased" in r.getMessage()]
    assert len(warned) == 1
    assert "selected on auc itself" in warned[0] and "validation_auc" in warned[0]
    assert "best of 3 tries" in warned[0]


def test_expected_maximum_and_dsr_against_the_papers_example() -> None:
    # Bailey & López de Prado (2014), section 4's example: N = 100 trials whose annualized
    # Sharpe ratios vary by V = 1/2, the best at 2.5 over T = 1250 daily returns with skew -3
    # and kurtosis 10; the paper gives E[max SR] = 0.1132 (daily) and DSR = 0.9004.
    sr0 = expected_max_sharpe(100, 0.5 / 250)
    assert sr0 == pytest.approx(0.1132, abs=5e-5)
    dsr = probabilistic_sharpe(2.5 / math.sqrt(250), sr0, 1250, skew=-3, kurtosis=10)
    assert dsr == pytest.approx(0.9004, abs=5e-4)


def test_deflated_sharpe_by_hand() -> None:
    # 4 trials with annualized Sharpe 1, 1.5, 2, 2.5 on 252 periods a year; the 2.5 one is
    # selected, 1000 returns, skew -1, kurtosis 5.
    trials = [1.0, 1.5, 2.0, 2.5]
    var = 1.25 / 3 / 252  # sample variance of the trials (mean 1.75), per period
    z1, z2 = 0.6744897501960817, 1.3287219496247633  # Z(1 - 1/4), Z(1 - 1/(4e)) from tables
    gamma = 0.5772156649015329
    sr0 = math.sqrt(var) * ((1 - gamma) * z1 + gamma * z2)
    sr = 2.5 / math.sqrt(252)
    z = (sr - sr0) * math.sqrt(999) / math.sqrt(1 - (-1) * sr + (5 - 1) / 4 * sr**2)
    d = deflated_sharpe(2.5, trials, 1000, skew=-1, kurtosis=5, periods_per_year=252)
    assert d.trials == 4
    assert d.sharpe_benchmark == pytest.approx(sr0 * math.sqrt(252), rel=1e-9)
    assert d.deflated_sharpe == pytest.approx(_phi(z), rel=1e-9)
    assert 0.999 < d.deflated_sharpe < 1
    # More trials of the same spread raise the bar: the same winner is worth less.
    d10 = deflated_sharpe(2.5, trials * 3 + [2.0, 1.5], 1000, -1, 5, 252)
    assert d10.sharpe_benchmark > d.sharpe_benchmark and d10.deflated_sharpe < d.deflated_sharpe
    with pytest.raises(ValueError):
        deflated_sharpe(2.5, [2.5], 1000)


def test_sweep_reports_the_winners_deflated_sharpe(
    settings: TrackingSettings, db: SqlRunDB
) -> None:
    run = run_function(
        ref("ma_backtest"),
        hyperparams={"window": [6, 24, 72, 168]},
        selector="max.sharpe",
        settings=settings,
        db=db,
        progress=False,
    )
    assert run.state == "completed", run.error
    its = [i for i in run.iterations if i.state is RunState.COMPLETED]
    assert len(its) == 4
    best = max(its, key=lambda i: i.results["sharpe"])
    assert run.results["best_iteration"] == best.iteration
    assert run.results["selected_on"] == "sharpe" and run.results["selection_biased"] is True
    # By hand from the iterations' own results.
    ppy = best.results["periods_per_year"]
    per = [i.results["sharpe"] / math.sqrt(ppy) for i in its]
    mean = sum(per) / 4
    var = sum((p - mean) ** 2 for p in per) / 3
    z1, z2 = 0.6744897501960817, 1.3287219496247633  # Z(1 - 1/4), Z(1 - 1/(4e))
    gamma = 0.5772156649015329
    sr0 = math.sqrt(var) * ((1 - gamma) * z1 + gamma * z2)
    sr = best.results["sharpe"] / math.sqrt(ppy)
    g3, g4 = best.results["returns_skew"], best.results["returns_kurtosis"]
    t = best.results["n_periods"]
    z = (sr - sr0) * math.sqrt(t - 1) / math.sqrt(1 - g3 * sr + (g4 - 1) / 4 * sr**2)
    assert run.results["trials"] == 4
    assert run.results["sharpe_benchmark"] == pytest.approx(sr0 * math.sqrt(ppy), rel=1e-9)
    assert run.results["deflated_sharpe"] == pytest.approx(_phi(z), rel=1e-9)
    assert 0 < run.results["deflated_sharpe"] < 1
    # The winner's test figure is what it reported, untouched.
    assert run.results["sharpe"] == best.results["sharpe"]
    assert db.get_run(run.uid).results["deflated_sharpe"] == run.results["deflated_sharpe"]


def test_no_deflated_sharpe_without_sharpe(settings: TrackingSettings, db: SqlRunDB) -> None:
    run = run_function(
        ref("trains"),
        hyperparams={"c": [1.0, 2.0]},
        selector="max.auc",
        settings=settings,
        db=db,
        progress=False,
    )
    assert "deflated_sharpe" not in run.results and "trials" not in run.results


def test_a_sweep_of_auto_trainer_selects_on_its_validation_split(
    settings: TrackingSettings, db: SqlRunDB, tmp_path: Path
) -> None:
    """Contract 4 end to end: auto_trainer 1.1.0 with validation_size > 0 reports validation_auc
    beside its test auc, on the shipped BTCUSDT hourly bars (next hour up or down)."""
    import numpy as np
    import pandas as pd

    from tickrun.hub.sampledata import market_data

    bars = pd.read_csv(market_data())
    bars = bars[(bars.timestamp >= "2023-01-01") & (bars.timestamp < "2023-07-01")]
    logc = np.log(bars["close"].to_numpy())
    ds = pd.DataFrame({"timestamp": bars["timestamp"].to_numpy()})
    for k in (1, 4, 24):
        ds[f"ret_{k}"] = pd.Series(logc).diff(k)
    ds["label"] = (pd.Series(logc).diff().shift(-1) > 0).astype(int)
    path = tmp_path / "ds.csv"
    ds.iloc[30:-1].to_csv(path, index=False)
    run = run_function(
        "hub://auto_trainer:1.1.0",
        inputs={"dataset": str(path)},
        params={"validation_size": 0.2, "plots": False, "scale": True, "label_horizon": 1},
        hyperparams={"CLASS_C": [0.001, 0.1, 10.0]},
        selector="max.auc",
        settings=settings,
        db=db,
        progress=False,
    )
    assert run.state == "completed", run.error
    best = max(run.iterations, key=lambda i: i.results["validation_auc"])
    assert run.results["best_iteration"] == best.iteration
    assert run.results["selected_on"] == "validation_auc"
    assert run.results["auc"] == best.results["auc"]
    assert run.results["auc"] != run.results["validation_auc"]
