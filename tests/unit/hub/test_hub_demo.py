"""The hub part of `make demo`: it runs end to end on the shipped bars (smaller here), and the
sentence it ends with follows from its numbers, not from a script."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tickrun.hub import demo


def _result(**over: Any) -> dict[str, Any]:
    base = {
        "oos_auc": 0.545,
        "shuffled_auc": 0.49,
        "null_p_value": 0.01,
        "null_percentile": 99.0,
        "gross_return": 4.0,
        "net_return": -0.98,
        "break_even_fee_bp": 2.9,
        "bh_cumulative_return": 1.13,
        "sharpe": -6.2,
        "sharpe_se": 0.7,
        "psr": 0.0,
    }
    return {**base, **over}


def test_the_verdict_follows_the_numbers() -> None:
    naive, aware = _result(), _result(net_return=-0.25, break_even_fee_bp=5.5)
    text = demo.verdict(naive, aware)
    assert text.startswith("Before costs the model has a small real edge (out-of-sample AUC 0.545")
    assert "timing better than 99% of random signals with the same trades" in text
    best = demo.verdict(_result(null_percentile=100.0), aware)
    assert "timing better than all random signals" in best
    assert "but it does not survive 10 bp fees: naive nets -98% (break-even 2.9 bp" in text
    assert "cost-aware -25% (break-even 5.5 bp), while buy-and-hold made +113%" in text
    # a positive net below buy-and-hold, not significant
    aware = _result(net_return=0.06, sharpe=0.3, sharpe_se=0.74, psr=0.66)
    text = demo.verdict(naive, aware)
    assert "only the cost-aware strategy stays positive after 10 bp fees, at +6%" in text
    assert "not distinguishable from zero" in text and "below buy-and-hold's +113%" in text
    # beating buy-and-hold with a Sharpe that is clearly above 0
    aware = _result(net_return=2.0, sharpe=2.5, sharpe_se=0.7, psr=0.9998)
    text = demo.verdict(naive, aware)
    assert "survives 10 bp fees: the cost-aware strategy nets +200% (Sharpe 2.50 ± 0.70)" in text
    assert "not distinguishable" not in text
    # timing no better than random signals: no edge claimed
    noise = _result(null_p_value=0.4, null_percentile=60.0, oos_auc=0.501)
    text = demo.verdict(noise, _result(net_return=-0.5))
    assert text.startswith("The model shows no reliable edge even before costs (AUC 0.501")
    assert "and it does not survive" in text


@pytest.fixture
def tracked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TICKRUN_HOME", str(tmp_path / "home"))
    for var in ("TICKRUN_ARTIFACT_PATH", "TICKRUN_DB_URL", "TICKRUN_CONTROLLER_URL"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def test_the_demo_end_to_end_on_the_last_6000_bars(
    tracked: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = demo.run_demo(rows=6000, model_class="sklearn.linear_model.LogisticRegression", folds=3)
    printed = capsys.readouterr().out
    naive, aware = out["backtest"], out["cost_aware"]
    assert naive["fee_0bp_net_return"] == pytest.approx(naive["gross_return"])
    assert naive["fee_10bp_net_return"] == pytest.approx(naive["net_return"])
    assert naive["trades"] > aware["trades"]  # the band and the holding period trade less
    assert 0.3 < naive["oos_auc"] < 0.7 and 0 <= naive["null_percentile"] <= 100
    assert out["verdict"] == demo.verdict(naive, aware)
    assert f"=> {out['verdict']}" in printed
    assert Path(out["plot"]).read_bytes()[:4] == b"\x89PNG"
    assert f"plots: {out['plot']}" in printed
    for needle in ("return @ 0 bp/side (gross)", "random signals, same trades", "shuffled-label"):
        assert needle in printed
    assert f"{naive['gross_return']:+.1%}" in printed
    assert out["prediction"] in ([0], [1])
