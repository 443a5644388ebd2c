"""Tracked runs whose artifacts live in a real MinIO server."""

from __future__ import annotations

import gzip
import uuid
from pathlib import Path

import pytest
from pydantic import SecretStr

from tests.peers import MinioServer
from tests.unit.functions.runs.jobs_for_tests import check_every_kind, ref
from tickrun.functions.artifacts import S3Settings, parse_s3_url
from tickrun.functions.runs import (
    RunState,
    SqlRunDB,
    TrackingSettings,
    load_model,
    run_function,
)
from tickrun.hub.sampledata import HOURLY, market_data

pytestmark = pytest.mark.minio

DATA = market_data(HOURLY)
EXAMPLE = Path(__file__).resolve().parents[2] / "functions/examples/train_job/train.py"


def settings_for(
    server: MinioServer, tmp_path: Path, *, secret: str | None = None, bucket: str | None = None
) -> TrackingSettings:
    s3 = S3Settings(
        endpoint=server.endpoint,
        access_key=SecretStr(server.access_key),
        secret_key=SecretStr(secret or server.secret_key),
        secure=False,
    )
    return TrackingSettings(
        home=tmp_path,
        artifact_path=f"s3://{bucket or 'runs-' + uuid.uuid4().hex[:8]}/tickrun",
        db_url=f"sqlite:///{tmp_path / 'runs.db'}",
        s3=s3,
    )


def raw_reader(server: MinioServer):  # type: ignore[no-untyped-def]
    client = server.client()

    def read(target: str) -> bytes:
        bucket, key = parse_s3_url(target)
        resp = client.get_object(bucket, key)
        try:
            return bytes(resp.read())
        finally:
            resp.close()
            resp.release_conn()

    return read


def test_every_kind_to_minio_round_trip(minio_server: MinioServer, tmp_path: Path) -> None:
    s = settings_for(minio_server, tmp_path)
    blob = tmp_path / "blob.csv.gz"
    blob.write_bytes(gzip.compress(b"a,b\n1,2\n" * 1000))
    db = SqlRunDB(s.db_url)
    run = run_function(
        ref("every_kind"), params={"blob_path": str(blob)}, project="minio", settings=s, db=db
    )
    check_every_kind(run, read_raw=raw_reader(minio_server))
    assert all(a.target.startswith(s.artifact_path + "/minio/") for a in run.artifacts)
    assert run.artifact("blob").get() == blob.read_bytes()
    assert db.get_run(run.uid).state is RunState.COMPLETED


def test_inputs_from_s3_and_store(minio_server: MinioServer, tmp_path: Path) -> None:
    s = settings_for(minio_server, tmp_path)
    bucket = f"market-{uuid.uuid4().hex[:8]}"
    client = minio_server.client()
    client.make_bucket(bucket)
    client.fput_object(bucket, "binance/btcusdt_1h.csv.gz", str(DATA))
    db = SqlRunDB(s.db_url)
    run = run_function(
        ref("reads_inputs"),
        settings=s,
        db=db,
        inputs={"data": f"s3://{bucket}/binance/btcusdt_1h.csv.gz"},
    )
    assert run.state == "completed", run.error
    assert run.results["rows"] == 72540
    assert run.results["cols"][:2] == ["timestamp", "open"]
    first = run_function(ref("every_kind"), settings=s, db=db)
    chained = run_function(
        ref("reads_inputs"),
        settings=s,
        db=db,
        inputs={"data": first.outputs["data"], "other": first.outputs["raw"]},
    )
    assert chained.state == "completed", chained.error
    assert chained.results["rows"] == 200
    assert chained.results["other_bytes"] == len(b"\x00\x01binary\xff")
    assert chained.results["other_local_exists"] is True


def test_wrong_minio_credentials_fail_the_run_clearly(
    minio_server: MinioServer, tmp_path: Path
) -> None:
    wrong = "wrong-" + uuid.uuid4().hex
    s = settings_for(minio_server, tmp_path, secret=wrong)
    db = SqlRunDB(s.db_url)
    run = run_function(ref("every_kind"), settings=s, db=db)
    assert run.state == "error"
    assert "refused the credentials" in (run.error or "")
    assert "TICKRUN_S3_SECRET_KEY" in (run.error or "")
    for text in (run.error or "", db.get_run(run.uid).model_dump_json()):
        assert wrong not in text and minio_server.secret_key not in text
    assert [r.state for r in db.list_runs(iterations=True)] == [RunState.ERROR]
    assert db.list_artifacts(uid=run.uid) == []


def test_example_train_job_sweep_on_real_data(minio_server: MinioServer, tmp_path: Path) -> None:
    s = settings_for(minio_server, tmp_path)
    db = SqlRunDB(s.db_url)
    run = run_function(
        f"{EXAMPLE}:train",
        params={"rows": 3000, "n_estimators": 20},
        inputs={"bars": str(DATA)},
        hyperparams={"max_depth": [2, 3]},
        selector="max.accuracy",
        parallel=2,
        settings=s,
        db=db,
        project="btc",
        progress=False,
    )
    assert run.state == "completed", run.error
    accs = {i.iteration: i.results["accuracy"] for i in run.iterations}
    assert run.results["best_iteration"] == max(accs, key=lambda k: (accs[k], -k))
    model, info = load_model(run.outputs["model"], db=db, s3=s.s3, roots=s.artifact_roots())
    assert info.framework == "xgboost" and info.metrics["accuracy"] == run.results["accuracy"]
    feats = run.artifact("features").as_df()
    assert list(feats.columns[1:8]) == info.feature_names
    preds = model.predict(feats[info.feature_names])
    assert set(preds) <= {0, 1} and len(preds) == len(feats)
    assert run.artifact("iteration_plot").get()[:4] == b"\x89PNG"
