"""The state store on a real PostgreSQL server: the contract SQLite passes
(tests/support/store_contract.py), what only a server adds (types, errors that must not show the
password), and a controller process that keeps its functions across a restart."""

from __future__ import annotations

import json
import logging
import os
import uuid
from pathlib import Path

import pytest

from tests.integration.test_controller_harness import (
    ControllerProc,
    cleanup,
    spec_of,
    write_function,
)
from tests.peers.postgres import PostgresServer
from tests.support.store_contract import CHECKS, Check, opened, scalar
from tickrun.controller.store import Store
from tickrun.functions.errors import StoreError

pytestmark = pytest.mark.postgres


def fresh_database(postgres: PostgresServer) -> str:
    return postgres.create_database(f"store_{uuid.uuid4().hex[:12]}")


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__ for c in CHECKS])
def test_store_contract_on_postgres(check: Check, postgres: PostgresServer) -> None:
    check(fresh_database(postgres))


def test_postgres_schema_uses_the_servers_types(postgres: PostgresServer) -> None:
    url = fresh_database(postgres)
    with opened(url):
        pass

    def column(table: str, name: str) -> str:
        return str(
            scalar(
                url,
                "SELECT data_type || coalesce('(' || character_maximum_length || ')', '') "
                "FROM information_schema.columns "
                f"WHERE table_name = '{table}' AND column_name = '{name}'",
            )
        )

    assert column("replicas", "pid_start") == "bigint"
    assert column("functions", "spec") == "json"
    assert column("functions", "name") == "character varying(63)"
    assert column("functions", "updated_at") == "double precision"
    assert column("builds", "cached") == "boolean"
    assert "nextval" in str(
        scalar(
            url,
            "SELECT column_default FROM information_schema.columns "
            "WHERE table_name = 'events' AND column_name = 'id'",
        )
    )


def test_a_plain_postgresql_url_means_psycopg(postgres: PostgresServer) -> None:
    url = fresh_database(postgres).replace("postgresql+psycopg://", "postgresql://")
    with opened(url) as store:
        assert store.controller_id()
        assert store.url == url  # kept as given; only the engine is told the driver


@pytest.mark.parametrize("failure", ["wrong password", "nothing listening", "no database"])
def test_connection_errors_never_show_the_password(
    postgres: PostgresServer, failure: str, caplog: pytest.LogCaptureFixture
) -> None:
    secret = postgres.password
    url = postgres.url
    if failure == "wrong password":
        secret = "Wr0ng-" + uuid.uuid4().hex
        url = url.replace(postgres.password, secret)
        expected = "password authentication failed"
    elif failure == "nothing listening":
        url = url.replace(f":{postgres.port}/", ":1/")
        expected = "Connection refused"
    else:
        url = url.rsplit("/", 1)[0] + "/no_such_database"
        expected = 'database "no_such_database" does not exist'
    caplog.set_level(logging.DEBUG)
    with pytest.raises(StoreError) as err:
        Store(url).open()
    message = str(err.value)
    assert message.startswith("cannot open the state store (postgresql+psycopg://tickrun:***@")
    assert expected in message, message
    assert secret not in message and secret not in caplog.text


def test_a_controller_on_postgres_keeps_its_functions_across_a_restart(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    url = fresh_database(postgres)
    env = {**os.environ, "TICKRUN_DB_URL": url}
    state = tmp_path / "state"
    folder = write_function(tmp_path / "src", "pgfn")
    ctl = ControllerProc(state, env).start()
    try:
        ctl.client.deploy(spec_of(folder), folder)
        before = ctl.client.wait_ready("pgfn", timeout_s=180)
        assert json.loads(ctl.client.invoke("pgfn").body)["marker"] == "built-by-commands"
        events_before = len(ctl.client.events("pgfn"))
    finally:
        ctl.stop()
    # The state is in PostgreSQL, not in a SQLite file beside the code.
    assert not (state / "tickrun.db").exists()
    assert scalar(url, "SELECT version FROM functions WHERE name = 'pgfn'") == before["version"]

    again = ControllerProc(state, env).start()
    try:
        fn = again.client.wait_ready("pgfn", timeout_s=120)
        assert (fn["version"], fn["spec"]) == (before["version"], before["spec"])
        assert len(again.client.events("pgfn")) >= events_before  # the history is kept
        assert json.loads(again.client.invoke("pgfn").body)["marker"] == "built-by-commands"
    finally:
        cleanup(again)
    assert scalar(url, "SELECT COUNT(*) FROM functions") == 0  # the delete reached the database
    log = ctl.log_path.read_text()
    assert "controller stopping" in log and postgres.password not in log
