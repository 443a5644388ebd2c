"""What the runs table asks for (``GET /api/runs?…``), parsed and checked: :class:`RunQuery`.

Kept apart from the SQL (:mod:`.search`) so the API validates a query before touching the DB:
every bad parameter is a 400 naming it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from ...errors import BadRequestError
from ...queryparams import int_param

Kind = Literal["p", "r"]
OPS = ("eq", "ne", "gt", "ge", "lt", "le")
PLAIN_SORTS = {"start": "created_at", "created": "created_at", "name": "name", "state": "state"}
MAX_LIMIT = 10000
MAX_OFFSET = 1_000_000
MAX_FILTERS = 20
MAX_KEY = 255
MAX_UIDS = 1000  # compare asks for its runs in one call (uids=a,b,c)
_UID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
DEFAULT_LIMIT = 100
# The parameters of the old listing (exact name, one run's iterations): their callers get the old
# answer.
LEGACY_PARAMS = frozenset({"uid", "name", "iterations"})
KNOWN = frozenset(
    {"project", "state", "label", "q", "since", "until", "sort", "order", "limit", "offset"}
    | {"columns", "uids"}
)


@dataclass(frozen=True, slots=True)
class ValueFilter:
    kind: Kind
    key: str
    op: str
    value: float | str


@dataclass(frozen=True, slots=True)
class RunQuery:
    project: str | None = None
    state: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    text: str | None = None
    filters: tuple[ValueFilter, ...] = ()
    since: float | None = None
    until: float | None = None
    sort: str = "start"  # "start" | "name" | "state" | "params.<k>" | "results.<k>"
    desc: bool = True
    limit: int = DEFAULT_LIMIT
    offset: int = 0
    columns: tuple[tuple[Kind, str], ...] | None = None
    # (uid, iteration) of exactly these runs (compare's batch); None: the table's runs.
    uids: tuple[tuple[str, int], ...] | None = None

    @property
    def sort_key(self) -> tuple[Kind, str] | None:
        """``(kind, key)`` when sorting by a param or a result."""
        return _kind_key(self.sort) if self.sort not in PLAIN_SORTS else None


@dataclass
class RunPage:
    runs: list[dict[str, object]]
    total: int
    total_capped: bool
    params: list[str] = field(default_factory=list)
    results: list[str] = field(default_factory=list)
    indexing: bool = False  # the first build of the params/results index is running


def _kind_key(name: str) -> tuple[Kind, str] | None:
    prefix, _, key = name.partition(".")
    kind: Kind | None = {"params": "p", "param": "p", "results": "r", "result": "r"}.get(prefix)  # type: ignore[assignment]
    if kind is None or not key or len(key) > MAX_KEY:
        return None
    return kind, key


def _number(name: str, raw: str) -> float | None:
    if raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise BadRequestError(f"query parameter {name} must be a number (unix seconds)") from None
    if not math.isfinite(value):
        raise BadRequestError(f"query parameter {name} must be a finite number")
    return value


def _filter(name: str, raw: str) -> ValueFilter:
    kk = _kind_key(name)
    if kk is None:
        raise BadRequestError(f"bad filter {name[:80]!r}: use param.<key> or result.<key>")
    op, sep, rest = raw.partition(":")
    if sep and op in OPS:
        text = rest
    else:
        op, text = "eq", raw
    value: float | str = text[:MAX_KEY]
    try:
        number = float(text)
    except ValueError:
        number = None
    if number is not None and math.isfinite(number):
        value = number
    elif op not in ("eq", "ne") and number is None and text == "":
        raise BadRequestError(f"filter {name[:80]} needs a value after {op}:")
    return ValueFilter(kk[0], kk[1], op, value)


def _uids(raws: list[str]) -> tuple[tuple[str, int], ...] | None:
    """``uids=a,b:3``: runs by uid (iteration 0) or ``uid:iteration``, in the order given."""
    if not raws:
        return None
    out: dict[tuple[str, int], None] = {}
    for raw in raws:
        for part in raw.split(","):
            part = part.strip()
            if not part:
                continue
            uid, sep, it = part.partition(":")
            if not _UID.match(uid) or (sep and not (it.isdigit() and len(it) < 10)):
                raise BadRequestError(
                    f"bad uids entry {part[:80]!r}: use <uid> or <uid>:<iteration>"
                )
            out[(uid, int(it) if sep else 0)] = None
            if len(out) > MAX_UIDS:
                raise BadRequestError(f"uids: at most {MAX_UIDS} runs a call")
    return tuple(out)


def parse_query(pairs: Iterable[tuple[str, str]]) -> RunQuery:
    """A :class:`RunQuery` from query-string pairs (repeated keys kept: ``label`` repeats).

    Raises :class:`BadRequestError` naming the bad parameter.
    """
    single: dict[str, str] = {}
    labels: list[tuple[str, str]] = []
    filters: list[ValueFilter] = []
    uid_lists: list[str] = []
    for name, raw in pairs:
        if name == "uids":
            uid_lists.append(raw)
        elif name == "label":
            if not raw:
                continue
            key, sep, value = raw.partition("=")
            if not sep or not key:
                raise BadRequestError(f"label query must be key=value, got {raw[:100]!r}")
            labels.append((key, value))
        elif name.startswith(("param.", "result.", "params.", "results.")):
            filters.append(_filter(name, raw))
        elif name in KNOWN:
            single[name] = raw
        elif name in LEGACY_PARAMS:
            continue
        else:
            raise BadRequestError(f"unknown query parameter {name[:80]!r}")
    if len(filters) + len(labels) > MAX_FILTERS:
        raise BadRequestError(f"at most {MAX_FILTERS} label/param/result filters")
    limit = int_param(single, "limit", DEFAULT_LIMIT, lo=1)
    offset = int_param(single, "offset", 0, lo=0, hi=MAX_OFFSET)
    sort = single.get("sort") or "start"
    if sort not in PLAIN_SORTS and _kind_key(sort) is None:
        raise BadRequestError(
            f"bad sort {sort[:80]!r}: use start, name, state, params.<key> or results.<key>"
        )
    order = single.get("order") or "desc"
    if order not in ("asc", "desc"):
        raise BadRequestError("query parameter order must be asc or desc")
    columns: list[tuple[Kind, str]] | None = None
    if single.get("columns"):
        columns = []
        for part in single["columns"].split(","):
            kk = _kind_key(part.strip())
            if kk is None:
                raise BadRequestError(
                    f"bad column {part[:80]!r}: use params.<key> or results.<key>"
                )
            columns.append(kk)
    text = (single.get("q") or "").strip()
    uids = _uids(uid_lists)
    if uids is not None and not single.get("limit"):
        limit = max(len(uids), 1)  # all of them, unless a page was asked for
    return RunQuery(
        project=single.get("project") or None,
        state=single.get("state") or None,
        labels=tuple(labels),
        text=text[:200] or None,
        filters=tuple(filters),
        since=_number("since", single.get("since", "")),
        until=_number("until", single.get("until", "")),
        sort="start" if sort == "created" else sort,
        desc=order == "desc",
        limit=min(limit or DEFAULT_LIMIT, MAX_LIMIT),
        offset=offset or 0,
        columns=tuple(columns) if columns is not None else None,
        uids=uids,
    )


__all__ = ["LEGACY_PARAMS", "OPS", "RunPage", "RunQuery", "ValueFilter", "parse_query"]
