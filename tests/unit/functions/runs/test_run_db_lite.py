"""The stdlib-sqlite3 recorder (LiteRunDB): the SQL run DB's contract, the same file as
SQLAlchemy makes, and runs recorded by one read by the other."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import tests.support.rundb_contract as contract
from tests.support.rundb_contract import CHECKS, Check, rec
from tickrun.functions.errors import StoreError
from tickrun.functions.runs import (
    ArtifactKind,
    ArtifactRecord,
    RunBatch,
    RunState,
    SqlRunDB,
    TrackingSettings,
    run_function,
)
from tickrun.functions.runs.db import LiteRunDB, open_recording_db
from tickrun.functions.runs.db.lite import sqlite_path
from tickrun.functions.runs.db.schema import RUN_TABLES

from .jobs_for_tests import PATH


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__ for c in CHECKS])
def test_contract_through_the_sqlite3_recorder(
    check: Check, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every check opens its DB through the contract's SqlRunDB name: make that the recorder.
    monkeypatch.setattr(contract, "SqlRunDB", LiteRunDB)
    check(f"sqlite:///{tmp_path / 'runs.db'}")


def _schema(path: Path) -> set[tuple[str, str, str, str | None]]:
    names = {t.name for t in RUN_TABLES}
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall()
    return {r for r in rows if r[2] in names}


def test_both_drivers_make_the_same_tables(tmp_path: Path) -> None:
    SqlRunDB(f"sqlite:///{tmp_path / 'sa.db'}").apply(RunBatch(runs=[rec()]))
    LiteRunDB(f"sqlite:///{tmp_path / 'lite.db'}").apply(RunBatch(runs=[rec()]))
    made_by_sqlalchemy = _schema(tmp_path / "sa.db")
    # three tables, three named indexes (project, state, created_at) and three primary keys
    assert len(made_by_sqlalchemy) == 9
    # SQLAlchemy's DDL has no IF NOT EXISTS; ours adds it (idempotent opens)
    ours = {
        (t, n, tbl, sql.replace(" IF NOT EXISTS", "") if sql else sql)
        for t, n, tbl, sql in _schema(tmp_path / "lite.db")
    }
    assert ours == made_by_sqlalchemy


def test_a_file_made_by_either_driver_opens_with_the_other(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    art = ArtifactRecord(
        project="p", uid="u1", key="model", kind=ArtifactKind.MODEL, target="/x/model.pkl"
    )
    lite = LiteRunDB(url)
    lite.apply(
        RunBatch(runs=[rec(state=RunState.COMPLETED, labels={"team": "desk"})], artifacts=[art])
    )
    sa = SqlRunDB(url)
    assert sa.get_run("u1").state is RunState.COMPLETED
    assert [r.uid for r in sa.list_runs(label="team=desk")] == ["u1"]
    assert [a.key for a in sa.list_artifacts("p", uid="u1")] == ["model"]
    sa.apply(RunBatch(runs=[rec("u2", results={"x": 1.5})]))
    assert lite.get_run("u2").results == {"x": 1.5}
    assert [a.kind for a in lite.list_artifacts(uid="u1")] == [ArtifactKind.MODEL]
    lite.close()
    sa.close()


def test_recording_db_is_the_recorder_only_for_a_plain_sqlite_file(tmp_path: Path) -> None:
    base = TrackingSettings(home=tmp_path, artifact_path=str(tmp_path), db_url="")
    file_url = f"sqlite:///{tmp_path / 'runs.db'}"
    assert isinstance(open_recording_db(base.model_copy(update={"db_url": file_url})), LiteRunDB)
    for url in ("sqlite:///:memory:", f"{file_url}?timeout=3", "postgresql://u@h/db"):
        assert sqlite_path(url) is None
    memory = open_recording_db(base.model_copy(update={"db_url": "sqlite:///:memory:"}))
    assert type(memory) is SqlRunDB
    with pytest.raises(StoreError, match="sqlite:///path"):
        LiteRunDB("sqlite:///:memory:")


def test_run_function_records_through_the_recorder(settings: TrackingSettings) -> None:
    run = run_function(f"{PATH}:sweep", params={"x": 0.5, "y": 2}, settings=settings)
    assert isinstance(run.db, LiteRunDB)
    stored = SqlRunDB(settings.db_url).get_run(run.uid)
    assert stored.state is RunState.COMPLETED
    assert stored.results == run.results and stored.results
    assert stored.labels.get("code.hash")  # the fingerprint labels were written too
    assert [r.uid for r in SqlRunDB(settings.db_url).list_runs(label="code.hash=nope")] == []


def test_an_unwritable_db_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError, match="cannot open the run DB"):
        LiteRunDB(f"sqlite:///{blocker / 'runs.db'}").apply(RunBatch(runs=[rec()]))


def test_looking_for_stale_runs_waits_for_no_writer(tmp_path: Path) -> None:
    """Every run's start looks for stale runs: with none stale, that is a read, which WAL lets
    through while another process holds the write lock (a busy sweep's flushes)."""
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    db = LiteRunDB(url)
    db.apply(RunBatch(runs=[rec("live", state=RunState.RUNNING)]))
    writer = sqlite3.connect(tmp_path / "runs.db", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    try:
        assert db.mark_stale() == []
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    # A stale one still needs the lock, and gets it once the writer is done.
    assert [r.uid for r in db.mark_stale(now=1e12)] == ["live"]
    assert db.get_run("live").state is RunState.ABORTED
