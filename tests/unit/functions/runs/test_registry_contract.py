"""The model registry's contract (tests/support/registry_contract.py) on a SQLite run DB and on
the HTTP run DB against the runs API (with /api/models) served over real loopback HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.support.registry_contract import CHECKS, Check
from tickrun.functions.artifacts import ArtifactRoots
from tickrun.functions.runs import HttpRunDB, SqlRunDB
from tickrun.functions.runs.api import add_routes


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__ for c in CHECKS])
def test_registry_contract_on_sqlite(check: Check, tmp_path: Path) -> None:
    db = SqlRunDB(f"sqlite:///{tmp_path / 'runs.db'}")
    try:
        check(db, str(tmp_path / "store"))
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
