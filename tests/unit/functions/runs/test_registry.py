"""The model registry end to end on the shipped BTCUSDT data: hub items' tracked runs registered
as versions, models:/ URIs resolved by load_model, DataItem and a batch_predict run, the Python
names on ``tickrun``, and the ``tickrun models`` CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import tickrun
from tests.support.registry_contract import logged_model
from tickrun.cli import main
from tickrun.functions.errors import BadRequestError, ConflictError, NotFoundError
from tickrun.functions.runs import (
    DataItem,
    SqlRunDB,
    TrackingSettings,
    load_model,
    open_db,
    run_function,
)
from tickrun.functions.runs import registry as registry_module
from tickrun.hub import import_function
from tickrun.hub.sampledata import market_data

LOGIT = {"model_class": "sklearn.linear_model.LogisticRegression", "scale": True}
XGB = {"model_class": "xgboost.XGBClassifier", "CLASS_n_estimators": 20, "CLASS_max_depth": 2}


@pytest.fixture
def trained(home: Path, tmp_path: Path) -> dict[str, Any]:
    """market_features 1.2 over the last 3000 hourly bars, then auto_trainer 1.1 twice."""
    bars = tmp_path / "bars.csv"
    pd.read_csv(market_data()).iloc[-3000:].to_csv(bars, index=False)
    feats = import_function("hub://market_features:1.2").run(
        inputs={"dataset": str(bars)}, progress=False
    )
    assert feats.state == "completed", feats.error
    runs = []
    for params in (LOGIT, XGB):
        run = import_function("hub://auto_trainer:1.1.0").run(
            "train",
            params={"plots": False, **params},
            inputs={"dataset": feats.outputs["features"]},
            progress=False,
        )
        assert run.state == "completed", run.error
        runs.append(run)
    return {"features": feats, "runs": runs}


def test_registered_versions_resolve_for_models_and_batch_predict(
    trained: dict[str, Any],
) -> None:
    feats, (logit, xgb) = trained["features"], trained["runs"]
    v1 = tickrun.register_model(
        logit.outputs["model"],
        "btc-updown",
        description="logistic regression, hourly",
        tags={"algo": "logit"},
        aliases=["champion"],
    )
    v2 = tickrun.register_model(
        xgb.outputs["model"], "btc-updown", tags={"algo": "xgb"}, aliases=["challenger"]
    )
    assert (v1.uri, v2.uri) == ("models:/btc-updown/1", "models:/btc-updown/2")

    # Lineage: the run, its hub item, the dataset it was trained on with the dataset's digest.
    db = open_db()
    lin = v2.lineage
    assert (lin.run_uid, lin.run_project) == (xgb.uid, xgb.record.project)
    assert (lin.hub_item, lin.hub_version, lin.hub_handler) == ("auto_trainer", "1.1.0", "train")
    assert lin.params["model_class"] == "xgboost.XGBClassifier"
    [dataset] = lin.datasets
    rec = db.get_artifact(feats.record.project, feats.uid, 0, "features")
    assert (dataset.name, dataset.uri, dataset.kind) == (
        "dataset",
        feats.outputs["features"],
        "dataset",
    )
    assert dataset.sha256 == rec.sha256 and len(rec.sha256) == 64
    assert v2.metrics["auc"] == pytest.approx(xgb.results["auc"])

    # models:/ URIs load the same model the store:// URI does.
    df = feats.artifact("features").as_df()
    champion, info = load_model("models:/btc-updown@champion")
    direct, direct_info = load_model(logit.outputs["model"])
    cols = info.feature_names
    assert cols and cols == direct_info.feature_names
    np.testing.assert_array_equal(champion.predict(df[cols]), direct.predict(df[cols]))
    assert info.registry_uri == "models:/btc-updown/1" and info.sha256 == direct_info.sha256
    assert load_model("models:/btc-updown/latest")[1].registry_uri == "models:/btc-updown/2"
    item = DataItem("models:/btc-updown@challenger")
    assert item.meta is not None and item.meta.uri == xgb.outputs["model"]
    assert item.model_version is not None and item.model_version.version == 2

    # Promote: the alias moves, and what it names changes with it.
    tickrun.set_alias("btc-updown", "champion", 2)
    assert tickrun.get_model_version("models:/btc-updown@champion").version == 2
    assert tickrun.get_model_version("btc-updown", "challenger").aliases == [
        "challenger",
        "champion",
    ]
    new_champion, new_info = load_model("models:/btc-updown@champion")
    assert new_info.registry_uri == "models:/btc-updown/2"

    # batch_predict takes the registry URI as its model.
    scored = import_function("hub://batch_predict").run(
        params={"model": "models:/btc-updown@champion", "keep_columns": "timestamp"},
        inputs={"dataset": feats.outputs["features"]},
        progress=False,
    )
    assert scored.state == "completed", scored.error
    out = DataItem(scored.outputs["prediction"]).as_df()
    np.testing.assert_array_equal(
        out["predicted_label"].to_numpy(), new_champion.predict(df[new_info.feature_names])
    )
    assert scored.results["rows"] == len(df)


def test_python_api_names_and_refusals(home: Path, settings: TrackingSettings) -> None:
    for name in registry_module.__all__:
        assert getattr(tickrun, name) is getattr(registry_module, name)
    db = SqlRunDB(settings.db_url)
    uri = logged_model(db, settings.artifact_path, "r1")
    mv = tickrun.register_model(uri, "m", aliases=["champion"], db=db)
    assert tickrun.resolve_model_uri("models:/m@champion", db=db) == uri
    assert tickrun.resolve_model_uri(uri, db=db) == uri
    with pytest.raises(BadRequestError):
        tickrun.get_model_version("models:/m/1", 1, db=db)
    with pytest.raises(ConflictError):
        tickrun.delete_model_version("m", mv.version, db=db)
    tickrun.delete_alias("m", "champion", db=db)
    tickrun.delete_model_version("m", mv.version, db=db)
    assert tickrun.list_model_versions("m", db=db) == []
    assert [m.name for m in tickrun.list_models(db=db)] == ["m"]
    with pytest.raises(NotFoundError):
        DataItem("models:/m/latest", db=db).target
    with pytest.raises(BadRequestError):
        DataItem("models:/m@latest", db=db).target
    db.close()


def _read_input(context: Any, model: DataItem | None = None) -> dict[str, Any]:
    assert model is not None and model.meta is not None and model.model_version is not None
    return {"registry": model.model_version.uri, "artifact": model.meta.uri}


def test_a_run_takes_a_models_uri_as_input(home: Path, settings: TrackingSettings) -> None:
    db = SqlRunDB(settings.db_url)
    uris = [logged_model(db, settings.artifact_path, f"r{i}") for i in (1, 2)]
    tickrun.register_model(uris[0], "m", aliases=["champion"], db=db)
    tickrun.register_model(uris[1], "m", db=db)
    run = run_function(
        _read_input,
        inputs={"model": "models:/m@champion"},
        settings=settings,
        db=db,
        progress=False,
    )
    assert run.state == "completed", run.error
    assert run.results == {"registry": "models:/m/1", "artifact": uris[0]}
    assert run.record.inputs == {"model": "models:/m@champion"}
    db.close()


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def test_models_cli(
    home: Path, settings: TrackingSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    db = SqlRunDB(settings.db_url)
    uris = [logged_model(db, settings.artifact_path, f"r{i}") for i in (1, 2)]
    db.close()
    code, out, _ = _cli(
        ["models", "register", uris[0], "btc", "--tag", "algo=logit", "-a", "champion"], capsys
    )
    assert code == 0 and out.strip() == f"registered models:/btc/1 → {uris[0]} (aliases: champion)"
    code, out, _ = _cli(["models", "register", uris[1], "btc", "-d", "second"], capsys)
    assert code == 0 and "models:/btc/2" in out
    code, out, _ = _cli(["models", "list"], capsys)
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "LATEST", "VERSIONS", "ALIASES", "UPDATED"]
    assert lines[1].split()[:4] == ["btc", "2", "2", "champion→1"]
    code, out, _ = _cli(["models", "alias", "btc", "champion", "2"], capsys)
    assert code == 0 and out.strip() == f"models:/btc@champion → models:/btc/2 ({uris[1]})"
    code, out, _ = _cli(["models", "show", "models:/btc@champion"], capsys)
    assert out.splitlines()[0] == f"models:/btc/2  →  {uris[1]}"
    assert "  run: p/r2 iteration 0 (train-r2, completed)" in out.splitlines()
    code, out, _ = _cli(["models", "show", "btc", "--tag", "algo=logit"], capsys)
    rows = out.splitlines()[2:]
    assert [r.split()[0] for r in rows] == ["1"]
    code, out, err = _cli(["models", "delete", "btc", "2"], capsys)
    assert code == 2 and "champion" in err, "an aliased version is not deleted"
    code, out, err = _cli(["models", "alias", "btc", "latest", "1"], capsys)
    assert code == 2 and "bad alias" in err
    code, out, _ = _cli(["models", "delete", "btc", "2", "--force"], capsys)
    assert code == 0 and out.strip() == "deleted models:/btc/2"
    code, out, _ = _cli(["models", "show", "btc", "--json"], capsys)
    shown = json.loads(out)
    assert shown["aliases"] == {} and [v["version"] for v in shown["versions_list"]] == [1]
    code, _, err = _cli(["models", "show", "nope"], capsys)
    assert code == 2 and "not found" in err
