"""The model registry's contract (tests/support/registry_contract.py) on a SQLite run DB and on
the HTTP run DB against the runs API (with /api/models) served over real loopback HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlalchemy import create_engine, inspect

from tests.support.registry_contract import CHECKS, Check, logged_model, register
from tickrun.functions.artifacts import ArtifactRoots
from tickrun.functions.runs import HttpRunDB, RunRecord, SqlRunDB
from tickrun.functions.runs.api import add_routes
from tickrun.functions.runs.db.sql import metadata, runs_table


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__ for c in CHECKS])
def test_registry_contract_on_sqlite(check: Check, tmp_path: Path) -> None:
    db = SqlRunDB(f"sqlite:///{tmp_path / 'runs.db'}")
    try:
        check(db, str(tmp_path / "store"))
    finally:
        db.close()


def test_a_run_db_made_before_the_registry_gains_its_tables(tmp_path: Path) -> None:
    """An older run DB (the run tables only) gains the registry's tables on its next open,
    beside the runs it holds."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    run = RunRecord(uid="before", project="p")
    engine = create_engine(url)
    metadata.create_all(engine)  # what an older tickrun created
    with engine.begin() as conn:
        conn.execute(
            runs_table.insert().values(
                uid=run.uid,
                iteration=0,
                project=run.project,
                name="",
                state=run.state.value,
                created_at=run.created_at,
                updated_at=run.updated_at,
                body=run.model_dump_json(),
            )
        )
    assert not {t for t in inspect(engine).get_table_names() if "model" in t}
    engine.dispose()
    db = SqlRunDB(url)
    try:
        uri = logged_model(db, str(tmp_path / "store"), "r")
        assert register(db, uri, "m") == 1
        assert db.get_run("before") == run
        tables = set(inspect(db.engine).get_table_names())
        assert {"tickrun_models", "tickrun_model_versions", "tickrun_model_aliases"} <= tables
    finally:
        db.close()


@pytest.fixture
async def api_url(tmp_path: Path) -> AsyncIterator[str]:
    db = SqlRunDB(f"sqlite:///{tmp_path / 'server.db'}")
    app = web.Application()
    add_routes(app, db, ArtifactRoots.of([tmp_path / "store"]))
    srv = TestServer(app, host="127.0.0.1")
    await srv.start_server()
    try:
        yield str(srv.make_url("")).rstrip("/")
    finally:
        await srv.close()
        db.close()


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__ for c in CHECKS])
async def test_registry_contract_over_http(check: Check, api_url: str, tmp_path: Path) -> None:
    client = HttpRunDB(api_url)
    try:
        await asyncio.to_thread(check, client, str(tmp_path / "store"))
    finally:
        client.close()
