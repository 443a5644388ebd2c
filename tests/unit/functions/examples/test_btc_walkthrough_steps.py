"""The walk-through's own steps (functions/examples/btc_walkthrough/steps.py) as tracked runs on
the shipped hourly BTCUSDT bars, against a SQLite run DB; the controller is a fake here (the
real one: tests/integration/test_pipeline_walkthrough.py).

One training sweep (market_window → market_features 1.2 → auto_trainer 1.1 over two values of
C) is shared by the module's tests; each test registers into a registry of its own."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import tickrun
from tickrun.functions.errors import NotFoundError
from tickrun.functions.runs import (
    DataItem,
    SqlRunDB,
    TrackingSettings,
    get_model_version,
    list_model_versions,
    load_model,
    run_function,
    set_alias,
)
from tickrun.functions.runs.records import parse_store_uri
from tickrun.hub.sampledata import market_data

ROOT = Path(__file__).resolve().parents[4]
STEPS_FILE = ROOT / "functions" / "examples" / "btc_walkthrough" / "steps.py"
START, END = "2024-06-01", "2024-10-01"
GRID = [0.01, 1.0]


def _load_steps() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("btc_walkthrough_steps", STEPS_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


steps = _load_steps()


def target(name: str) -> str:
    return f"{STEPS_FILE}:{name}"


@dataclass
class Trained:
    bars: str
    features: str
    train_uid: str
    db_url: str
    home: str


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    home = tmp_path_factory.mktemp("walkthrough-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TICKRUN_HOME", str(home))
        for var in ("TICKRUN_CONTROLLER_URL", "TICKRUN_DB_URL", "TICKRUN_ARTIFACT_PATH"):
            mp.delenv(var, raising=False)
        data = run_function(
            target("market_window"), params={"start": START, "end": END}, progress=False
        )
        assert data.state == "completed", data.error
        feats = tickrun.import_function("hub://market_features:1.2").run(
            "featurize",
            inputs={"dataset": data.outputs["bars"]},
            params={"windows": "6,24", "interval": "1h"},
            progress=False,
        )
        assert feats.state == "completed", feats.error
        train = tickrun.import_function("hub://auto_trainer:1.1").run(
            "train",
            inputs={"dataset": feats.outputs["features"]},
            params={
                # As pipeline.py: model_promote refits a version from its lineage's params.
                "model_class": "sklearn.linear_model.LogisticRegression",
                "validation_size": 0.2,
                "scale": True,
                "plots": False,
            },
            hyperparams={"CLASS_C": GRID},
            selector="max.validation_auc",
            progress=False,
        )
        assert train.state == "completed", train.error
        yield Trained(
            bars=data.outputs["bars"],
            features=feats.outputs["features"],
            train_uid=train.uid,
            db_url=TrackingSettings.from_env().db_url,
            home=str(home),
        )


@pytest.fixture
def env(trained: Trained, monkeypatch: pytest.MonkeyPatch) -> Iterator[SqlRunDB]:
    """The module's run DB and artifacts (where the sweep ran), as this test's environment."""
    monkeypatch.setenv("TICKRUN_HOME", trained.home)
    monkeypatch.setenv("TICKRUN_DB_URL", trained.db_url)
    for var in ("TICKRUN_CONTROLLER_URL", "TICKRUN_ARTIFACT_PATH"):
        monkeypatch.delenv(var, raising=False)
    db = SqlRunDB(trained.db_url)
    yield db
    db.close()


def _run(name: str, **kw: Any) -> Any:
    run = run_function(target(name), progress=False, **kw)
    assert run.state == "completed", run.error
    return run


def _model_name(request: pytest.FixtureRequest) -> str:
    return "btc-" + request.node.name.replace("_", "-")[5:60].strip("-")


# --- market_window -----------------------------------------------------------------------------


def test_market_window_logs_the_bars_of_the_window_with_typed_times(
    trained: Trained, env: SqlRunDB
) -> None:
    bars = DataItem(trained.bars).as_df()
    ts = pd.to_datetime(bars["timestamp"], utc=True)
    assert ts.min() >= pd.Timestamp(START, tz="UTC") and ts.max() < pd.Timestamp(END, tz="UTC")
    assert ts.is_monotonic_increasing
    shipped = pd.read_csv(market_data())
    sts = pd.to_datetime(shipped["timestamp"], utc=True)
    want = shipped[(sts >= START) & (sts < END)]
    assert len(bars) == len(want) > 2000
    assert np.allclose(bars["close"].to_numpy(), want["close"].to_numpy())


def test_market_window_refuses_an_empty_or_reversed_window(env: SqlRunDB) -> None:
    for params in ({"start": "2024-02-01", "end": "2024-01-01"}, {"start": "2030-01-01"}):
        run = run_function(target("market_window"), params=params, progress=False)
        assert run.state == "error"
        assert "before end" in str(run.error) or "too few" in str(run.error)


# --- best_model --------------------------------------------------------------------------------


def test_best_model_names_the_winning_iteration_its_params_and_its_own_model(
    trained: Trained, env: SqlRunDB
) -> None:
    run = _run("best_model", params={"train_run": trained.train_uid})
    children = env.list_runs(uid=trained.train_uid)
    iterations = {r.iteration: r for r in children if r.iteration > 0}
    assert len(iterations) == len(GRID)
    # The winner is the one with the highest validation AUC, as the sweep selected.
    by_val = max(iterations.values(), key=lambda r: r.results["validation_auc"])
    res = run.results
    assert res["best_iteration"] == by_val.iteration
    assert res["selected_on"] == "validation_auc"
    assert res["CLASS_C"] == by_val.params["CLASS_C"] and res["CLASS_C"] in GRID
    assert res["model_class"] == "sklearn.linear_model.LogisticRegression"
    project, uid, iteration, key = parse_store_uri(res["model_uri"])
    assert (uid, iteration, key) == (trained.train_uid, by_val.iteration, "model")
    model, _info = load_model(res["model_uri"])
    assert model.get_params()["logisticregression__C"] == res["CLASS_C"]


# --- register ----------------------------------------------------------------------------------


def test_register_tags_backtest_figures_and_never_registers_one_model_twice(
    trained: Trained, env: SqlRunDB, request: pytest.FixtureRequest
) -> None:
    name = _model_name(request)
    best = _run("best_model", params={"train_run": trained.train_uid}).results
    bt = tickrun.import_function("hub://backtest:1.2").run(
        "backtest",
        inputs={"dataset": trained.features, "prices": trained.bars},
        params={"walk_forward_splits": 3, "CLASS_C": best["CLASS_C"], "null_paths": 20},
        progress=False,
    )
    assert bt.state == "completed", bt.error
    params = {"model": best["model_uri"], "name": name, "backtest_run": bt.uid}
    first = _run("register", params=params).results
    assert first["version"] == 1 and first["action"] == "registered"
    mv = get_model_version(name, "challenger")
    assert mv.version == 1 and mv.model_uri == best["model_uri"]
    # The lineage is the winning iteration's run: its dataset, the hub item, its C.
    assert mv.lineage.run_uid == trained.train_uid
    assert mv.lineage.run_iteration == best["best_iteration"]
    assert mv.lineage.hub_item == "auto_trainer" and mv.lineage.hub_version == "1.1.0"
    assert [d.uri for d in mv.lineage.datasets] == [trained.features]
    assert mv.lineage.params["CLASS_C"] == best["CLASS_C"]
    assert json.loads(mv.tags["backtest.net_return"]) == pytest.approx(bt.results["net_return"])
    assert mv.tags["backtest-run"] == bt.uid
    assert first["backtest_net_return"] == pytest.approx(bt.results["net_return"])
    # Again (a re-run whose training was cached): the same version, the alias re-pointed.
    set_alias(name, "challenger", 1)
    again = _run("register", params={**params, "alias": "candidate"}).results
    assert again["version"] == 1 and again["action"] == "existing"
    assert [v.version for v in list_model_versions(name)] == [1]
    assert get_model_version(name, "candidate").version == 1


def test_register_without_a_model_fails_the_run(env: SqlRunDB) -> None:
    run = run_function(target("register"), params={"name": "btc-x"}, progress=False)
    assert run.state == "error" and "model" in str(run.error)


# --- deploy_by_alias (a fake controller) --------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeController:
    """Deploys recorded; the served version is what ``serving`` says (a list: one per GET)."""

    url: str = "http://controller.test"
    functions: dict[str, dict[str, Any]] = field(default_factory=dict)
    deploys: list[dict[str, Any]] = field(default_factory=list)
    serving: list[str] = field(default_factory=list)
    model: Any = None
    features: list[str] = field(default_factory=list)
    posts: int = 0

    def get_function(self, name: str) -> dict[str, Any]:
        if name not in self.functions:
            raise NotFoundError(f"no function {name}")
        return self.functions[name]

    def deploy(self, spec: Any, folder: Path, *, platform: str | None = None) -> dict[str, Any]:
        data = spec.to_yaml_dict()
        name = data["metadata"]["name"]
        self.deploys.append({"spec": data, "platform": platform, "files": os.listdir(folder)})
        self.functions[name] = {"name": name, "spec": data}
        return {"function": {"name": name, "version": len(self.deploys)}, "build": {"id": "b1"}}

    def follow_build(self, build_id: str) -> Iterator[str]:
        yield "built"

    def get_build(self, build_id: str) -> dict[str, Any]:
        return {"state": "succeeded"}

    def wait_ready(self, name: str, *, version: int | None = None, timeout_s: float = 0) -> Any:
        return self.functions[name]

    def _version(self) -> str:
        return self.serving.pop(0) if len(self.serving) > 1 else self.serving[0]

    def invoke(self, name: str, *, path: str = "/", method: str = "GET", **kw: Any) -> Reply:
        version = self._version()
        if method == "GET":
            body = {"version": version, "features": self.features}
            return Reply(200, {"x-model-version": version}, json.dumps(body).encode())
        self.posts += 1
        rows = pd.DataFrame(json.loads(kw["body"])["inputs"], columns=self.features)
        proba = self.model.predict_proba(rows)
        out = {"outputs": self.model.predict(rows).tolist(), "probabilities": proba.tolist()}
        return Reply(200, {"x-model-version": version}, json.dumps(out).encode())


@pytest.fixture
def champion(
    trained: Trained, env: SqlRunDB, request: pytest.FixtureRequest
) -> tuple[str, dict[str, Any]]:
    name = _model_name(request)
    best = _run("best_model", params={"train_run": trained.train_uid}).results
    _run("register", params={"model": best["model_uri"], "name": name, "alias": "champion"})
    return name, best


def _fake(monkeypatch: pytest.MonkeyPatch, fake: FakeController) -> FakeController:
    monkeypatch.setattr(steps, "_controller", lambda url="": fake)
    return fake


def _deploy(name: str, **params: Any) -> Any:
    return run_function(
        steps.deploy_by_alias,
        params={"model": name, "function": name, "timeout_s": 5, **params},
        progress=False,
    )


def test_deploy_binds_the_alias_once_then_waits_for_the_served_version(
    champion: tuple[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    name, _best = champion
    fake = _fake(monkeypatch, FakeController(serving=[f"{name}/1"]))
    run = _deploy(name, keep_requirements=False)
    assert run.state == "completed", run.error
    assert run.results["action"] == "deployed"
    assert run.results["served_version"] == f"{name}/1" == steps.served_version(name, 1)
    assert run.results["champion_version"] == 1
    (deployed,) = fake.deploys
    env = {e["name"]: e["value"] for e in deployed["spec"]["spec"]["env"]}
    assert env["MODEL_URI"] == f"models:/{name}@champion"
    assert "MODEL_VERSION" not in env  # the controller sets it from the binding
    assert deployed["platform"] == "process"
    assert "requirements" not in deployed["spec"]["spec"]
    assert "model_server.py" in deployed["files"]
    assert deployed["spec"]["metadata"]["labels"]["tickrun.io/hub-version"] == "1.3.0"

    # Deployed already: nothing to deploy; the step waits for the rollout of the champion.
    fake.serving = [f"{name}/0", f"{name}/0", f"{name}/1"]
    again = _deploy(name)
    assert again.state == "completed", again.error
    assert again.results["action"] == "unchanged" and len(fake.deploys) == 1
    assert again.results["served_version"] == f"{name}/1"


def test_deploy_keeps_requirements_by_default_and_rebinds_another_uri(
    champion: tuple[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    name, _best = champion
    fake = _fake(monkeypatch, FakeController(serving=[f"{name}/1"]))
    fake.functions[name] = {
        "name": name,
        "spec": {"spec": {"env": [{"name": "MODEL_URI", "value": "model.joblib"}]}},
    }
    run = _deploy(name)
    assert run.state == "completed", run.error
    assert run.results["action"] == "rebound"
    assert fake.deploys[0]["spec"]["spec"]["requirements"]  # the item's, as published


def test_deploy_fails_when_the_server_never_serves_the_champion(
    champion: tuple[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    name, _best = champion
    _fake(monkeypatch, FakeController(serving=["3f2a9c0d1e2b"]))  # a sha256 prefix: unbound
    run = _deploy(name, timeout_s=1)
    assert run.state == "error"
    assert f"not '{name}/1'" in str(run.error) and "3f2a9c0d1e2b" in str(run.error)


def test_deploy_fails_without_a_champion(env: SqlRunDB, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _fake(monkeypatch, FakeController(serving=["x"]))
    run = _deploy("btc-nobody")
    assert run.state == "error" and not fake.deploys


# --- score_window ------------------------------------------------------------------------------


def test_score_window_sends_the_newest_bars_and_logs_monitor_windows(
    trained: Trained, champion: tuple[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    name, best = champion
    model, info = load_model(best["model_uri"])
    fake = _fake(
        monkeypatch,
        FakeController(serving=[f"{name}/1"], model=model, features=list(info.feature_names)),
    )
    rows, batch = 120, 50
    run = run_function(
        steps.score_window,
        params={"function": name, "rows": rows, "batch": batch},
        inputs={"features": trained.features, "prices": trained.bars},
        progress=False,
    )
    assert run.state == "completed", run.error
    assert fake.posts == 3 == run.results["requests"]
    assert run.results["served_versions"] == [f"{name}/1"]
    feats = DataItem(trained.features).as_df()
    current = DataItem(run.outputs["current"]).as_df()
    reference = DataItem(run.outputs["reference"]).as_df()
    assert len(current) == rows and len(reference) == len(feats) - rows - 1
    # The newest bars, scored by the served model; the reference ends before them.
    tail = feats.iloc[-rows:]
    want = model.predict_proba(tail[list(info.feature_names)])[:, 1]
    assert np.allclose(current["probability"].to_numpy(), want)
    assert (
        pd.to_datetime(reference["timestamp"], utc=True).max()
        < pd.to_datetime(current["timestamp"], utc=True).min()
    )
    bars = DataItem(trained.bars).as_df().set_index("timestamp")["close"]
    ts = pd.to_datetime(current["timestamp"], utc=True)
    assert np.allclose(current["close"].to_numpy(), bars.loc[ts].to_numpy())
    assert {"label", "prediction"} <= set(current.columns)


def test_score_window_refuses_a_window_as_long_as_the_data(
    trained: Trained, champion: tuple[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    name, _best = champion
    _fake(monkeypatch, FakeController(serving=[f"{name}/1"]))
    n = len(DataItem(trained.features).as_df())
    run = run_function(
        steps.score_window,
        params={"function": name, "rows": n},
        inputs={"features": trained.features, "prices": trained.bars},
        progress=False,
    )
    assert run.state == "error" and "rows must be in" in str(run.error)
