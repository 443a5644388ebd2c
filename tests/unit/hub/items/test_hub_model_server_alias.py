"""model_server 1.2.0 serving ``models:/name@alias`` without a controller: the version is
resolved in the run DB's registry (X-Model-Version ``name/version``), and a background thread
re-resolves the alias every MODEL_REFRESH_S and swaps the new version in once loaded, while
requests keep flowing (none fails, none answers with a half-swapped model).

Also the home of :func:`train_versions` (two real LogisticRegressions on different windows of the
shipped hourly market data, logged as tracked runs), shared with
tests/integration/test_serving_by_alias.py.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

import tickrun
from tickrun.functions.runs import load_model, run_function
from tickrun.functions.runs.db import SqlRunDB
from tickrun.functions.runs.db.base import RunDB
from tickrun.hub.sampledata import market_data

FEATURES = ["ret_1", "ret_6", "ret_24", "vol_24"]
# Two training windows of the hourly BTCUSDT file (rows): early and late market regimes.
WINDOWS = ((0, 20_000), (45_000, 65_000))


def feature_frame() -> pd.DataFrame:
    """Return and volatility features of the shipped hourly bars, and next-hour up/down."""
    bars = pd.read_csv(market_data())
    logp = np.log(bars["close"].astype(float))
    out = pd.DataFrame(
        {
            "ret_1": logp.diff(),
            "ret_6": logp.diff(6),
            "ret_24": logp.diff(24),
            "vol_24": logp.diff().rolling(24).std(),
            "label": (logp.shift(-1) > logp).astype(int),
        }
    )
    return out.iloc[:-1].dropna().reset_index(drop=True)


def train_versions(db: RunDB | None = None) -> list[tuple[str, Any]]:
    """(store:// URI, fitted model) of a LogisticRegression per training window, each logged by
    a tracked run (``db``: the run DB; default the configured one)."""
    from sklearn.linear_model import LogisticRegression

    frame = feature_frame()
    out = []
    for lo, hi in WINDOWS:
        part = frame.iloc[lo:hi]

        def train(context: Any, part: pd.DataFrame = part) -> None:
            model = LogisticRegression(C=0.5, max_iter=1000)
            model.fit(part[FEATURES], part["label"])
            context.log_result("rows", len(part))
            context.log_model("model", model, feature_names=FEATURES)

        run = run_function(train, name=f"btc-{lo}", progress=False, db=db)
        if run.state != "completed":
            raise AssertionError(f"training failed: {run.error}")
        uri = str(run.outputs["model"])
        model, _ = load_model(uri, db=db)
        out.append((uri, model))
    return out


def probe_rows(n: int = 8) -> list[list[float]]:
    """Feature rows the two models disagree on (so a response tells which one answered)."""
    frame = feature_frame().iloc[-2000:]
    return frame[FEATURES].iloc[:: max(1, len(frame) // n)].head(n).to_numpy().tolist()


def expected(model: Any, rows: list[list[float]]) -> list[float]:
    return [float(p) for p in model.predict_proba(pd.DataFrame(rows, columns=FEATURES))[:, 1]]


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[SqlRunDB, list[Any]]:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    monkeypatch.setenv("TICKRUN_DB_URL", url)
    monkeypatch.setenv("TICKRUN_ARTIFACT_PATH", str(tmp_path / "artifacts"))
    monkeypatch.delenv("TICKRUN_CONTROLLER_URL", raising=False)
    db = SqlRunDB(url)
    versions = train_versions(db)
    for uri, _model in versions:
        tickrun.register_model(uri, "btc", db=db)
    tickrun.set_alias("btc", "champion", 1, db=db)
    return db, [m for _u, m in versions]


class _Logger:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def info_with(self, message: str, **kw: Any) -> None:
        self.lines.append((message, kw))

    warn_with = info_with


def _context() -> Any:
    return SimpleNamespace(user_data=SimpleNamespace(), logger=_Logger())


def _event(rows: list[list[float]]) -> Any:
    return SimpleNamespace(
        path="/",
        method="POST",
        body={"inputs": rows, "proba": True},
        content_type="application/json",
        id="e",
        trigger=None,
    )


def test_alias_hot_swap_under_concurrent_requests(
    registry: tuple[SqlRunDB, list[Any]],
    monkeypatch: pytest.MonkeyPatch,
    hub_module: Any,
) -> None:
    import asyncio

    db, models = registry
    ms = hub_module
    monkeypatch.setenv("MODEL_URI", "models:/btc@champion")
    monkeypatch.setenv("MODEL_REFRESH_S", "0.2")
    monkeypatch.delenv("MODEL_VERSION", raising=False)
    rows = probe_rows()
    want = {"btc/1": expected(models[0], rows), "btc/2": expected(models[1], rows)}
    assert not np.allclose(want["btc/1"], want["btc/2"])  # the responses tell the models apart
    ctx = _context()
    ms.init_context(ctx)
    reloader = ctx.user_data.reloader
    assert reloader is not None
    try:
        assert ctx.user_data.server.version == "btc/1"
        seen: dict[int, list[str]] = {}
        errors: list[str] = []
        stop = threading.Event()

        def load(index: int) -> None:
            mine = seen.setdefault(index, [])
            loop = asyncio.new_event_loop()
            try:
                while not stop.is_set():
                    reply = loop.run_until_complete(ms.handler(ctx, _event(rows)))
                    version = reply.headers["X-Model-Version"]
                    got = [p[1] for p in reply.body["probabilities"]]
                    if reply.status_code != 200 or not np.allclose(got, want[version]):
                        errors.append(f"{reply.status_code} {version} {got[:2]}")
                    mine.append(version)
            finally:
                loop.close()

        threads = [threading.Thread(target=load, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        tickrun.set_alias("btc", "champion", 2, db=db)
        deadline = time.monotonic() + 20
        while ctx.user_data.server.version != "btc/2" and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join(timeout=10)
    finally:
        reloader.stop()
    assert ctx.user_data.server.version == "btc/2"
    assert reloader.swaps == 1
    assert errors == []
    for versions in seen.values():
        assert versions[0] == "btc/1" and versions[-1] == "btc/2"
        # One reference swap: once a client got the new model it never gets the old one.
        first = versions.index("btc/2")
        assert set(versions[first:]) == {"btc/2"}


def test_a_pinned_version_or_refresh_0_starts_no_reloader(
    registry: tuple[SqlRunDB, list[Any]], monkeypatch: pytest.MonkeyPatch, hub_module: Any
) -> None:
    ms = hub_module
    monkeypatch.delenv("MODEL_VERSION", raising=False)
    monkeypatch.setenv("MODEL_URI", "models:/btc/2")
    ctx = _context()
    ms.init_context(ctx)
    assert ctx.user_data.reloader is None
    assert ctx.user_data.server.version == "btc/2"
    monkeypatch.setenv("MODEL_URI", "models:/btc@champion")
    monkeypatch.setenv("MODEL_REFRESH_S", "0")
    ctx = _context()
    ms.init_context(ctx)
    assert ctx.user_data.reloader is None
    assert ctx.user_data.server.version == "btc/1"


def test_a_failing_refresh_keeps_the_current_model(
    registry: tuple[SqlRunDB, list[Any]], monkeypatch: pytest.MonkeyPatch, hub_module: Any
) -> None:
    db, _models = registry
    ms = hub_module
    monkeypatch.setenv("MODEL_URI", "models:/btc@champion")
    monkeypatch.setenv("MODEL_REFRESH_S", "0.1")
    monkeypatch.delenv("MODEL_VERSION", raising=False)
    ctx = _context()
    ms.init_context(ctx)
    try:
        tickrun.delete_alias("btc", "champion", db=db)
        deadline = time.monotonic() + 10
        while not any("failed" in m for m, _ in ctx.logger.lines) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert any("failed" in m for m, _ in ctx.logger.lines)
        assert ctx.user_data.server.version == "btc/1"
    finally:
        ctx.user_data.reloader.stop()


@pytest.fixture
def hub_module() -> Any:
    return tickrun.import_function("hub://model_server:1.2.0").module()


def test_local_deploy_switches_versions_under_http_load(
    registry: tuple[SqlRunDB, list[Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real local replica (``fn.deploy()`` without a controller, i.e. ``tickrun serve``) on a
    moving alias: HTTP clients (keep-alive and new connections) keep calling while the alias
    moves; none fails, every answer is the named version's model, and once a client saw btc/2
    it never sees btc/1 again (one worker: one swap)."""
    import http.client
    import json

    db, models = registry
    rows = probe_rows()
    want = {"btc/1": expected(models[0], rows), "btc/2": expected(models[1], rows)}
    fn = tickrun.import_function("hub://model_server:1.2.0")
    server = fn.deploy(
        controller=False,
        env={"MODEL_URI": "models:/btc@champion", "MODEL_REFRESH_S": "0.3"},
    )
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    body = json.dumps({"inputs": rows, "proba": True})
    seen: dict[int, list[str]] = {}
    failures: list[str] = []
    stop = threading.Event()

    def client(index: int, keep_alive: bool) -> None:
        conn: http.client.HTTPConnection | None = None
        seen[index] = []
        while not stop.is_set():
            if conn is None or not keep_alive:
                conn = http.client.HTTPConnection(host, int(port), timeout=30)
            try:
                conn.request("POST", "/", body=body, headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                data = json.loads(resp.read())
            except (OSError, http.client.HTTPException) as exc:
                failures.append(repr(exc))
                conn = None
                continue
            version = resp.getheader("X-Model-Version") or ""
            probs = [p[1] for p in data["probabilities"]]
            if resp.status != 200 or not np.allclose(probs, want[version]):
                failures.append(f"{resp.status} {version}")
            seen[index].append(version)
            if not keep_alive:
                conn.close()

    threads = [threading.Thread(target=client, args=(i, i % 2 == 0), daemon=True) for i in range(4)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while sum(len(v) for v in seen.values()) < 40 and time.monotonic() < deadline:
            time.sleep(0.05)
        tickrun.set_alias("btc", "champion", 2, db=db)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not all(
            v and v[-1] == "btc/2" for v in seen.values()
        ):
            time.sleep(0.05)
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
        server.stop()
    assert failures == []
    for versions in seen.values():
        assert versions[0] == "btc/1" and versions[-1] == "btc/2"
        first = versions.index("btc/2")
        assert set(versions[first:]) == {"btc/2"}  # never back
