from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from openapi_spec_validator import validate

from tests.support.controller_rows import function_row, replica_row
from tickrun.controller.app import create_app
from tickrun.controller.openapi import document
from tickrun.controller.settings import Settings
from tickrun.controller.store import Store
from tickrun.functions.errors import NotFoundError, StoreError


def test_store_migrates_in_wal_mode_and_survives_reopen(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's' / 'db.sqlite'}"
    store = Store(url)
    store.open()
    cid = store.controller_id()
    store.save_function(function_row("f"))
    store.save_replica(replica_row("r1", "f"))
    store.add_event("f", "deploy", "v1")
    store.close()

    conn = sqlite3.connect(tmp_path / "s" / "db.sqlite")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT version_num FROM alembic_version").fetchone()[0] == "0002"
    conn.close()

    again = Store(url)
    again.open()  # migrating an up-to-date DB is a no-op
    assert again.controller_id() == cid
    assert again.get_function("f").state == "ready"
    assert [r.id for r in again.list_replicas("f")] == ["r1"]
    assert [e.message for e in again.list_events("f")] == ["v1"]
    again.delete_function("f")
    assert again.list_replicas() == []
    with pytest.raises(NotFoundError, match="'f' not found"):
        again.get_function("f")
    again.close()


def test_upgrade_from_0001_keeps_rows(tmp_path: Path) -> None:
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine, text

    from tickrun.controller.store.db import MIGRATIONS

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
        conn.execute(
            text(
                "INSERT INTO functions (name, spec, platform, version, state, message, code_hash, "
                'created_at, updated_at) VALUES (\'old\', \'{"metadata": {"name": "old"}}\', '
                "'process', 3, 'ready', '', 'c', 0, 0)"
            )
        )
    engine.dispose()
    store = Store(url)
    store.open()
    row = store.get_function("old")
    assert row.version == 3 and row.gateway_port is None
    store.update_function("old", gateway_port=23456)
    assert store.get_function("old").gateway_port == 23456
    store.close()


def test_store_unusable_url_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(StoreError, match="cannot create the state folder"):
        Store(f"sqlite:///{tmp_path}/file/sub/x.db").open()
    with pytest.raises(StoreError, match="cannot open the state store"):
        Store("postgresql+nosuchdriver://x/y").open()


def test_openapi_document_is_valid_and_covers_every_route(tmp_path: Path) -> None:
    doc = document()
    validate(doc)
    # The whole app, not only api.add_routes: routes added in app.py (/api/version, /fn/…)
    # were missed before. Building it does no I/O.
    settings = Settings(state_dir=tmp_path / "state", cache_dir=tmp_path / "cache", token="t")
    app = create_app(settings)
    # Mounted from other packages, which describe them themselves.
    foreign = ("/api/runs", "/api/artifacts", "/api/hub")
    seen = set()
    for route in app.router.routes():
        if route.method == "HEAD":  # aiohttp adds HEAD beside every GET
            continue
        info = route.resource.get_info() if route.resource else {}
        path = str(info.get("path") or info.get("formatter"))
        if path.startswith(foreign):
            continue
        path = path.replace("{tail}", "{path}")  # the gateway's catch-all, named for readers
        seen.add(path)
        assert path in doc["paths"], f"{path} missing from the OpenAPI document"
        methods = doc["paths"][path]
        if route.method == "*":
            assert {"get", "post"} <= set(methods), f"{path}: invocation methods undocumented"
        else:
            assert route.method.lower() in methods, f"{route.method} {path} undocumented"
    assert {"/api/version", "/healthz", "/fn/{name}"} <= seen
    assert set(doc["paths"]) == seen, "the document describes routes the app does not have"
    assert doc["components"]["schemas"]["DeployRequest"]["additionalProperties"] is False
