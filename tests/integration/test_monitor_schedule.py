"""hub://model_monitor on a schedule in a real controller process: two model_server 1.3
replicas deployed locally with MONITOR_DIR get real /invocations requests (later BTCUSDT hourly
features from the shipped data; for one of them the volume features scaled x1.5); a per-second
cron (every 3 s) runs the monitor on each directory as tracked jobs (subprocess runner). Each
firing is a run labelled with its schedule, logs the drift table and the PSI chart; the
unshifted window raises no alert, the shifted one posts the alert to a webhook on loopback and
starts the retraining run."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import joblib
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import tickrun
from tests.integration.test_controller_harness import (
    ControllerProc,
    tracking_controller,
    wait_for,
)
from tickrun.functions.runs.db import SqlRunDB
from tickrun.functions.runs.records import RunRecord
from tickrun.hub import import_function
from tickrun.hub.sampledata import market_data

pytestmark = pytest.mark.slow

VOLUME = ["volume_ratio_6", "volume_ratio_24", "volume_ratio_72"]


class _Hook(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []
    server = HTTPServer(("127.0.0.1", 0), type("Hook", (_Hook,), {"received": received}))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/alerts", received
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def ctl(tmp_path: Path) -> Iterator[ControllerProc]:
    with tracking_controller(tmp_path) as proc:
        yield proc


def _post(url: str, body: Any) -> Any:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def _records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, dict[str, Path], list[str]]:
    """The reference CSV and, per case, the MONITOR_DIR a locally deployed model_server 1.2
    filled from real requests; the model's features."""
    monkeypatch.setenv("TICKRUN_HOME", str(tmp_path / "local-home"))
    for var in ("TICKRUN_DB_URL", "TICKRUN_CONTROLLER_URL", "TICKRUN_ARTIFACT_PATH"):
        monkeypatch.delenv(var, raising=False)
    mf = import_function("hub://market_features:1.2").module()
    bars = pd.read_csv(market_data())
    feats = mf.compute_features(bars)
    names = mf.feature_columns(feats)
    t = pd.to_datetime(feats["timestamp"], utc=True)
    ref = feats[(t >= "2025-01-01") & (t < "2025-07-01")]
    window = feats[t >= "2025-07-01"].iloc[:720]
    ref_path = tmp_path / "reference.csv"
    ref.to_csv(ref_path, index=False)
    model_path = tmp_path / "model.joblib"
    model = make_pipeline(StandardScaler(), LogisticRegression())
    joblib.dump(model.fit(ref[names], ref["label"]), model_path)
    fn = tickrun.import_function("hub://model_server:1.3")
    dirs: dict[str, Path] = {}
    for case, frame in (
        ("plain", window),
        ("shifted", window.assign(**{c: window[c] * 1.5 for c in VOLUME})),
    ):
        dirs[case] = tmp_path / f"predictions-{case}"
        server = fn.deploy(
            env={"MODEL_URI": str(model_path), "MONITOR_DIR": str(dirs[case])},
            directory=tmp_path / f"fn-{case}",
            controller=False,
        )
        try:
            requests = 0
            for start in range(0, len(frame), 24):  # a day of bars a request
                rows = frame[names].iloc[start : start + 24].to_numpy().tolist()
                body = {"dataframe_split": {"columns": names, "data": rows}}
                assert len(_post(f"{server.url}/invocations", body)["predictions"]) == len(rows)
                requests += 1
            wait_for(  # 1.3 counts requests written (a line each)
                lambda s=server, n=requests: _stats(s.url)["recorded"] == n, 30, "records written"
            )
        finally:
            server.stop()
    return ref_path, dirs, names


def _stats(url: str) -> dict[str, int]:
    with urllib.request.urlopen(f"{url}/", timeout=10) as r:
        return dict(json.loads(r.read())["monitoring"])


def _runs(db: SqlRunDB, schedule: str) -> list[RunRecord]:
    return [
        r
        for r in db.list_runs("default", limit=1000)
        if r.labels.get("tickrun.schedule") == schedule
    ]


def test_scheduled_monitor_on_model_server_records_alerts_and_retrains(
    ctl: ControllerProc,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    webhook: tuple[str, list[dict[str, Any]]],
) -> None:
    url, received = webhook
    ref_path, dirs, names = _records(tmp_path, monkeypatch)
    client = ctl.client
    for case, directory in dirs.items():
        job = {
            "target": "hub://model_monitor:1.1.0#monitor",
            "inputs": {"reference": str(ref_path)},
            "params": {
                "predictions_dir": str(directory),
                "alert_webhook": url,
                "top_plots": 2,
                "retrain": "hub://describe:1#describe",
                "retrain_params": {"plots": False},
                "retrain_inputs": {"table": str(ref_path)},
            },
        }
        row = client.create_schedule(f"monitor-{case}", "*/3 * * * * *", job)
        assert row["job"]["runner"] == "subprocess"
    db = SqlRunDB(f"sqlite:///{ctl.state_dir / 'tickrun.db'}")
    try:
        done: dict[str, RunRecord] = {}
        for case in dirs:
            done[case] = wait_for(
                lambda c=case: next(
                    (r for r in _runs(db, f"monitor-{c}") if r.state.value == "completed"), None
                ),
                120,
                f"a completed monitor-{case} run",
            )
        for case in dirs:
            client.pause_schedule(f"monitor-{case}")
        for case, run in done.items():
            assert run.labels["tickrun.schedule-trigger"] == "cron"
            assert run.labels["hub.item"] == "model_monitor"
            r = run.results
            assert r["source"] == f"jsonl:{dirs[case]}" and r["current_rows"] == 720
            assert r["features_checked"] == len(names)
            keys = {a.key for a in db.list_artifacts("default", uid=run.uid)}
            assert {"drift", "psi-chart", "drift-histograms"} <= keys
        plain, shifted = done["plain"].results, done["shifted"].results
        assert plain["alert"] is False and "retrain_run" not in plain
        assert shifted["alert"] is True and set(VOLUME) <= set(shifted["drifted_features"])
        assert shifted["alert_webhook_delivered"] is True
        assert shifted["retrain_state"] == "completed"
        retrain = db.get_run(shifted["retrain_run"])
        assert retrain.labels["triggered-by"] == "model_monitor"
        alerts = [b for b in received if b["run"] == done["shifted"].uid]
        assert len(alerts) == 1 and alerts[0]["type"] == "model_monitor.alert"
        assert not [b for b in received if b["run"] == done["plain"].uid]
    finally:
        db.close()
        for case in dirs:
            client.delete_schedule(f"monitor-{case}")
