"""Job handlers the run tests load by file path (``jobs_for_tests.py:fn``), also in workers."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import pandas as pd

PATH = os.path.abspath(__file__)


def ref(name: str) -> str:
    return f"{PATH}:{name}"


def frame() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(200, 3))
    return pd.DataFrame(
        {
            "f0": x[:, 0],
            "f1": x[:, 1],
            "f2": x[:, 2],
            "label": (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int),
            "name": [f"row{i}" for i in range(200)],
        }
    )


def every_kind(context: Any, blob_path: str = "", n_estimators: int = 5) -> dict[str, Any]:
    """Logs one artifact of every kind, plus both model frameworks."""
    import xgboost
    from matplotlib.figure import Figure
    from sklearn.linear_model import LogisticRegression

    df = frame()
    feats = ["f0", "f1", "f2"]
    context.log_artifact("raw", b"\x00\x01binary\xff")
    context.log_artifact("text", "hello tickrun", format="md")
    if blob_path:
        context.log_artifact("blob", local_path=blob_path)
    fig = Figure()
    fig.subplots().plot([1, 2, 3], [3, 1, 2])
    context.log_artifact("curve", fig)
    context.log_artifact("table", df.head(50))
    context.log_dataset("data", df, format="parquet")
    context.log_dataset("data_csv", df, format="csv")
    sk = LogisticRegression().fit(df[feats], df["label"])
    context.log_model(
        "sk_model",
        sk,
        metrics={"accuracy": sk.score(df[feats], df["label"])},
        labels={"algo": "logreg"},
        extra_data={"notes": "trained on frame()"},
    )
    xg = xgboost.XGBClassifier(n_estimators=n_estimators, max_depth=2, n_jobs=1)
    xg.fit(df[feats], df["label"])
    context.log_model("xgb_model", xg, feature_names=feats)
    booster = xg.get_booster()
    context.log_model("xgb_booster", booster, framework="xgboost", model_format="ubj")
    context.set_label("kind", "every")
    context.log_result("rows", len(df))
    return {"done": True}


def sweep(context: Any, x: float = 0.0, y: float = 0.0, fail_on: float = -999.0) -> None:
    if x == fail_on:
        raise RuntimeError(f"x={x} is cursed")
    context.log_result("score", -((x - 2) ** 2) - (y - 1) ** 2)
    context.log_result("loss", (x - 2) ** 2 + (y - 1) ** 2)
    context.log_artifact("note", f"x={x} y={y}")


def crashes(context: Any, x: float = 0.0, crash_on: float = -999.0) -> None:
    """Kills its own process (no cleanup, as kill -9 or the OOM killer would) when x == crash_on."""
    if x == crash_on:
        os._exit(1)
    context.log_result("score", x)


def peeks(context: Any, x: float = 0.0) -> None:
    """Logs the state of every iteration of its sweep as the run DB has it right now."""
    from tickrun.functions.runs.db import open_db

    db = open_db()
    try:
        runs = db.list_runs(uid=context.uid, limit=100)
    finally:
        db.close()
    context.log_result("seen", {str(r.iteration): r.state.value for r in runs})
    context.log_result("score", x)


def reads_inputs(context: Any, data: Any = None, other: Any = None) -> None:
    df = data.as_df()
    context.log_result("rows", len(df))
    context.log_result("cols", list(df.columns))
    if other is not None:
        context.log_result("other_bytes", len(other.get()))
        context.log_result("other_local_exists", os.path.exists(other.local()))


def sleeps(context: Any, seconds: float = 60.0, marker: str = "") -> None:
    context.log_result("started", True)
    context.commit()
    if marker:
        with open(marker, "w") as f:
            f.write(context.uid)
    time.sleep(seconds)


def noop(context: Any) -> None:
    return None


def check_every_kind(run: Any, read_raw: Any = None) -> None:
    """Assert that what ``every_kind`` logged reads back byte-exact and as equal objects.

    ``read_raw(target)`` reads an artifact's bytes straight from the backend (bypassing
    tickrun), to prove the bytes landed where the record says.
    """
    import hashlib

    import xgboost
    from pandas.testing import assert_frame_equal
    from sklearn.linear_model import LogisticRegression

    from tickrun.functions.runs import load_model

    assert run.state == "completed", run.error
    kinds = {a.key: a.kind.value for a in run.artifacts}
    expected = {
        "raw": "file",
        "text": "file",
        "blob": "file",
        "curve": "plot",
        "table": "table",
        "data": "dataset",
        "data_csv": "dataset",
        "sk_model": "model",
        "sk_model-notes": "file",
        "xgb_model": "model",
        "xgb_booster": "model",
    }
    if not run.record.params.get("blob_path"):
        del expected["blob"]
    assert kinds == expected
    for rec in run.artifacts:
        data = run.artifact(rec.key).get()
        assert len(data) == rec.size_bytes
        assert hashlib.sha256(data).hexdigest() == rec.sha256
        assert f"/{run.project}/{run.uid}/0/{rec.key}." in rec.target
        if read_raw is not None:
            assert read_raw(rec.target) == data
    assert run.artifact("raw").get() == b"\x00\x01binary\xff"
    assert run.artifact("text").get("utf-8") == "hello tickrun"
    assert run.artifact_record("text").target.endswith("text.md")
    assert run.artifact("curve").get()[:8] == b"\x89PNG\r\n\x1a\n"
    df = frame()
    assert_frame_equal(run.artifact("table").as_df(), df.head(50))
    assert_frame_equal(run.artifact("data").as_df(), df)
    assert_frame_equal(run.artifact("data_csv").as_df(), df)
    ds = run.artifact_record("data")
    assert ds.meta["rows"] == 200 and ds.meta["schema"]["label"] == "int64"
    assert ds.meta["stats"]["f0"]["count"] == 200
    assert len(ds.preview) == 20 and ds.preview[0]["name"] == "row0"
    feats = ["f0", "f1", "f2"]
    sk, info = load_model(run.outputs["sk_model"], db=run.db, s3=run.s3, roots=run.roots)
    ref_model = LogisticRegression().fit(df[feats], df["label"])
    assert (sk.predict_proba(df[feats]) == ref_model.predict_proba(df[feats])).all()
    assert info.framework == "sklearn" and info.feature_names == feats
    assert info.metrics["accuracy"] > 0.9
    assert info.labels == {"algo": "logreg"}
    assert set(info.extra_data) == {"notes"}
    assert run.artifact_record("sk_model").format == "joblib"
    xg, xinfo = load_model(run.outputs["xgb_model"], db=run.db, s3=run.s3, roots=run.roots)
    assert isinstance(xg, xgboost.XGBClassifier)
    ref_xg = xgboost.XGBClassifier(n_estimators=5, max_depth=2, n_jobs=1)
    ref_xg.fit(df[feats], df["label"])
    assert (xg.predict_proba(df[feats]) == ref_xg.predict_proba(df[feats])).all()
    assert xinfo.framework == "xgboost" and xinfo.feature_names == feats
    assert run.artifact_record("xgb_model").format == "json"
    booster, binfo = load_model(run.outputs["xgb_booster"], db=run.db, s3=run.s3, roots=run.roots)
    assert isinstance(booster, xgboost.Booster)
    assert run.artifact_record("xgb_booster").format == "ubj"
    pred = booster.predict(xgboost.DMatrix(df[feats]))
    assert abs(pred - ref_xg.predict_proba(df[feats])[:, 1]).max() < 1e-6
    assert run.record.labels["kind"] == "every"
    assert run.results == {"rows": 200, "done": True}
