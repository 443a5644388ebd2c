"""The state store's contract (tests/support/store_contract.py) on SQLite, the default backend;
tests/integration/test_store_postgres.py runs the same checks on a real PostgreSQL."""

from __future__ import annotations

import sqlite3
import stat
import sys
from pathlib import Path

import pytest

from tests.support.store_contract import CHECKS, Check, head_revision, opened
from tickrun.controller.store import Store
from tickrun.functions.errors import StoreError


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__ for c in CHECKS])
def test_store_contract_on_sqlite(check: Check, tmp_path: Path) -> None:
    check(f"sqlite:///{tmp_path / 'tickrun.db'}")


def test_sqlite_is_in_wal_mode_with_private_files(tmp_path: Path) -> None:
    db = tmp_path / "s" / "db.sqlite"
    with opened(f"sqlite:///{db}") as store:
        store.add_event("f", "deploy", "v1")
        files = [db, db.with_name(db.name + "-wal")]
        assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        version = conn.execute("SELECT version_num FROM alembic_version").fetchone()[0]
    assert version == head_revision() == "0005"


def test_store_unusable_url_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(StoreError, match="cannot create the state folder"):
        Store(f"sqlite:///{tmp_path}/file/sub/x.db").open()
    with pytest.raises(StoreError, match="cannot open the state store"):
        Store("postgresql+nosuchdriver://x/y").open()


def test_postgres_without_psycopg_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # None in sys.modules makes `import psycopg` fail as if the package were not installed.
    for name in [m for m in sys.modules if m == "psycopg" or m.startswith("psycopg.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "psycopg", None)
    for url in ("postgresql://u:hunter2@db:5432/t", "postgresql+psycopg://u:hunter2@db/t"):
        with pytest.raises(StoreError) as err:
            Store(url).open()
        message = str(err.value)
        assert "pip install 'tickrun[postgres]'" in message, message
        assert "hunter2" not in message and "u:***@db" in message
