from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from tickrun.functions.artifacts import ArtifactKeyError, LocalArtifactStore
from tickrun.functions.errors import BadRequestError, HandlerLoadError
from tickrun.functions.runs import (
    DataItem,
    RunContext,
    SqlRunDB,
    TrackingSettings,
    parse_store_uri,
    run_function,
    store_uri,
)

from .jobs_for_tests import check_every_kind, frame, ref


def test_every_artifact_kind_local_round_trip(
    settings: TrackingSettings, db: SqlRunDB, tmp_path: Path
) -> None:
    blob = tmp_path / "blob.csv.gz"
    blob.write_bytes(gzip.compress(b"a,b\n1,2\n" * 1000))
    run = run_function(
        ref("every_kind"), params={"blob_path": str(blob)}, project="unit", settings=settings, db=db
    )
    check_every_kind(run, read_raw=lambda target: Path(target).read_bytes())
    assert run.artifact_record("blob").format == "csv.gz"
    assert run.artifact("blob").get() == blob.read_bytes()
    assert_frame_equal(run.artifact("blob").as_df(), pd.read_csv(blob))
    # Layout: <artifact_path>/<project>/<uid>/<iteration>/<key>.<ext>
    root = Path(settings.artifact_path)
    assert (root / "unit" / run.uid / "0" / "data.parquet").is_file()
    # The DB has the same picture after the run (records were flushed at the end).
    stored = db.get_run(run.uid)
    assert stored.state.value == "completed"
    assert stored.results == run.results
    assert {a.key for a in db.list_artifacts("unit", uid=run.uid)} == {a.key for a in run.artifacts}


def test_params_injected_by_name_and_coerced(settings: TrackingSettings, db: SqlRunDB) -> None:
    seen: dict[str, Any] = {}

    def job(
        context: RunContext, lr: float = 0.1, depth: int = 2, flag: bool = False, **rest: Any
    ) -> float:
        seen.update(
            lr=lr,
            depth=depth,
            flag=flag,
            rest=rest,
            via_get=context.get_param("lr"),
            missing=context.get_param("zz", 7),
        )
        return lr * depth

    run = run_function(
        job,
        params={"lr": "0.5", "depth": "3", "flag": "true", "extra": 1},
        settings=settings,
        db=db,
    )
    assert run.state == "completed", run.error
    assert seen == {
        "lr": 0.5,
        "depth": 3,
        "flag": True,
        "rest": {"extra": 1},
        "via_get": "0.5",
        "missing": 7,
    }
    assert run.results == {"return": 1.5}


def test_handler_error_is_recorded(settings: TrackingSettings, db: SqlRunDB) -> None:
    def job(context: RunContext) -> None:
        context.log_result("before", 1)
        raise ValueError("bad things")

    run = run_function(job, settings=settings, db=db)
    assert run.state == "error"
    assert run.error == "ValueError: bad things"
    rec = db.get_run(run.uid)
    assert rec.state.value == "error" and rec.error == "ValueError: bad things"
    assert rec.results == {"before": 1}
    assert rec.ended_at is not None


def test_inputs_local_csv_parquet_json_gz_and_store(
    settings: TrackingSettings, db: SqlRunDB, tmp_path: Path
) -> None:
    df = frame()
    paths = {
        "csv": tmp_path / "d.csv",
        "csv.gz": tmp_path / "d.csv.gz",
        "parquet": tmp_path / "d.parquet",
        "json": tmp_path / "d.json",
        "json.gz": tmp_path / "d.json.gz",
    }
    df.to_csv(paths["csv"], index=False)
    df.to_csv(paths["csv.gz"], index=False, compression="gzip")
    df.to_parquet(paths["parquet"], index=False)
    df.to_json(paths["json"], orient="records")
    df.to_json(paths["json.gz"], orient="records", compression="gzip")
    for p in paths.values():
        assert_frame_equal(DataItem(p).as_df(), df, check_dtype=False)
    first = run_function(ref("every_kind"), settings=settings, db=db)
    run = run_function(
        ref("reads_inputs"),
        settings=settings,
        db=db,
        inputs={"data": first.outputs["data"], "other": str(paths["csv.gz"])},
    )
    assert run.state == "completed", run.error
    assert run.results["rows"] == 200
    assert run.results["cols"] == list(df.columns)
    assert run.results["other_bytes"] == paths["csv.gz"].stat().st_size
    assert run.results["other_local_exists"] is True
    assert run.record.inputs["data"] == first.outputs["data"]


def test_store_uri_scheme() -> None:
    assert store_uri("p", "u1", "model") == "store://p/u1/model"
    assert store_uri("p", "u1", "model", 3) == "store://p/u1/3/model"
    assert parse_store_uri("store://p/u1/3/model") == ("p", "u1", 3, "model")
    assert parse_store_uri("store://p/u1/model") == ("p", "u1", 0, "model")
    for bad in ("store://p/model", "store://p/u/x/y/z", "s3://a/b", "store://p//k"):
        with pytest.raises(Exception, match="store"):
            parse_store_uri(bad)


def test_store_uri_of_missing_artifact_is_not_found(
    settings: TrackingSettings, db: SqlRunDB
) -> None:
    item = DataItem("store://default/nosuchrun/model", db=db)
    with pytest.raises(Exception, match="not found") as exc:
        item.get()
    assert getattr(exc.value, "status", None) == 404


@pytest.mark.parametrize("key", ["../evil", "a/b", "/abs", "..", ""])
def test_traversal_artifact_key_refused(settings: TrackingSettings, db: SqlRunDB, key: str) -> None:
    errors: list[BaseException] = []

    def job(context: RunContext) -> None:
        try:
            context.log_artifact(key, b"x")
        except ArtifactKeyError as exc:
            errors.append(exc)
            raise

    run = run_function(job, settings=settings, db=db)
    assert run.state == "error"
    assert len(errors) == 1 and errors[0].status == 400  # type: ignore[attr-defined]
    root = Path(settings.artifact_path)
    assert not root.exists() or all(".." not in str(p) for p in root.rglob("*"))
    assert not (root.parent / "evil.bin").exists()


def test_log_artifact_argument_errors(settings: TrackingSettings, db: SqlRunDB) -> None:
    messages: list[str] = []

    def job(context: RunContext) -> None:
        for call in (
            lambda: context.log_artifact("k"),
            lambda: context.log_artifact("k", b"x", local_path="/etc/hosts"),
            lambda: context.log_artifact("k", object()),
            lambda: context.log_dataset("k", [1, 2]),
            lambda: context.log_model("k", object()),
        ):
            try:
                call()
            except Exception as exc:  # noqa: BLE001
                messages.append(str(exc))

    run = run_function(job, settings=settings, db=db)
    assert run.state == "completed"
    assert len(messages) == 5
    assert "exactly one of body= or local_path=" in messages[0]
    assert "cannot store a object" in messages[2]
    assert "framework" in messages[4]


def test_handler_from_file_reference_errors(
    settings: TrackingSettings, db: SqlRunDB, tmp_path: Path
) -> None:
    with pytest.raises(HandlerLoadError, match="does not exist"):
        run_function(str(tmp_path / "nope.py") + ":f", settings=settings, db=db)
    bad = tmp_path / "bad.py"
    bad.write_text("def f(context):\n    pass\n")
    with pytest.raises(HandlerLoadError, match="no function 'g'"):
        run_function(f"{bad}:g", settings=settings, db=db)


def test_async_handler_and_labels(settings: TrackingSettings, db: SqlRunDB) -> None:
    async def job(context: RunContext, n: int = 1) -> dict[str, int]:
        context.set_label("team", "quant")
        return {"n2": n * 2}

    run = run_function(job, params={"n": 4}, labels={"owner": "me"}, settings=settings, db=db)
    assert run.state == "completed", run.error
    assert run.results == {"n2": 8}
    labels = db.get_run(run.uid).labels
    # run_function adds what code ran (codehash.py): this test file's hash, no requirements.
    assert labels == {
        "owner": "me",
        "team": "quant",
        "code.hash": hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
        "requirements.lock": hashlib.sha256(b"").hexdigest(),
    }


def test_settings_defaults_and_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = {
        "TICKRUN_HOME": str(tmp_path),
        "TICKRUN_TOKEN": "tok-secret-1",
        "TICKRUN_CONTROLLER_URL": "http://127.0.0.1:1/",
    }
    s = TrackingSettings.from_env(env)
    assert s.artifact_path == str(tmp_path / "artifacts")
    assert s.db_url == f"sqlite:///{tmp_path / 'runs.db'}"
    assert s.controller_url == "http://127.0.0.1:1"
    assert "tok-secret-1" not in repr(s)
    s2 = TrackingSettings.from_env(
        {**env, "TICKRUN_DB_URL": "sqlite:////tmp/x.db", "TICKRUN_ARTIFACT_PATH": "s3://b/p"}
    )
    assert s2.controller_url is None and s2.artifact_path == "s3://b/p"


def test_results_are_batched_not_written_per_call(
    settings: TrackingSettings, store: LocalArtifactStore
) -> None:
    class CountingDB(SqlRunDB):
        writes = 0

        def apply(self, batch: Any) -> None:
            CountingDB.writes += 1
            super().apply(batch)

    db = CountingDB(settings.db_url)

    def job(context: RunContext) -> None:
        for i in range(5000):
            context.log_result(f"m{i % 50}", i)

    run = run_function(job, settings=settings, db=db, store=store)
    assert run.state == "completed"
    assert run.results["m49"] == 4999
    # created, running, final; maybe one interval flush — never one write per result.
    assert CountingDB.writes <= 5
    assert os.path.exists(settings.db_url.removeprefix("sqlite:///"))


def test_bad_project_name_is_a_bad_request(settings: TrackingSettings, db: SqlRunDB) -> None:
    with pytest.raises(BadRequestError, match="project"):
        run_function(ref("noop"), project="../etc", settings=settings, db=db)
    assert db.list_runs() == []


def test_sys_exit_in_handler_ends_only_the_run(settings: TrackingSettings, db: SqlRunDB) -> None:
    import sys

    def job(context: RunContext) -> None:
        sys.exit(3)

    run = run_function(job, settings=settings, db=db)
    assert run.state == "error" and run.error == "handler called sys.exit(3)"


async def test_async_handler_from_inside_an_event_loop(
    settings: TrackingSettings, db: SqlRunDB
) -> None:
    async def job(context: RunContext) -> int:
        return 42

    run = run_function(job, settings=settings, db=db)
    assert run.state == "completed", run.error
    assert run.results == {"return": 42}


def test_dataset_meta_kept_beside_statistics(settings: TrackingSettings, db: SqlRunDB) -> None:
    def job(context: RunContext) -> None:
        context.log_dataset(
            "features",
            pd.DataFrame({"x": [1.0, 2.0], "label": [0, 1]}),
            meta={"targets": ["label"], "label_horizon_bars": 3},
        )

    run = run_function(job, settings=settings, db=db)
    assert run.state == "completed"
    meta = run.artifact_record("features").meta
    assert meta["targets"] == ["label"]
    assert meta["label_horizon_bars"] == 3
    assert meta["rows"] == 2  # the statistics are still there
    stored = db.list_artifacts("default", uid=run.uid)[0].meta
    assert stored["targets"] == ["label"]
    assert run.artifact("features").meta is not None
