"""The runs table's query (filters, sort by any param or result, pages) over a SQL run DB.

A run's params and results live inside its JSON body, which no database can sort 100,000 of
quickly. So the search keeps a derived index beside the run tables: one row per (run, param or
result) with the value as a number and as text, indexed by (kind, key, number). It is filled by
the reader, not the writers, from ``tickrun_runs.updated_at``: whichever driver wrote a run (the
SQLAlchemy DB, the embedded recorder, the controller's API), and runs recorded before this index
existed, are found. Each search first indexes the runs updated since the last one (an index range
scan; nothing to do when nothing changed), re-reading a margin before that mark so a write that
committed late with an older timestamp is not missed.

The derived tables (``tickrun_run_values``, ``tickrun_run_keys``, ``tickrun_run_index``) and the
extra indexes on ``tickrun_runs`` are created on first search, never by the writers.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import (
    Column,
    ColumnElement,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    and_,
    bindparam,
    exists,
    func,
    literal,
    or_,
    select,
    text,
    tuple_,
)
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

from ...errors import StoreError
from .search_query import Kind, RunPage, RunQuery, ValueFilter
from .sql import labels_table, runs_table
from .sqlengine import lock_schema

logger = logging.getLogger(__name__)

search_metadata = MetaData()

values_table = Table(
    "tickrun_run_values",
    search_metadata,
    Column("uid", String(64), primary_key=True),
    Column("iteration", Integer, primary_key=True),
    Column("kind", String(1), primary_key=True),  # "p" param, "r" result
    Column("key", String(255), primary_key=True),
    Column("num", Float, nullable=True),
    Column("txt", String(255), nullable=True),
)
# Covering: a filter's IN list and a sorted page read (uid, iteration) from the index alone.
Index(
    "ix_tickrun_run_values_by_num",
    values_table.c.kind,
    values_table.c.key,
    values_table.c.num,
    values_table.c.iteration,
    values_table.c.uid,
)
Index(
    "ix_tickrun_run_values_by_txt",
    values_table.c.kind,
    values_table.c.key,
    values_table.c.txt,
    values_table.c.iteration,
    values_table.c.uid,
)

# The column chooser's keys per project: small, so the page never scans the values for them.
keys_table = Table(
    "tickrun_run_keys",
    search_metadata,
    Column("kind", String(1), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("project", String(63), primary_key=True),
)

mark_table = Table(
    "tickrun_run_index",
    search_metadata,
    Column("name", String(32), primary_key=True),
    Column("mark", Float, nullable=False),
)

# On the writers' table, but created here (IF NOT EXISTS): the run DB's own schema stays as its
# drivers make it. (iteration, created_at, uid, name): the default page in index order with its
# tie-break, its count, and the text search (name and uid are in the index: a LIKE scan reads no
# body); (project, …) the same per project; (updated_at, uid, iteration): the catch-up scan
# reads the index alone.
RUN_INDEXES = (
    "CREATE INDEX IF NOT EXISTS ix_tickrun_runs_page "
    "ON tickrun_runs (iteration, created_at, uid, name)",
    "CREATE INDEX IF NOT EXISTS ix_tickrun_runs_project_page "
    "ON tickrun_runs (project, iteration, created_at, uid, name)",
    "CREATE INDEX IF NOT EXISTS ix_tickrun_runs_updated "
    "ON tickrun_runs (updated_at, uid, iteration)",
)

_INSERT_VALUES = (
    'INSERT INTO tickrun_run_values (uid, iteration, kind, "key", num, txt) '
    "VALUES ({m}, {m}, {m}, {m}, {m}, {m})"
)
MARGIN_S = 30.0
CHUNK = 2000
COUNT_CAP = 1_000_000
MAX_KEYS = 2000
STALE_EVERY_S = 1.0
REFRESH_EVERY_S = 1.0
INLINE_BUILD_MAX = 5000  # more runs than this never indexed: the first build runs in a thread


def _values_of(kind: Kind, items: dict[str, Any]) -> Iterable[tuple[str, float | None, str]]:
    for key, v in items.items():
        if isinstance(v, bool):
            yield key[:255], float(v), str(v).lower()
        elif isinstance(v, int | float):
            f = float(v)
            yield key[:255], (f if math.isfinite(f) else None), str(v)[:255]
        elif isinstance(v, str):
            yield key[:255], None, v[:255]
        # Lists and dicts are shown from the body; they are neither sorted nor filtered on.


class RunSearch:
    """Searches one SQL run DB; ``engine_of`` gives its engine (opened by the run DB)."""

    def __init__(
        self, engine_of: Callable[[], Engine], mark_stale: Callable[[], object] | None = None
    ) -> None:
        self._engine_of = engine_of
        self._mark_stale = mark_stale
        self._lock = threading.Lock()
        self._ready = False
        self._mark: float | None = None
        self._recent: dict[tuple[str, int], float] = {}
        self._last_stale = 0.0
        self._last_refresh = float("-inf")
        self._worker: threading.Thread | None = None

    # -- the derived index ---------------------------------------------------------------------

    def _ensure_schema(self, engine: Engine) -> None:
        if self._ready:
            return
        with engine.begin() as conn:
            lock_schema(conn, "run-search")
            search_metadata.create_all(conn, checkfirst=True)
            for ddl in RUN_INDEXES:
                conn.execute(text(ddl))
            row = conn.execute(select(mark_table.c.mark).where(mark_table.c.name == "runs")).first()
        self._mark = float(row.mark) if row is not None else None
        self._ready = True

    def refresh(self, *, max_age_s: float = 0.0) -> int:
        """Index the runs written since the last call; the number (re)indexed.

        ``max_age_s``: skip when the last catch-up is younger than that (a page's calls come in
        bursts; a second of staleness is invisible in a table)."""
        engine = self._engine_of()
        with self._lock:
            self._ensure_schema(engine)
            now = time.monotonic()
            if max_age_s and now - self._last_refresh < max_age_s:
                return 0
            done = self._catch_up(engine)
            self._last_refresh = time.monotonic()
            return done

    @property
    def building(self) -> bool:
        return self._worker is not None and self._worker.is_alive()

    def _refresh_unless_building(self) -> None:
        """For a page that needs no param/result values: a big first build (100,000 runs take
        tens of seconds) runs in a thread while such pages are answered; a catch-up runs here."""
        if self.building or time.monotonic() - self._last_refresh < REFRESH_EVERY_S:
            return
        engine = self._engine_of()
        with self._lock:
            self._ensure_schema(engine)
            first = self._mark is None
        if first:
            with engine.connect() as conn:
                n = conn.execute(
                    select(func.count()).select_from(
                        select(runs_table.c.uid).limit(INLINE_BUILD_MAX + 1).subquery()
                    )
                ).scalar_one()
            if n > INLINE_BUILD_MAX:
                self._worker = threading.Thread(
                    target=self._build_quietly, name="tickrun-run-index", daemon=True
                )
                self._worker.start()
                return
        self.refresh(max_age_s=REFRESH_EVERY_S)

    def _build_quietly(self) -> None:
        t0 = time.monotonic()
        try:
            n = self.refresh()
        except Exception as exc:  # the next search that needs the values tries again
            logger.warning(
                "building the runs search index failed", extra={"reason": repr(exc)[:200]}
            )
            return
        logger.info(
            "runs search index built", extra={"runs": n, "seconds": round(time.monotonic() - t0, 1)}
        )

    def _catch_up(self, engine: Engine) -> int:
        r = runs_table
        full = self._mark is None
        since = None if self._mark is None else self._mark - MARGIN_S
        q = select(r.c.uid, r.c.iteration, r.c.updated_at)
        if since is not None:
            q = q.where(r.c.updated_at > since)
        with engine.connect() as conn:
            seen = conn.execute(q).all()
        todo = {
            (row.uid, row.iteration): row.updated_at
            for row in seen
            if self._recent.get((row.uid, row.iteration)) != row.updated_at
        }
        if not todo:
            return 0
        # The bodies in one range scan (the keys alone came from the index): the runs in the
        # margin that were already indexed are skipped here, not re-read one by one.
        lo = min(todo.values())
        body_q = select(r.c.uid, r.c.iteration, r.c.project, r.c.body)
        if not full:
            body_q = body_q.where(r.c.updated_at >= lo)
        if full:
            # A first build inserts every run: the indexes are built once afterwards (a sort)
            # rather than updated row by row (several times slower).
            with engine.begin() as conn:
                for index in values_table.indexes:
                    index.drop(conn, checkfirst=True)
        batch: list[tuple[str, int, str, str]] = []
        with engine.connect() as conn:
            result = conn.execution_options(stream_results=True).execute(body_q)
            for row in result:
                if (row.uid, row.iteration) in todo:
                    batch.append((row.uid, row.iteration, row.project, row.body))
                    if len(batch) >= CHUNK:
                        self._index_chunk(engine, batch, replace=not full)
                        batch = []
        if batch:
            self._index_chunk(engine, batch, replace=not full)
        if full:
            with engine.begin() as conn:
                for index in values_table.indexes:
                    index.create(conn, checkfirst=True)
        mark = max(max(todo.values()), self._mark or 0.0)
        # Remember what was indexed inside the margin: those rows are seen again next time.
        floor = mark - MARGIN_S
        self._recent = {k: u for k, u in self._recent.items() if u > floor}
        self._recent.update({k: u for k, u in todo.items() if u > floor})
        if mark != self._mark:
            with engine.begin() as conn:
                done = conn.execute(
                    mark_table.update().where(mark_table.c.name == "runs").values(mark=mark)
                ).rowcount
                if not done:
                    conn.execute(mark_table.insert(), [{"name": "runs", "mark": mark}])
            self._mark = mark
        return len(todo)

    def _index_chunk(
        self, engine: Engine, bodies: list[tuple[str, int, str, str]], *, replace: bool
    ) -> None:
        v = values_table
        rows: list[tuple[str, int, str, str, float | None, str]] = []
        names: set[tuple[str, str, str]] = set()
        for uid, iteration, project, body in bodies:
            try:
                rec = json.loads(body)
            except ValueError:
                continue
            for kind, field in (("p", "params"), ("r", "results")):
                items = rec.get(field)
                if not isinstance(items, dict):
                    continue
                for key, num, txt in _values_of(kind, items):  # type: ignore[arg-type]
                    rows.append((uid, iteration, kind, key, num, txt))
                    names.add((kind, key, project))
        try:
            with engine.begin() as conn:
                if replace:
                    conn.execute(
                        v.delete().where(
                            v.c.uid == bindparam("d_uid"), v.c.iteration == bindparam("d_it")
                        ),
                        [{"d_uid": uid, "d_it": it} for uid, it, _, _ in bodies],
                    )
                if rows:
                    # Straight to the driver: building SQLAlchemy parameters for a million
                    # rows cost as much as the database's own work.
                    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
                    conn.exec_driver_sql(_INSERT_VALUES.format(m=mark), rows)
                self._add_keys(conn, names)
        except IntegrityError:
            # Another process indexed the same runs at the same moment: its rows stand.
            logger.debug("run index chunk raced another indexer", exc_info=True)

    def _add_keys(self, conn: Any, names: set[tuple[str, str, str]]) -> None:
        if not names:
            return
        k = keys_table
        known = {
            (row.kind, row.key, row.project)
            for row in conn.execute(
                select(k.c.kind, k.c.key, k.c.project).where(
                    tuple_(k.c.kind, k.c.key, k.c.project).in_(sorted(names))
                )
            )
        }
        new = [{"kind": a, "key": b, "project": c} for a, b, c in sorted(names - known)]
        if new:
            conn.execute(k.insert(), new)

    # -- the query -----------------------------------------------------------------------------

    def search(self, query: RunQuery) -> RunPage:
        now = time.monotonic()
        if self._mark_stale is not None and now - self._last_stale >= STALE_EVERY_S:
            self._last_stale = now
            self._mark_stale()
        try:
            needs_values = query.sort_key is not None or bool(query.filters)
            if needs_values:
                self.refresh(max_age_s=REFRESH_EVERY_S)  # needs the values: waits for them
            else:
                self._refresh_unless_building()
            with self._engine_of().connect() as conn:
                page = self._search(conn, query)
            # A page that waited for the values was answered from a complete index, even if the
            # build's thread has not quite exited yet.
            page.indexing = False if needs_values else self.building
            return page
        except OperationalError as exc:
            raise StoreError(f"cannot search the run DB: {type(exc).__name__}") from exc
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot search the run DB: {type(exc).__name__}") from exc

    def _search(self, conn: Any, query: RunQuery) -> RunPage:
        r = runs_table
        where = _conditions(query, conn.dialect.name)
        capped = (
            select(literal(1).label("one")).select_from(r).where(*where).limit(COUNT_CAP + 1)
        ).subquery()
        total = int(conn.execute(select(func.count()).select_from(capped)).scalar_one())
        bodies = self._page(conn, query, where)
        runs = [_shape(body, query.columns) for body in bodies]
        params, results = self._columns(conn, query.project)
        return RunPage(
            runs=runs,
            total=min(total, COUNT_CAP),
            total_capped=total > COUNT_CAP,
            params=params,
            results=results,
        )

    def _page(self, conn: Any, query: RunQuery, where: list[ColumnElement[bool]]) -> list[str]:
        r, v = runs_table, values_table
        sort_key = query.sort_key
        if sort_key is None:
            col = {"start": r.c.created_at, "name": r.c.name, "state": r.c.state}[query.sort]
            order = [col.desc(), r.c.uid.desc()] if query.desc else [col.asc(), r.c.uid.asc()]
            q = select(r.c.body).where(*where).order_by(*order)
            return list(conn.execute(q.offset(query.offset).limit(query.limit)).scalars())
        kind, key = sort_key
        on = and_(
            v.c.uid == r.c.uid, v.c.iteration == r.c.iteration, v.c.kind == kind, v.c.key == key
        )
        if query.desc:
            order = [v.c.num.desc(), v.c.txt.desc(), r.c.created_at.desc()]
        else:
            order = [v.c.num.asc(), v.c.txt.asc(), r.c.created_at.asc()]
        with_key = (
            select(r.c.body)
            .select_from(v.join(r, on))
            .where(v.c.kind == kind, v.c.key == key, *where)
            .order_by(*order)
        )
        page = list(conn.execute(with_key.offset(query.offset).limit(query.limit)).scalars())
        if len(page) == query.limit:
            return page
        # Past the runs that have the key: those without it, newest first.
        if page:
            skip = 0
        else:
            n_with = conn.execute(
                select(func.count()).select_from(v.join(r, on)).where(*where)
            ).scalar_one()
            skip = max(0, query.offset - int(n_with))
        without = (
            select(r.c.body)
            .where(*where, ~exists().where(on))
            .order_by(r.c.created_at.desc() if query.desc else r.c.created_at.asc())
        )
        rest = conn.execute(without.offset(skip).limit(query.limit - len(page))).scalars()
        return page + list(rest)

    def _columns(self, conn: Any, project: str | None) -> tuple[list[str], list[str]]:
        k = keys_table
        q = select(k.c.kind, k.c.key).distinct()
        if project:
            q = q.where(k.c.project == project)
        params: list[str] = []
        results: list[str] = []
        for kind, key in conn.execute(q.order_by(k.c.kind, k.c.key).limit(2 * MAX_KEYS)):
            (params if kind == "p" else results).append(key)
        return params[:MAX_KEYS], results[:MAX_KEYS]


def _conditions(query: RunQuery, dialect: str) -> list[ColumnElement[bool]]:
    """The WHERE terms of ``query`` (iteration 0 rows: the table's runs; with ``uids``, exactly
    those runs and iterations)."""
    r, lt = runs_table, labels_table
    where: list[ColumnElement[bool]] = [r.c.iteration == 0]
    if query.uids is not None:
        # By primary key: a list of uids at iteration 0 (compare's usual case) as uid IN (...).
        if all(it == 0 for _, it in query.uids):
            where.append(r.c.uid.in_(sorted({u for u, _ in query.uids})))
        else:
            where = [tuple_(r.c.uid, r.c.iteration).in_(list(query.uids))]
    if query.project:
        where.append(r.c.project == query.project)
    if query.state:
        where.append(r.c.state == query.state)
    if query.since is not None:
        where.append(r.c.created_at >= query.since)
    if query.until is not None:
        where.append(r.c.created_at < query.until)
    for key, value in query.labels:
        # uid IN (the label index's matches), not a correlated EXISTS nor a row-value IN:
        # SQLite builds one lookup table of the uids, fast however rare or common the label.
        where.append(
            r.c.uid.in_(
                select(lt.c.uid).where(lt.c.iteration == 0, lt.c.key == key, lt.c.value == value)
            )
        )
    if query.text:
        # SQLite's LIKE ignores ASCII case already (lower() per row would double the scan);
        # PostgreSQL's needs ILIKE.
        if dialect == "sqlite":
            name_match = r.c.name.contains(query.text, autoescape=True)
        else:
            name_match = r.c.name.icontains(query.text, autoescape=True)
        where.append(or_(name_match, r.c.uid.contains(query.text, autoescape=True)))
    for f in query.filters:
        where.append(_value_filter(f))
    return where


def _value_filter(f: ValueFilter) -> ColumnElement[bool]:
    # An alias: the sorted page joins values_table itself, which must not correlate in here.
    r, v = runs_table, values_table.alias()
    col = v.c.num if isinstance(f.value, float) else v.c.txt
    cmp = {
        "eq": col == f.value,
        "ne": col != f.value,
        "gt": col > f.value,
        "ge": col >= f.value,
        "lt": col < f.value,
        "le": col <= f.value,
    }[f.op]
    return r.c.uid.in_(
        select(v.c.uid).where(v.c.iteration == 0, v.c.kind == f.kind, v.c.key == f.key, cmp)
    )


def _shape(body: str, columns: tuple[tuple[Kind, str], ...] | None) -> dict[str, object]:
    rec: dict[str, object] = json.loads(body)
    if columns is not None:
        want = {"p": {k for c, k in columns if c == "p"}, "r": {k for c, k in columns if c == "r"}}
        for kind, field in (("p", "params"), ("r", "results")):
            items = rec.get(field)
            if isinstance(items, dict):
                rec[field] = {k: val for k, val in items.items() if k in want[kind]}
    return rec


__all__ = ["RunSearch", "keys_table", "mark_table", "search_metadata", "values_table"]
