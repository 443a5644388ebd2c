"""The ops pages of the web UI in Debian's Chromium against a real controller: functions on the
process platform (an HTTP one and a Kafka-triggered one on a real broker), a model with two
registered versions, hub://model_monitor runs on the shipped hourly bars, a pipeline run, a
schedule and the bundled hub. Flows: every page loads without console errors and shows its
data; follow a function's logs; scale a function; set a model alias."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from playwright.sync_api import Page, expect

from tests.integration.test_controller_harness import TOKEN, ControllerProc, cleanup, wait_for
from tests.integration.ui.conftest import errors_of
from tests.peers import KafkaBroker
from tests.support.kafka_functions import produce
from tests.support.lag_functions import LAG_HANDLER, lag_spec, spec_of, write_function
from tickrun import Pipeline
from tickrun.functions.runs import run_function
from tickrun.hub import import_function
from tickrun.hub.sampledata import market_data

pytestmark = [pytest.mark.kafka]

HTTP_FN = "uiops-http"
KAFKA_FN = "uiops-kafka"
MODEL = "uiops-btc"
SCHEDULE = "uiops-nightly"
PIPELINE = "uiops-pipe"
TOPIC = "uiops-ticks"

HTTP_HANDLER = """
def handler(context, event):
    body = event.body.decode() if isinstance(event.body, bytes) else str(event.body or "")
    print(f"handled {body}", flush=True)
    return "ok"
"""


@dataclass
class World:
    ctl: ControllerProc
    monitor_runs: list[Any]
    pipeline_uid: str
    features: list[str]

    def api(self, path: str, method: str = "GET", body: Any = None) -> Any:
        req = urllib.request.Request(
            self.ctl.url + path,
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read())


def _features(bars: pd.DataFrame) -> pd.DataFrame:
    """A few rolling features of the hourly bars, the close and a momentum signal."""
    close = bars["close"]
    out = pd.DataFrame(
        {
            "timestamp": bars["timestamp"],
            "ret_1": close.pct_change(),
            "ret_24": close.pct_change(24),
            "vol_24": close.pct_change().rolling(24).std(),
            "range": (bars["high"] - bars["low"]) / close,
            "volume_ratio": bars["volume"] / bars["volume"].rolling(48).mean(),
            "close": close,
        }
    ).dropna()
    return out.assign(signal=np.sign(out["ret_24"]))


def _train(context: Any, rows: int = 2000) -> None:
    from sklearn.linear_model import LogisticRegression

    f = _features(pd.read_csv(market_data())).tail(rows)
    y = (f["close"].shift(-1) > f["close"]).astype(int)
    cols = ["ret_1", "ret_24", "vol_24", "range"]
    model = LogisticRegression(max_iter=500).fit(f[cols], y)
    context.log_result("train_accuracy", float(model.score(f[cols], y)))
    context.log_model("model", model, feature_names=cols)


def _load(context: Any, rows: int = 50) -> None:
    bars = pd.read_csv(market_data()).tail(rows)
    context.log_result("rows", len(bars))
    context.log_result("last_close", float(bars["close"].iloc[-1]))


def _report(context: Any, rows: int = 0, last_close: float = 0.0) -> None:
    context.log_result("summary", f"{rows} rows, last close {last_close}")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, kafka_broker: KafkaBroker) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("uiops")
    artifacts = tmp / "artifacts"
    env = dict(os.environ)
    for var in ("TICKRUN_DB_URL", "TICKRUN_CONTROLLER_URL"):
        env.pop(var, None)
    env |= {
        "TICKRUN_HOME": str(tmp / "home"),
        "TICKRUN_ARTIFACT_PATH": str(artifacts),
        "TICKRUN_LAG_INTERVAL_S": "0.5",
    }
    ctl = ControllerProc(tmp / "state", env).start()
    mp = pytest.MonkeyPatch()
    # This process tracks runs and registers models in the controller's run DB, over its API.
    mp.delenv("TICKRUN_DB_URL", raising=False)
    mp.setenv("TICKRUN_CONTROLLER_URL", ctl.url)
    mp.setenv("TICKRUN_TOKEN", TOKEN)
    mp.setenv("TICKRUN_ARTIFACT_PATH", str(artifacts))
    try:
        # Functions: an HTTP one and a Kafka-triggered one with records waiting.
        folder = write_function(tmp, HTTP_FN, HTTP_HANDLER, {"replicas": 1})
        ctl.client.deploy(spec_of(folder), folder, platform="process")
        brokers = kafka_broker.bootstrap_servers
        kafka_broker.create_topic(TOPIC, partitions=2)
        spec = lag_spec(brokers, TOPIC, "uiops-g", sleep_s=0.5, minReplicas=1, maxReplicas=1)
        folder = write_function(tmp, KAFKA_FN, LAG_HANDLER, spec)
        ctl.client.deploy(spec_of(folder), folder, platform="process")
        ctl.client.wait_ready(HTTP_FN, timeout_s=120)
        ctl.client.wait_ready(KAFKA_FN, timeout_s=120)
        produce(brokers, TOPIC, ({"i": i} for i in range(40)), partition_of=lambda i: i % 2)
        for i in range(12):
            ctl.client.invoke(HTTP_FN, method="POST", body=f"warm-{i}".encode())

        w = World(ctl, [], "", ["ret_1", "ret_24", "vol_24", "range", "volume_ratio"])
        # A model with two versions, @champion on v1.
        uris = []
        for rows in (1500, 3000):
            run = run_function(_train, params={"rows": rows}, name="uiops-train", progress=False)
            assert run.state == "completed", run.error
            uris.append(str(run.outputs["model"]))
        w.api("/api/models", "POST", {"model_uri": uris[0], "name": MODEL, "aliases": ["champion"]})
        w.api("/api/models", "POST", {"model_uri": uris[1], "name": MODEL})

        # Two model_monitor windows: 2025 H1 vs 2024 H1, the second with volume x1.5.
        feats = _features(pd.read_csv(market_data()))
        ts = feats["timestamp"].astype(str)
        ref = feats[ts.str.startswith("2024-0")].head(3000)
        h1 = feats[ts.str.startswith("2025-0")]
        windows = [h1.iloc[:720], h1.iloc[720:1440].assign(volume_ratio=h1["volume_ratio"] * 1.5)]
        ref_path = tmp / "reference.csv"
        ref.to_csv(ref_path, index=False)
        monitor = import_function("hub://model_monitor:1")
        for i, cur in enumerate(windows):
            path = tmp / f"window-{i}.csv"
            cur.to_csv(path, index=False)
            run = monitor.run(
                "monitor",
                params={"plots": False, "features": ",".join(w.features)},
                inputs={"reference": str(ref_path), "current": str(path)},
                name="uiops-monitor",
                progress=False,
            )
            assert run.state == "completed", run.error
            w.monitor_runs.append(run)

        # A pipeline run (two tracked steps) and a schedule that will not fire during the test.
        p = Pipeline(PIPELINE, project="default")
        load = p.step("load", _load, params={"rows": 48})
        p.step(
            "report",
            _report,
            params={"rows": load.result("rows"), "last_close": load.result("last_close")},
        )
        prun = p.run(runner="local")
        assert prun.state == "completed", prun.error
        w.pipeline_uid = prun.uid
        ctl.client.create_schedule(
            SCHEDULE, "0 3 1 1 *", {"target": "hub://describe#describe", "params": {}}
        )
        yield w
    finally:
        mp.undo()
        cleanup(ctl)


def _open(page_for: Callable[..., Page], world: World, hash_: str) -> Page:
    page = page_for(world.ctl.url + "/" + hash_)
    page.wait_for_selector("main.page h1")
    return page


def _go(page: Page, hash_: str) -> None:
    page.evaluate("h => { location.hash = h; }", hash_)
    page.wait_for_selector("main.page h1")


def _no_errors(page: Page) -> None:
    assert errors_of(page) == []


def test_functions_list_and_a_functions_page_follow_logs(
    world: World, page_for: Callable[..., Page], shot: Callable[[Page, str], Path]
) -> None:
    page = _open(page_for, world, "#/functions")
    expect(page.locator("main.page h1")).to_have_text("Functions")
    table = page.locator("table.grid")
    expect(table).to_contain_text(HTTP_FN)
    expect(table).to_contain_text(KAFKA_FN)
    rows = {
        name: page.locator("tr", has=page.locator(f"a.fn-link:text-is('{name}')"))
        for name in (HTTP_FN, KAFKA_FN)
    }
    expect(rows[HTTP_FN].locator(".replicas")).to_contain_text("1 / 1")
    expect(rows[KAFKA_FN]).to_contain_text(f"kafka-cluster ({TOPIC})")
    # The metrics arrive: requests counted, and the Kafka lag per partition of the real group.
    expect(rows[KAFKA_FN].locator(".lag")).to_contain_text("p0:", timeout=30_000)
    expect(rows[KAFKA_FN].locator(".lag")).to_contain_text("p1:")
    expect(rows[HTTP_FN]).to_contain_text("/s")
    shot(page, "ops-functions")

    _go(page, f"#/functions/{HTTP_FN}")
    expect(page.locator("main.page h1")).to_contain_text(HTTP_FN)
    events = int(page.locator("#m-events").inner_text(timeout=30_000).replace(",", ""))
    assert events >= 12
    expect(page.locator("table.events")).to_contain_text("deploy")
    expect(page.locator("table.builds")).to_contain_text("succeeded")
    expect(page.locator("#function-logs")).to_contain_text("handled warm-11")
    # Follow: a line written after the page opened shows up.
    page.check("#follow")
    expect(page.locator(".log-status")).to_contain_text("following")
    marker = f"marker-{uuid.uuid4().hex[:8]}"
    world.ctl.client.invoke(HTTP_FN, method="POST", body=marker.encode())
    expect(page.locator("#function-logs")).to_contain_text(f"handled {marker}", timeout=15_000)
    page.uncheck("#follow")
    shot(page, "ops-function")

    _go(page, f"#/functions/{KAFKA_FN}")
    parts = page.locator("table.kafka-partitions tbody tr")
    expect(parts).to_have_count(2, timeout=30_000)
    expect(page.locator("table.kafka-partitions")).to_contain_text(TOPIC)
    _no_errors(page)


def test_scale_a_function(world: World, page_for: Callable[..., Page]) -> None:
    page = _open(page_for, world, f"#/functions/{HTTP_FN}")
    expect(page.locator("#replicas-ready")).to_have_text("1 / 1")
    before = world.ctl.client.get_function(HTTP_FN)
    first = before["replicas"]["items"][0]
    builds = world.api(f"/api/functions/{HTTP_FN}/builds")["builds"]
    page.click("#scale")
    page.fill("dialog.form-dialog input[name=min]", "2")
    page.fill("dialog.form-dialog input[name=max]", "2")
    page.click("dialog.form-dialog button[type=submit]")
    expect(page.locator("dialog.confirm")).to_contain_text("to 2 replica(s)")
    page.click("dialog.confirm button.primary")
    wait_for(
        lambda: world.ctl.client.get_function(HTTP_FN)["replicas"]["ready"] == 2,
        120,
        "two ready replicas",
    )
    expect(page.locator("#replicas-ready")).to_have_text("2 / 2", timeout=20_000)
    # The scale endpoint: a scale event, and no new version, build or restart.
    expect(page.locator("table.events")).to_contain_text(
        "scaled from 1 replica(s) to 2 replica(s)", timeout=20_000
    )
    after = world.ctl.client.get_function(HTTP_FN)
    assert after["spec"]["spec"]["replicas"] == 2
    assert (after["version"], after["revision"]) == (before["version"], before["revision"])
    assert world.api(f"/api/functions/{HTTP_FN}/builds")["builds"] == builds
    kept = [r for r in after["replicas"]["items"] if r["id"] == first["id"]]
    assert kept and kept[0]["pid"] == first["pid"] and kept[0]["restarts"] == first["restarts"]
    events = world.ctl.client.events(HTTP_FN)
    scaled = [e for e in events if e["kind"] == "scale"]
    assert scaled and scaled[-1]["data"] == {"from": {"replicas": 1}, "to": {"replicas": 2}}
    assert not [e for e in events if e["kind"] == "deploy" and e["id"] > scaled[-1]["id"]]
    _no_errors(page)


def test_redeploy_then_delete_a_function(world: World, page_for: Callable[..., Page]) -> None:
    page = _open(page_for, world, f"#/functions/{KAFKA_FN}")
    before = world.ctl.client.get_function(KAFKA_FN)["version"]
    page.click("#redeploy")
    expect(page.locator("dialog.confirm")).to_contain_text(f"Redeploy {KAFKA_FN}?")
    page.click("dialog.confirm button.primary")
    wait_for(
        lambda: world.ctl.client.get_function(KAFKA_FN)["version"] == before + 1,
        30,
        "a new version",
    )
    expect(page.locator("table.events")).to_contain_text(f"version {before + 1}")
    # Cancelling the delete keeps the function; confirming removes it and goes to the list.
    page.click("#delete")
    page.click("dialog.confirm button:text-is('Cancel')")
    assert world.ctl.client.get_function(KAFKA_FN)["name"] == KAFKA_FN
    page.click("#delete")
    expect(page.locator("dialog.confirm")).to_contain_text("cannot be undone")
    page.click("dialog.confirm button.danger")
    expect(page.locator("main.page h1")).to_have_text("Functions")
    wait_for(
        lambda: KAFKA_FN not in [f["name"] for f in world.ctl.client.list_functions()],
        60,
        "the function deleted",
    )
    page.reload()
    expect(page.locator("table.grid")).to_contain_text(HTTP_FN)
    expect(page.locator("table.grid")).not_to_contain_text(KAFKA_FN)
    _no_errors(page)


def test_models_and_set_an_alias(
    world: World, page_for: Callable[..., Page], shot: Callable[[Page, str], Path]
) -> None:
    page = _open(page_for, world, "#/models")
    expect(page.locator("main.page h1")).to_have_text("Models")
    expect(page.locator("table.models")).to_contain_text(MODEL)
    expect(page.locator("table.models")).to_contain_text("@champion → v1")
    page.click(f"table.models a:text-is('{MODEL}')")
    expect(page.locator("main.page h1")).to_have_text(MODEL)
    versions = page.locator("table.versions tbody tr")
    expect(versions).to_have_count(2)
    # Lineage: the training run and the model artifact are links.
    expect(page.locator("table.versions a.run-link").first).to_contain_text("uiops-train")
    expect(page.locator("table.versions a.artifact-link").first).to_contain_text("store://")
    page.click("#set-alias")
    page.fill("dialog.form-dialog input[name=alias]", "staging")
    page.fill("dialog.form-dialog input[name=version]", "2")
    page.click("dialog.form-dialog button[type=submit]")
    expect(page.locator("dialog.confirm")).to_contain_text("@staging")
    page.click("dialog.confirm button.primary")
    expect(page.locator(".aliases")).to_contain_text("@staging → v2")
    assert world.api(f"/api/models/{MODEL}")["model"]["aliases"] == {"champion": 1, "staging": 2}
    shot(page, "ops-model")
    _no_errors(page)


def test_monitoring(
    world: World, page_for: Callable[..., Page], shot: Callable[[Page, str], Path]
) -> None:
    page = _open(page_for, world, "#/monitoring")
    expect(page.locator("main.page h1")).to_have_text("Monitoring")
    alerts = sum(1 for r in world.monitor_runs if r.results["alert"])
    expect(page.locator("#alert-count")).to_have_text(str(alerts))
    for chart in ("#perf-chart", "#drift-time-chart", "#drift-heatmap", "#drift-feature-chart"):
        expect(page.locator(f"{chart} canvas").first).to_be_visible()
    # The newest window (volume x1.5) is shown: its per-feature table with the real PSI.
    last = world.monitor_runs[-1]
    expect(page.locator("#drift-feature-chart")).to_have_attribute("data-run", last.uid)
    table = page.locator("table.drift-table")
    for name in world.features:
        expect(table).to_contain_text(name)
    top = table.locator("tbody tr").first
    expect(top).to_contain_text(str(last.results["max_psi_feature"]))
    expect(page.locator("table.monitor-runs tbody tr")).to_have_count(len(world.monitor_runs))
    shot(page, "ops-monitoring")
    _no_errors(page)


def test_schedules_pipelines_and_hub(
    world: World, page_for: Callable[..., Page], shot: Callable[[Page, str], Path]
) -> None:
    page = _open(page_for, world, "#/schedules")
    expect(page.locator("main.page h1")).to_have_text("Schedules")
    row = page.locator("table.schedules tbody tr", has_text=SCHEDULE)
    expect(row).to_contain_text("0 3 1 1 *")
    nxt = world.api(f"/api/schedules/{SCHEDULE}")["next_at"]
    year = time.strftime("%Y", time.localtime(nxt))
    expect(row).to_contain_text(f"{year}-01-01")
    shot(page, "ops-schedules")

    _go(page, "#/pipelines")
    expect(page.locator("main.page h1")).to_have_text("Pipelines")
    row = page.locator("table.pipelines tbody tr", has_text=PIPELINE)
    expect(row).to_contain_text("completed")
    row.locator(f"a:text-is('{PIPELINE}')").click()
    expect(page.locator("main.page h1")).to_contain_text(PIPELINE)
    expect(page.locator(".pipeline-graph canvas").first).to_be_visible()
    expect(page.locator(".pipeline-graph")).to_have_attribute("data-layers", "2")
    for step in ("load", "report"):
        expect(page.locator(f".step-state[data-step={step}]")).to_have_text("completed")
    shot(page, "ops-pipeline")

    _go(page, "#/hub")
    expect(page.locator("main.page h1")).to_have_text("Hub")
    expect(page.locator("table.hub-items")).to_contain_text("model_monitor")
    index = world.api("/api/hub")["items"]
    expect(page.locator("table.hub-items tbody tr")).to_have_count(len(index))
    _go(page, "#/hub/model_monitor")
    latest = index["model_monitor"]["latest"]
    expect(page.locator("main.page h1")).to_contain_text(latest)
    params = page.locator("table.hub-params")
    expect(params).to_contain_text("psi_threshold")
    expect(params).to_contain_text("ks_autocorrelation")
    expect(page.locator("pre.doc")).to_contain_text("Feature drift")
    shot(page, "ops-hub-item")
    _no_errors(page)


def test_local_mode_says_the_function_pages_need_a_controller(
    tmp_path: Path, page_for: Callable[..., Page]
) -> None:
    env = {**os.environ, "TICKRUN_HOME": str(tmp_path / "home")}
    for var in ("TICKRUN_CONTROLLER_URL", "TICKRUN_DB_URL", "TICKRUN_ARTIFACT_PATH"):
        env.pop(var, None)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    cmd = [sys.executable, "-m", "tickrun", "ui", "--home", str(tmp_path / "home")]
    proc = subprocess.Popen(
        [*cmd, "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            with urllib.request.urlopen(url + "/ui/session", timeout=5) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    try:
        wait_for(up, 30, "tickrun ui answers")
        page = page_for(url + "/#/functions")
        expect(page.locator("main.page h1")).to_have_text("Functions")
        expect(page.locator(".needs-controller")).to_contain_text("needs a controller")
        _go(page, "#/schedules")
        expect(page.locator(".needs-controller")).to_contain_text("needs a controller")
        # The registry and the hub work on a local store.
        _go(page, "#/models")
        expect(page.locator("main.page .empty")).to_contain_text("No registered models")
        _go(page, "#/hub")
        expect(page.locator("table.hub-items")).to_contain_text("model_monitor")
        _no_errors(page)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert b"Traceback" not in err, err[-2000:]
