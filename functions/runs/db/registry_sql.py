"""The model registry in the SQL run DB: three tables beside the runs.

``tickrun_models`` (one row per name: the highest version number given, so a deleted version's
number is never reused), ``tickrun_model_versions`` (the version record as JSON, like the runs)
and ``tickrun_model_aliases`` (alias → version: moving one is a single-row update). They are
created like the run tables, idempotently on first use, so an older run DB gains them when a
newer tickrun opens it. Every write to one model holds a lock on its name (an advisory lock on
PostgreSQL, a write transaction on SQLite), so two registrations never take the same number.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import SQLAlchemyError

from ...errors import ConflictError, NotFoundError, StoreError
from ..registry_records import (
    LATEST,
    MODEL_SCHEME,
    ModelVersion,
    RegisteredModel,
    RegisterRequest,
    check_alias,
    check_name,
    check_version,
    version_ref,
)
from .base import RunDB
from .lineage import build_lineage, model_artifact
from .registry_base import ModelRegistry
from .sqlengine import lock_schema

registry_metadata = MetaData()

models_table = Table(
    "tickrun_models",
    registry_metadata,
    Column("name", String(128), primary_key=True),
    Column("latest_version", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False, index=True),
)

versions_table = Table(
    "tickrun_model_versions",
    registry_metadata,
    Column("name", String(128), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("run_uid", String(64), nullable=False, index=True),
    Column("created_at", Float, nullable=False),
    Column("body", Text, nullable=False),
)

aliases_table = Table(
    "tickrun_model_aliases",
    registry_metadata,
    Column("name", String(128), primary_key=True),
    Column("alias", String(64), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("updated_at", Float, nullable=False),
)

_M, _V, _A = models_table.c, versions_table.c, aliases_table.c


class SqlModelRegistry(ModelRegistry):
    """On the run DB's engine; ``runs`` is that DB, read for lineage."""

    def __init__(self, engine: Callable[[], Engine], runs: RunDB) -> None:
        self._engine = engine
        self._runs = runs

    # -- plumbing ------------------------------------------------------------------------------

    @contextmanager
    def _write(self, name: str) -> Iterator[Connection]:
        try:
            with self._engine().begin() as conn:
                lock_schema(conn, f"model:{name}")
                yield conn
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot write the model registry: {type(exc).__name__}") from exc

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        try:
            with self._engine().connect() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read the model registry: {type(exc).__name__}") from exc

    @staticmethod
    def _model_row(conn: Connection, name: str) -> Any:
        row = conn.execute(select(models_table).where(_M.name == name)).first()
        if row is None:
            raise NotFoundError(f"model {name!r} not found")
        return row

    def _version_row(self, conn: Connection, name: str, version: int) -> Any:
        row = conn.execute(
            select(_V.body).where(and_(_V.name == name, _V.version == version))
        ).first()
        if row is None:
            self._model_row(conn, name)
            raise NotFoundError(f"version {version} of model {name!r} not found")
        return row

    @staticmethod
    def _aliases(conn: Connection, names: list[str]) -> dict[tuple[str, int], list[str]]:
        out: dict[tuple[str, int], list[str]] = {}
        if not names:
            return out
        rows = conn.execute(
            select(_A.name, _A.alias, _A.version).where(_A.name.in_(names)).order_by(_A.alias)
        )
        for r in rows:
            out.setdefault((r.name, r.version), []).append(r.alias)
        return out

    @staticmethod
    def _put_alias(conn: Connection, name: str, alias: str, version: int, now: float) -> None:
        where = and_(_A.name == name, _A.alias == alias)
        # One row updated in place: a reader sees the old version or the new one, never none.
        moved = conn.execute(
            update(aliases_table).where(where).values(version=version, updated_at=now)
        )
        if moved.rowcount == 0:
            conn.execute(
                insert(aliases_table).values(
                    name=name, alias=alias, version=version, updated_at=now
                )
            )

    @staticmethod
    def _touch(conn: Connection, name: str, now: float) -> None:
        conn.execute(update(models_table).where(_M.name == name).values(updated_at=now))

    # -- writes --------------------------------------------------------------------------------

    def register(self, request: RegisterRequest) -> ModelVersion:
        uri = request.model_uri
        if uri.startswith(MODEL_SCHEME):  # another name for an already registered model
            uri = self.resolve(uri).model_uri
        rec = model_artifact(self._runs, uri)
        lineage = build_lineage(self._runs, rec)
        aliases = sorted(set(request.aliases))
        now = time.time()
        with self._write(request.name) as conn:
            latest = conn.execute(
                select(_M.latest_version).where(_M.name == request.name)
            ).scalar_one_or_none()
            version = (latest or 0) + 1
            if latest is None:
                conn.execute(
                    insert(models_table).values(
                        name=request.name, latest_version=version, created_at=now, updated_at=now
                    )
                )
            else:
                conn.execute(
                    update(models_table)
                    .where(_M.name == request.name)
                    .values(latest_version=version, updated_at=now)
                )
            mv = ModelVersion(
                name=request.name,
                version=version,
                model_uri=rec.uri,
                description=request.description,
                tags=dict(request.tags),
                framework=str(rec.meta.get("framework") or ""),
                sha256=rec.sha256,
                metrics=dict(rec.meta.get("metrics") or {}),
                lineage=lineage,
                created_at=now,
            )
            conn.execute(
                insert(versions_table).values(
                    name=mv.name,
                    version=version,
                    run_uid=lineage.run_uid,
                    created_at=now,
                    body=mv.model_dump_json(exclude={"aliases"}),
                )
            )
            for alias in aliases:
                self._put_alias(conn, request.name, alias, version, now)
        return mv.model_copy(update={"aliases": aliases})

    def set_alias(self, name: str, alias: str, version: int) -> ModelVersion:
        check_name(name), check_alias(alias), check_version(version)
        with self._write(name) as conn:
            self._version_row(conn, name, version)
            now = time.time()
            self._put_alias(conn, name, alias, version, now)
            self._touch(conn, name, now)
        return self.get_version(name, version)

    def delete_alias(self, name: str, alias: str) -> None:
        check_name(name), check_alias(alias)
        with self._write(name) as conn:
            gone = conn.execute(
                delete(aliases_table).where(and_(_A.name == name, _A.alias == alias))
            )
            if gone.rowcount == 0:
                self._model_row(conn, name)
                raise NotFoundError(f"alias {alias!r} of model {name!r} not found")
            self._touch(conn, name, time.time())

    def delete_version(self, name: str, version: int, *, force: bool = False) -> None:
        check_name(name), check_version(version)
        with self._write(name) as conn:
            self._version_row(conn, name, version)
            at = and_(_A.name == name, _A.version == version)
            aliases = sorted(conn.execute(select(_A.alias).where(at)).scalars())
            if aliases and not force:
                raise ConflictError(
                    f"version {version} of model {name!r} is the target of alias(es) "
                    f"{', '.join(aliases)}: move or delete them first, or force the delete"
                )
            conn.execute(delete(aliases_table).where(at))
            conn.execute(delete(versions_table).where(and_(_V.name == name, _V.version == version)))
            self._touch(conn, name, time.time())

    # -- reads ---------------------------------------------------------------------------------

    def get_version(self, name: str, version: int | str) -> ModelVersion:
        check_name(name)
        ref = version_ref(version)
        with self._read() as conn:
            if ref == LATEST:
                number = conn.execute(
                    select(func.max(_V.version)).where(_V.name == name)
                ).scalar_one_or_none()
                if number is None:
                    self._model_row(conn, name)
                    raise NotFoundError(f"model {name!r} has no versions")
            elif isinstance(ref, str):
                number = conn.execute(
                    select(_A.version).where(and_(_A.name == name, _A.alias == ref))
                ).scalar_one_or_none()
                if number is None:
                    self._model_row(conn, name)
                    raise NotFoundError(f"alias {ref!r} of model {name!r} not found")
            else:
                number = ref
            row = self._version_row(conn, name, number)
            aliases = self._aliases(conn, [name]).get((name, number), [])
        return ModelVersion.model_validate_json(row.body).model_copy(update={"aliases": aliases})

    def get_model(self, name: str) -> RegisteredModel:
        check_name(name)
        with self._read() as conn:
            row = self._model_row(conn, name)
            return self._registered(conn, [row])[0]

    def list_models(self, limit: int = 1000) -> list[RegisteredModel]:
        q = select(models_table).order_by(_M.updated_at.desc(), _M.name).limit(limit)
        with self._read() as conn:
            return self._registered(conn, list(conn.execute(q)))

    def _registered(self, conn: Connection, rows: list[Any]) -> list[RegisteredModel]:
        names = [r.name for r in rows]
        if not names:
            return []
        q = select(_V.name, func.count()).where(_V.name.in_(names)).group_by(_V.name)
        counts: dict[str, int] = {r[0]: int(r[1]) for r in conn.execute(q)}
        aliases: dict[str, dict[str, int]] = {}
        for (name, version), found in self._aliases(conn, names).items():
            for alias in found:
                aliases.setdefault(name, {})[alias] = version
        return [
            RegisteredModel(
                name=r.name,
                latest_version=r.latest_version,
                versions=counts.get(r.name, 0),
                aliases=dict(sorted(aliases.get(r.name, {}).items())),
                created_at=r.created_at,
                updated_at=r.updated_at,
            )
            for r in rows
        ]

    def list_versions(
        self,
        name: str | None = None,
        *,
        tags: dict[str, str] | None = None,
        run_uid: str | None = None,
        limit: int = 1000,
    ) -> list[ModelVersion]:
        q = select(_V.body)
        if name:
            q = q.where(_V.name == check_name(name))
        if run_uid:
            q = q.where(_V.run_uid == run_uid)
        q = q.order_by(_V.created_at.desc(), _V.version.desc())
        if not tags:  # a tag filter reads the bodies, so the limit applies after it
            q = q.limit(limit)
        with self._read() as conn:
            if name:
                self._model_row(conn, name)
            found = [ModelVersion.model_validate_json(r.body) for r in conn.execute(q)]
            if tags:
                found = [v for v in found if all(v.tags.get(k) == x for k, x in tags.items())]
                found = found[:limit]
            aliases = self._aliases(conn, sorted({v.name for v in found}))
        return [
            v.model_copy(update={"aliases": aliases.get((v.name, v.version), [])}) for v in found
        ]


__all__ = ["SqlModelRegistry", "registry_metadata"]
