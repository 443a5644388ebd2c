"""The run DB's tables as plain data: the one description both drivers build from.

:mod:`.sql` turns it into SQLAlchemy ``Table`` objects (SQLite, PostgreSQL); :mod:`.lite`, the
stdlib-``sqlite3`` recorder that ``tickrun run`` uses for the embedded SQLite file, into the
``CREATE TABLE`` statements SQLAlchemy itself would emit for SQLite, so a file made by either
is the same file (tests/unit/functions/runs/test_run_db_lite.py compares ``sqlite_master``).
Nothing here imports SQLAlchemy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ColumnType = Literal["str", "int", "float", "text"]

# SQLite spells SQLAlchemy's generic types so (String(n) → VARCHAR(n), Float → FLOAT…).
_SQLITE_TYPES = {"int": "INTEGER", "float": "FLOAT", "text": "TEXT"}
# Names SQLite's DDL must quote, as SQLAlchemy's SQLite dialect does.
_RESERVED = {"key"}


@dataclass(frozen=True)
class ColumnDef:
    name: str
    type: ColumnType
    length: int | None = None  # for "str"
    primary_key: bool = False
    index: bool = False
    nullable: bool = False


@dataclass(frozen=True)
class TableDef:
    name: str
    columns: tuple[ColumnDef, ...]

    def sqlite_ddl(self) -> list[str]:
        """``CREATE TABLE`` and ``CREATE INDEX`` statements, worded as SQLAlchemy's SQLite
        dialect words them (``IF NOT EXISTS`` added: the schema is created idempotently)."""
        lines = [f"\t{_quote(c.name)} {_sqlite_type(c)}{_null(c)}" for c in self.columns]
        keys = [_quote(c.name) for c in self.columns if c.primary_key]
        if keys:
            lines.append(f"\tPRIMARY KEY ({', '.join(keys)})")
        body = ", \n".join(lines)
        out = [f"CREATE TABLE IF NOT EXISTS {self.name} (\n{body}\n)"]
        for c in self.columns:
            if c.index:
                out.append(
                    f"CREATE INDEX IF NOT EXISTS {index_name(self, c)} "
                    f"ON {self.name} ({_quote(c.name)})"
                )
        return out


def index_name(table: TableDef, column: ColumnDef) -> str:
    """SQLAlchemy's name for ``Column(index=True)``: ``ix_<table>_<column>``."""
    return f"ix_{table.name}_{column.name}"


def _quote(name: str) -> str:
    return f'"{name}"' if name in _RESERVED else name


def _sqlite_type(c: ColumnDef) -> str:
    if c.type == "str":
        return f"VARCHAR({c.length})" if c.length else "VARCHAR"
    return _SQLITE_TYPES[c.type]


def _null(c: ColumnDef) -> str:
    return "" if c.nullable else " NOT NULL"


RUNS = TableDef(
    "tickrun_runs",
    (
        ColumnDef("uid", "str", 64, primary_key=True),
        ColumnDef("iteration", "int", primary_key=True),
        ColumnDef("project", "str", 63, index=True),
        ColumnDef("name", "str", 255),
        ColumnDef("state", "str", 16, index=True),
        ColumnDef("created_at", "float", index=True),
        ColumnDef("updated_at", "float"),
        ColumnDef("body", "text"),  # the full RunRecord as JSON
    ),
)

# A run's labels, one row each, for label queries (a pipeline step's cache key): indexed by
# (key, value). Written when a run is created and when it ends, not on every flush.
LABELS = TableDef(
    "tickrun_run_labels",
    (
        ColumnDef("key", "str", 255, primary_key=True),
        ColumnDef("value", "str", 255, primary_key=True),
        ColumnDef("uid", "str", 64, primary_key=True),
        ColumnDef("iteration", "int", primary_key=True),
    ),
)

ARTIFACTS = TableDef(
    "tickrun_artifacts",
    (
        ColumnDef("project", "str", 63, primary_key=True),
        ColumnDef("uid", "str", 64, primary_key=True),
        ColumnDef("iteration", "int", primary_key=True),
        ColumnDef("key", "str", 255, primary_key=True),
        ColumnDef("kind", "str", 16),
        ColumnDef("created_at", "float"),
        ColumnDef("body", "text"),  # the full ArtifactRecord as JSON
    ),
)

RUN_TABLES = (RUNS, LABELS, ARTIFACTS)

__all__ = ["ARTIFACTS", "LABELS", "RUNS", "RUN_TABLES", "ColumnDef", "TableDef", "index_name"]
