"""``tickrun ui``'s app on a real local runs store: runs, artifact previews, CSRF, no controller."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from aiohttp.test_utils import TestClient, TestServer

from tickrun.controller.ui.local import create_local_app, tracking_settings
from tickrun.controller.ui.routes import UI_KEY
from tickrun.controller.ui.static_files import StaticFiles
from tickrun.functions.runs import run_function
from tickrun.functions.runs.records import RunRecord
from tickrun.hub.sampledata import market_data


def _job(context: Any, window: int = 24) -> None:
    from matplotlib.figure import Figure
    from sklearn.linear_model import LogisticRegression

    bars = pd.read_csv(market_data(), nrows=400)
    bars["ret"] = bars["close"].pct_change().fillna(0.0)
    bars["up"] = (bars["ret"].shift(-1) > 0).astype(int)
    context.log_dataset("bars", bars[["close", "volume", "ret", "up"]], format="csv")
    fig = Figure()
    fig.subplots().plot(bars["close"].rolling(window).mean().dropna().to_numpy())
    context.log_artifact("sma", fig)
    context.log_artifact("notes", "window and bars\n", format="md")
    model = LogisticRegression().fit(bars[["ret"]], bars["up"])
    context.log_model("clf", model, metrics={"accuracy": model.score(bars[["ret"]], bars["up"])})
    context.log_result("last_close", float(bars["close"].iloc[-1]))


@pytest.fixture
def run(tmp_path: Path) -> RunRecord:
    settings = tracking_settings(tmp_path / "home")
    return run_function(_job, params={"window": 12}, project="btc", settings=settings)


@pytest.fixture
async def client(tmp_path: Path, run: RunRecord) -> AsyncIterator[TestClient]:
    app = create_local_app(tracking_settings(tmp_path / "home"))
    page = tmp_path / "static"
    page.mkdir()
    (page / "index.html").write_text("<!doctype html><title>tickrun ui</title>")
    app[UI_KEY].static = StaticFiles(page)
    async with TestClient(TestServer(app)) as c:
        yield c


async def test_local_ui_serves_runs_without_login(client: TestClient, run: RunRecord) -> None:
    assert "tickrun ui" in await (await client.get("/")).text()
    session = await (await client.get("/ui/session")).json()
    assert session["mode"] == "local" and session["csrf"]
    body = await (await client.get("/api/runs?project=btc&sort=results.last_close")).json()
    assert [r["uid"] for r in body["runs"]] == [run.uid]
    assert body["columns"] == {"params": ["window"], "results": ["last_close"]}
    fns = await client.get("/api/functions")
    assert fns.status == 503 and (await fns.json())["error"] == "NoController"
    # A write needs the page's CSRF token, even locally.
    stale = await client.post("/api/runs/_stale")
    assert stale.status == 403
    ok = await client.post("/api/runs/_stale", headers={"X-CSRF-Token": session["csrf"]})
    assert ok.status == 200
    # A page reached under another host name (DNS rebinding) gets nothing.
    other = await client.get("/api/runs", headers={"Host": "evil.example:5070"})
    assert other.status == 401


async def test_previews_by_kind(client: TestClient, run: RunRecord) -> None:
    base = f"/api/artifacts/btc/{run.uid}/0"
    png = await client.get(f"{base}/sma/preview")
    assert png.status == 200 and png.content_type == "image/png"
    assert (await png.read())[:8] == b"\x89PNG\r\n\x1a\n"
    data = await (await client.get(f"{base}/bars/preview")).json()
    assert data["kind"] == "dataset" and data["shape"]["rows"] == 400
    assert set(data["schema"]) == {"close", "volume", "ret", "up"}
    assert data["rows"] and set(data["rows"][0]) >= {"close", "ret"}
    assert "mean" in data["stats"]["close"]
    model = await (await client.get(f"{base}/clf/preview")).json()
    assert model["kind"] == "model" and model["meta"]["framework"] == "sklearn"
    assert model["lineage"]["run_uid"] == run.uid
    assert model["lineage"]["params"] == {"window": 12}
    notes = await (await client.get(f"{base}/notes/preview")).json()
    assert notes["text"].startswith("window and bars")
    down = await client.get(f"{base}/bars/download")
    assert down.status == 200 and "attachment" in down.headers["Content-Disposition"]
    assert (await down.read()).startswith(b"close,volume,ret,up")
    missing = await client.get(f"{base}/nope/preview")
    assert missing.status == 404


async def test_rows_pages_a_dataset_past_its_preview(client: TestClient, run: RunRecord) -> None:
    base = f"/api/artifacts/btc/{run.uid}/0"
    bars = pd.read_csv(market_data(), nrows=400)
    page = await (await client.get(f"{base}/bars/rows?offset=390&limit=50")).json()
    assert page["total"] == 400 and page["offset"] == 390
    assert page["columns"] == ["close", "volume", "ret", "up"]
    assert [r["close"] for r in page["rows"]] == bars["close"].iloc[390:].tolist()
    capped = await (await client.get(f"{base}/bars/rows?limit=100000")).json()
    assert len(capped["rows"]) == 400  # the cap (1000 rows) is above this table
    not_table = await client.get(f"{base}/notes/rows")
    assert not_table.status == 400 and "not a table" in (await not_table.json())["detail"]
    bad = await client.get(f"{base}/bars/rows?offset=-1")
    assert bad.status == 400
