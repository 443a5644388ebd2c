"""model_monitor 1.0.0: PSI and KS against hand computations, PnL/hit rate by hand, drift found
on shifted windows of the shipped hourly BTCUSDT features (a later regime; volume features
scaled) and not on random disjoint samples of one period (false alarms counted over 20 draws),
and the job as a tracked run: results, the drift table, PNG plots, a webhook alert delivered to
a real HTTP server on loopback, a failing webhook logged not raised, and a retraining run."""

from __future__ import annotations

import itertools
import json
import math
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tickrun.hub import import_function
from tickrun.hub.sampledata import market_data

mm = import_function("hub://model_monitor:1.0.0").module()
mf = import_function("hub://market_features:1.2").module()


@pytest.fixture(scope="module")
def feats() -> pd.DataFrame:
    bars = pd.read_csv(market_data())
    f = mf.compute_features(bars)
    # the window carries the bar's close, as model_server's signal records do
    return f.assign(close=bars.loc[f.index, "close"].to_numpy())


@pytest.fixture(scope="module")
def years(feats: pd.DataFrame) -> pd.Series:
    return pd.to_datetime(feats["timestamp"], utc=True).dt.year


@pytest.fixture(scope="module")
def names(feats: pd.DataFrame) -> list[str]:
    return mf.feature_columns(feats.drop(columns=["close"]))


def _split(pool: pd.DataFrame, seed: int, n_ref: int = 6000, n_cur: int = 1000) -> tuple[Any, Any]:
    """A random reference and a disjoint random window of the same rows' period."""
    perm = np.random.default_rng(seed).permutation(len(pool))
    return pool.iloc[np.sort(perm[:n_ref])], pool.iloc[np.sort(perm[n_ref : n_ref + n_cur])]


# --- the statistics by hand --------------------------------------------------------------------


def test_psi_matches_hand_computation() -> None:
    # median edge 5.5: reference 5|5, current 1|9
    expected = (0.1 - 0.5) * math.log(0.1 / 0.5) + (0.9 - 0.5) * math.log(0.9 / 0.5)
    assert mm.psi(np.arange(1, 11), np.arange(5, 15), bins=2) == pytest.approx(expected, 1e-12)
    # an empty current bin takes epsilon, not renormalised
    eps = 1e-4
    empty = (eps - 0.5) * math.log(eps / 0.5) + (1.0 - 0.5) * math.log(1.0 / 0.5)
    assert mm.psi([1, 2, 3, 4], [10, 11], bins=2) == pytest.approx(empty, 1e-12)
    assert mm.psi([1, 2, 3, 4], [10, 11], bins=2, epsilon=1e-3) != pytest.approx(empty)
    # ties: quantiles 0, 0, 0.75 → edges {0, 0.75}: bins <=0, (0, .75], >.75 (middle empty in both)
    p, q = [4 / 6, 0.0, 2 / 6], [0.25, 0.0, 0.75]
    tied = sum(
        (max(b, eps) - max(a, eps)) * math.log(max(b, eps) / max(a, eps)) for a, b in zip(p, q)
    )
    assert mm.psi([0, 0, 0, 0, 1, 1], [0, 1, 1, 1], bins=4) == pytest.approx(tied, 1e-12)
    assert mm.psi(np.arange(100), np.arange(100)) == 0.0
    # NaN and inf are not values
    assert mm.psi([1, 2, np.nan, 3, 4], [10, np.inf, 11], bins=2) == pytest.approx(empty, 1e-12)


def _ks_by_hand(a: list[float], b: list[float]) -> float:
    pooled = sorted(a + b)
    return max(
        abs(sum(x <= t for x in a) / len(a) - sum(x <= t for x in b) / len(b)) for t in pooled
    )


def test_ks_matches_hand_statistic_and_exact_permutation_pvalue() -> None:
    a, b = [1.0, 3.0, 5.0, 7.0], [2.0, 4.0, 6.0, 8.0, 9.0, 10.0]
    d = _ks_by_hand(a, b)
    stat, pvalue = mm.ks(a, b)
    assert stat == pytest.approx(d, abs=1e-12)
    # H0's exact distribution: every way to pick which 4 of the 10 ranks are the reference's
    pooled = sorted(a + b)
    ds = []
    for picked in itertools.combinations(range(10), 4):
        ra = [pooled[i] for i in picked]
        rb = [pooled[i] for i in range(10) if i not in picked]
        ds.append(_ks_by_hand(ra, rb))
    exact = sum(x >= d - 1e-12 for x in ds) / len(ds)
    assert pvalue == pytest.approx(exact, rel=1e-9)


def test_bonferroni_level_and_rules() -> None:
    ref = pd.DataFrame({"a": np.arange(200.0), "b": np.arange(200.0)})
    cur = pd.DataFrame({"a": np.arange(200.0) + 150, "b": np.arange(200.0)})
    table = mm.feature_drift(ref, cur, ["a", "b"], ks_alpha=0.01).set_index("feature")
    assert (table["ks_level"] == 0.005).all()
    assert table.loc["a", "drifted"] and not table.loc["b", "drifted"]
    none = mm.feature_drift(ref, cur, ["a", "b"], correction="none")
    assert (none["ks_level"] == 0.01).all()
    # a shift too small for PSI but significant for KS drifts only under "ks"/"any"
    big_ref = pd.DataFrame({"a": np.linspace(0, 1, 20000)})
    big_cur = pd.DataFrame({"a": np.linspace(0.03, 1.03, 20000)})
    row = {
        rule: mm.feature_drift(big_ref, big_cur, ["a"], rule=rule).iloc[0]
        for rule in ("both", "any", "ks", "psi")
    }
    assert row["both"]["psi"] < 0.2 and row["both"]["ks_pvalue"] < 0.01
    assert not row["both"]["drifted"] and not row["psi"]["drifted"]
    assert row["any"]["drifted"] and row["ks"]["drifted"]
    with pytest.raises(ValueError, match="drift_rule"):
        mm.feature_drift(ref, cur, ["a"], rule="sometimes")


def test_hit_rate_and_pnl_by_hand() -> None:
    close = [100.0, 110.0, 99.0, 99.0, 108.9, 120.0]
    times = pd.date_range("2024-01-01", periods=6, freq="h")
    times = times.delete(5).append(pd.DatetimeIndex([times[5] + pd.Timedelta(hours=1)]))
    r = mm.next_returns(close, times)  # the last step skips an hour: no outcome there
    np.testing.assert_allclose(r[:4], [0.1, -0.1, 0.0, 0.1], atol=1e-12)
    assert np.isnan(r[4]) and np.isnan(r[5])
    frame = pd.DataFrame({"prediction": [1, 1, 0, 1, 1, 0]})
    pos = mm.positions(frame)
    res = mm.trading(pos, r, fee_bp=10.0)
    # positions 1, 1, 0, 1 over the known rows: hits +0.1 (hit), -0.1 (miss), flat, +0.1 (hit)
    assert res["hit_rate"] == pytest.approx(2 / 3) and res["active_bars"] == 3
    assert res["pnl_gross"] == pytest.approx(0.1 - 0.1 + 0.1)
    assert res["trades"] == 3 and res["fees"] == pytest.approx(3 * 0.001)
    assert res["pnl_net"] == pytest.approx(0.1 - 0.003)
    short = mm.trading(mm.positions(frame, short=True), r, fee_bp=10.0)
    # short on the flat bar: 0 return; changes 0→1, 1→-1 (2 units), -1→1 (2): 5 units of fees
    assert short["fees"] == pytest.approx(5 * 0.001) and short["active_bars"] == 4
    epoch_ms = (times.astype("int64") // 10**6).to_numpy()
    np.testing.assert_allclose(mm.next_returns(close, epoch_ms), r, equal_nan=True)


# --- real data: a shifted window drifts, an unshifted one does not ---------------------------


def test_later_regime_drifts(feats, years, names, fake_context, frame_item) -> None:
    ref, cur = feats[years == 2018], feats.iloc[-1000:]
    mm.monitor(fake_context, reference=frame_item(ref), current=frame_item(cur), plots=False)
    r = fake_context.results
    table = fake_context.datasets["drift"].set_index("feature")
    assert r["alert"] is True and r["retrain_recommended"] is True
    assert r["features_checked"] == len(names) and set(table.index) == set(names)
    assert "close" not in table.index and "label" not in table.index
    assert r["drifted_count"] >= 2 and r["max_psi"] >= 0.25
    drifted = table[table["drifted"]]
    assert set(r["drifted_features"]) == set(drifted.index)
    assert (drifted["psi"] >= 0.25).all() and (drifted["ks_pvalue"] < 0.01 / len(names)).all()
    # 2018's hourly ranges were far above late 2025's: the bar's range drifts, PSI by hand
    top = r["max_psi_feature"]
    assert r["max_psi"] == pytest.approx(mm.psi(ref[top], cur[top]))
    assert "hl_range" in r["drifted_features"]
    assert cur["hl_range"].mean() < ref["hl_range"].mean()
    # The 72-bar volatility moved as much (PSI), but 1000 values of a series with lag-1
    # autocorrelation ~0.99 are a handful of independent draws: its KS (effective sizes) does
    # not reject, where the i.i.d. KS does.
    vol = table.loc["volatility_72"]
    assert vol["psi"] >= 0.25 and not vol["ks_drift"]
    assert mm.ks(ref["volatility_72"], cur["volatility_72"])[1] < 1e-10
    assert any(msg == "model monitor alert" for msg, _ in fake_context.logger.records)


def test_random_disjoint_windows_of_one_period_raise_no_alarm(feats, years, names) -> None:
    pool = feats[years == 2025]
    alerts, ks_windows, max_psi = 0, 0, 0.0
    draws = 20
    for seed in range(draws):
        ref, cur = _split(pool, seed)
        table = mm.feature_drift(ref, cur, names)
        alerts += bool(table["drifted"].any())
        ks_windows += bool(table["ks_drift"].any())
        max_psi = max(max_psi, float(table["psi"].max()))
    assert alerts == 0
    # Bonferroni holds the family-wise KS error per window at <= 1%: over 20 windows even two
    # with a rejection would be unlikely (P < 2%)
    assert ks_windows <= 2
    assert max_psi < 0.1  # sampling noise of 1000 rows is far below the 0.2 threshold


def test_scaled_volume_features_drift_alone(feats, years, names, fake_context, frame_item) -> None:
    ref, cur = _split(feats[years == 2025], seed=1)
    scaled = ["volume_ratio_6", "volume_ratio_24", "volume_ratio_72"]
    shifted = cur.assign(**{k: cur[k] * 1.5 for k in scaled})
    mm.monitor(fake_context, reference=frame_item(ref), current=frame_item(shifted), plots=False)
    assert sorted(fake_context.results["drifted_features"]) == sorted(scaled)
    assert fake_context.results["alert"] is True
    quiet = type(fake_context)()
    mm.monitor(quiet, reference=frame_item(ref), current=frame_item(cur), plots=False)
    assert quiet.results["drifted_features"] == [] and quiet.results["alert"] is False
    assert quiet.results["max_psi"] < 0.1


# --- the job as a tracked run, alerts ---------------------------------------------------------


class _Hook(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(
            {"content_type": self.headers["Content-Type"], "body": json.loads(body)}
        )
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []
    handler = type("Hook", (_Hook,), {"received": received})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/alerts", received
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def tracked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TICKRUN_HOME", str(tmp_path / "home"))
    for var in ("TICKRUN_ARTIFACT_PATH", "TICKRUN_DB_URL", "TICKRUN_CONTROLLER_URL"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def _scored(feats, years, names) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reference = 2018 with a logistic model's outputs; window = the last 1000 bars scored."""
    ref = feats[years == 2018].reset_index(drop=True)
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(ref[names], ref["label"])
    cur = feats.iloc[-1000:].reset_index(drop=True)
    out = []
    for frame in (ref, cur):
        p = model.predict_proba(frame[names])[:, 1]
        out.append(frame.assign(probability=p, prediction=(p > 0.5).astype(int)))
    return out[0], out[1].drop(columns=["future_return"])


def test_tracked_run_logs_results_plots_and_posts_the_alert(
    tracked: Path, feats, years, names, webhook
) -> None:
    url, received = webhook
    ref, cur = _scored(feats, years, names)
    ref_path, cur_path = tracked / "reference.csv", tracked / "window.csv"
    ref.drop(columns=["probability", "prediction"]).to_csv(ref_path, index=False)
    cur.to_csv(cur_path, index=False)
    preds_path = tracked / "reference_predictions.csv"
    ref[["probability", "prediction"]].to_csv(preds_path, index=False)
    run = import_function("hub://model_monitor:1").run(
        "monitor",
        params={"alert_webhook": url, "fee_bp": 10.0, "min_hit_rate": 0.0},
        inputs={
            "reference": str(ref_path),
            "current": str(cur_path),
            "reference_predictions": str(preds_path),
        },
        progress=False,
    )
    assert run.state == "completed", run.error
    assert run.record.labels["hub.version"] == "1.1.0"  # hub://model_monitor:1 = newest 1.x
    r = run.results
    assert r["alert"] is True and r["drifted_count"] >= 2
    assert r["alert_webhook_delivered"] is True
    assert len(received) == 1 and received[0]["content_type"] == "application/json"
    body = received[0]["body"]
    assert body["type"] == "model_monitor.alert" and body["run"] == run.uid
    assert body["drifted_features"] == r["drifted_features"] and body["max_psi"] == r["max_psi"]
    # prediction drift against the reference predictions, by hand
    assert r["prediction_drift_method"] == "reference_predictions"
    assert r["prediction_psi"] == pytest.approx(mm.psi(ref["probability"], cur["probability"]))
    # live performance from the window's closes, recomputed here with pandas
    nxt = cur["close"].shift(-1) / cur["close"] - 1
    pos = cur["prediction"].astype(float)
    known = nxt.notna()
    active = known & (pos != 0)
    assert r["active_bars"] == int(active.sum())
    assert r["hit_rate"] == pytest.approx(float((nxt[active] > 0).mean()))
    gross = float((pos[known] * nxt[known]).sum())
    turnover = float(pos[known].diff().fillna(pos[known].iloc[0]).abs().sum())
    assert r["pnl_gross"] == pytest.approx(gross)
    assert r["pnl_net"] == pytest.approx(gross - 10.0 / 1e4 * turnover)
    assert r["label_source"] == "label" and 0.0 < r["auc"] < 1.0 and r["log_loss"] > 0
    table = run.artifact("drift").as_df()
    assert set(table["feature"]) == set(names)
    assert list(table.loc[table["drifted"], "feature"]) == r["drifted_features"]
    for key in ("psi-chart", "drift-histograms"):
        assert run.artifact(key).get()[:8] == b"\x89PNG\r\n\x1a\n"


def test_base_rate_prediction_drift_failing_webhook_and_retraining(
    tracked: Path, feats, years, names
) -> None:
    ref, cur = _scored(feats, years, names)
    ref_path, cur_path = tracked / "reference.csv", tracked / "window.csv"
    ref.drop(columns=["probability", "prediction"]).to_csv(ref_path, index=False)
    cur.drop(columns=["label", "prediction"]).to_csv(cur_path, index=False)
    run = import_function("hub://model_monitor:1").run(
        "monitor",
        params={
            "alert_webhook": "http://127.0.0.1:9/unreachable",  # discard port: refused
            "webhook_timeout_s": 2.0,
            "plots": False,
            "retrain": "hub://describe:1#describe",
            "retrain_params": {"plots": False},
            "retrain_inputs": {"table": str(ref_path)},
        },
        inputs={"reference": str(ref_path), "current": str(cur_path)},
        progress=False,
    )
    assert run.state == "completed", run.error
    r = run.results
    assert r["alert"] is True and r["alert_webhook_delivered"] is False
    assert r["alert_webhook_detail"]
    base = float(ref["label"].mean())
    assert r["prediction_drift_method"] == "base_rate"
    assert r["reference_base_rate"] == pytest.approx(base)
    q = float(cur["probability"].mean())
    by_hand = (q - base) * math.log(q / base) + (base - q) * math.log((1 - q) / (1 - base))
    assert r["prediction_psi"] == pytest.approx(by_hand)
    # without a label column the outcome is the market's: the next close's return > 0
    assert r["label_source"] == "next close return > 0"
    assert r["retrain_state"] == "completed" and r["retrain_run"] != run.uid


def test_hit_rate_below_the_floor_alerts_without_drift(
    feats, years, fake_context, frame_item
) -> None:
    ref, cur = _split(feats[years == 2025], seed=2)
    # contiguous closes for the outcomes: the last 500 bars, always long (probability 0.6)
    window = feats.iloc[-500:].assign(probability=0.6)
    up = float((window["close"].shift(-1) > window["close"]).iloc[:-1].mean())
    mm.monitor(
        fake_context,
        reference=frame_item(ref),
        current=frame_item(window),
        min_hit_rate=up + 0.01,
        features="rsi_14",
        plots=False,
    )
    r = fake_context.results
    assert r["features_checked"] == 1 and r["drifted_features"] == []
    assert r["hit_rate"] == pytest.approx(up) and r["trades"] == 1
    assert r["alert"] is True and r["alert_reasons"] == [f"hit rate {up:.3f} < {up + 0.01}"]
