"""The SQL run DB on a real PostgreSQL server: the contract SQLite passes
(tests/support/rundb_contract.py, and the model registry's, tests/support/registry_contract.py),
and errors that never show the URL's password."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import pytest

from tests.peers.postgres import PostgresServer
from tests.support import registry_contract
from tests.support.rundb_contract import CHECKS, Check, opened, rec
from tickrun.controller.store import Store
from tickrun.functions.errors import StoreError
from tickrun.functions.runs import RunBatch, SqlRunDB

pytestmark = pytest.mark.postgres


def fresh_database(postgres: PostgresServer) -> str:
    return postgres.create_database(f"runs_{uuid.uuid4().hex[:12]}")


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__ for c in CHECKS])
def test_run_db_contract_on_postgres(check: Check, postgres: PostgresServer) -> None:
    check(fresh_database(postgres))


@pytest.mark.parametrize(
    "check", registry_contract.CHECKS, ids=[c.__name__ for c in registry_contract.CHECKS]
)
def test_model_registry_contract_on_postgres(
    check: registry_contract.Check, postgres: PostgresServer, tmp_path: Path
) -> None:
    with opened(fresh_database(postgres)) as db:
        check(db, str(tmp_path / "store"))


def test_runs_sit_beside_the_controllers_tables(postgres: PostgresServer) -> None:
    """The controller serves /api/runs from its own TICKRUN_DB_URL: one database, both schemas."""
    url = fresh_database(postgres)
    store = Store(url)
    store.open()
    try:
        with opened(url) as db:
            db.apply(RunBatch(runs=[rec("r1")]))
            assert db.get_run("r1").project == "p"
        store.add_event("f", "deploy", "v1")
        assert [e.message for e in store.list_events("f")] == ["v1"]
    finally:
        store.close()


def test_a_wrong_password_is_a_store_error_without_it(
    postgres: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "Wr0ng-" + uuid.uuid4().hex
    db = SqlRunDB(postgres.url.replace(postgres.password, secret))
    caplog.set_level(logging.DEBUG)
    with pytest.raises(StoreError) as err:
        db.apply(RunBatch(runs=[rec("r1")]))
    message = str(err.value)
    assert message.startswith("cannot open the run DB (postgresql+psycopg://tickrun:***@")
    assert "password authentication failed" in message, message
    assert secret not in message and secret not in caplog.text
