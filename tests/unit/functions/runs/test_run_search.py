"""The runs table's search (GET /api/runs with filters, sort, pages) on a real SQLite run DB."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tickrun.functions.artifacts.targets import ArtifactRoots
from tickrun.functions.errors import BadRequestError
from tickrun.functions.runs import SqlRunDB
from tickrun.functions.runs.api import add_routes
from tickrun.functions.runs.db import search as search_module
from tickrun.functions.runs.db.search import RunSearch
from tickrun.functions.runs.db.search_query import parse_query
from tickrun.functions.runs.records import RunBatch

T0 = 1_700_000_000.0


def _run(i: int, **over: Any) -> dict[str, Any]:
    run: dict[str, Any] = {
        "uid": f"u{i:03d}",
        "project": "alpha" if i % 2 else "beta",
        "name": f"train-{'xgb' if i % 3 else 'mlp'}-{i}",
        "state": "completed" if i % 5 else "error",
        "params": {"lr": 0.001 * (i + 1), "depth": i % 4, "model": "xgb" if i % 3 else "mlp"},
        "results": {"acc": 0.5 + i / 100},
        "labels": {"owner": f"o{i % 2}", "sweep": "s1" if i < 10 else "s2"},
        "created_at": T0 + i,
        "updated_at": T0 + i + 0.5,
    }
    run.update(over)
    return run


@pytest.fixture
def filled(db: SqlRunDB) -> SqlRunDB:
    runs = [_run(i) for i in range(20)]
    # A sweep's iterations are not rows of the table (iteration 0 only).
    runs.append(_run(3, iteration=1, results={"acc": 9.0}))
    # Runs without the 'acc' result: sorted after those that have it.
    runs += [_run(i, results={}) for i in range(20, 23)]
    db.apply(RunBatch.model_validate({"runs": runs}))
    return db


def _search(db: SqlRunDB, **query: str | list[str]) -> Any:
    pairs = [
        (k.replace("__", "."), v)
        for k, vs in query.items()
        for v in (vs if isinstance(vs, list) else [vs])
    ]
    return RunSearch(lambda: db.engine).search(parse_query(pairs))


def _uids(page: Any) -> list[str]:
    return [r["uid"] for r in page.runs]


def test_default_page_is_newest_first_with_total_and_columns(filled: SqlRunDB) -> None:
    page = _search(filled, limit="5")
    assert _uids(page) == ["u022", "u021", "u020", "u019", "u018"]
    assert page.total == 23 and not page.total_capped
    assert page.params == ["depth", "lr", "model"] and page.results == ["acc"]
    nxt = _search(filled, limit="5", offset="20")
    assert _uids(nxt) == ["u002", "u001", "u000"]


def test_sort_by_result_puts_runs_without_it_last_across_pages(filled: SqlRunDB) -> None:
    desc = _search(filled, sort="results.acc", order="desc", limit="3")
    assert _uids(desc) == ["u019", "u018", "u017"]
    asc = _search(filled, sort="results.acc", order="asc", limit="22")
    assert _uids(asc)[:3] == ["u000", "u001", "u002"]
    assert set(_uids(asc)[20:]) <= {"u020", "u021", "u022"}
    # The page that straddles the end of the runs with the key, and one past it.
    straddle = _search(filled, sort="results.acc", order="desc", limit="4", offset="18")
    assert _uids(straddle) == ["u001", "u000", "u022", "u021"]
    past = _search(filled, sort="results.acc", order="desc", limit="4", offset="21")
    assert _uids(past) == ["u021", "u020"]


def test_filters_combine(filled: SqlRunDB) -> None:
    assert _uids(_search(filled, param__lr="gt:0.0175", limit="50")) == [
        "u022",
        "u021",
        "u020",
        "u019",
        "u018",
        "u017",
    ]
    mlp = _search(filled, param__model="mlp", result__acc="ge:0.6", limit="50")
    assert _uids(mlp) == ["u018", "u015", "u012"]
    labelled = _search(filled, label=["owner=o1", "sweep=s2"], limit="50")
    assert _uids(labelled) == ["u021", "u019", "u017", "u015", "u013", "u011"]
    assert labelled.total == 6
    assert _uids(_search(filled, q="MLP-1", limit="50")) == ["u018", "u015", "u012"]
    assert _uids(_search(filled, q="%", limit="50")) == []  # LIKE wildcards are literal
    window = _search(filled, since=str(T0 + 5), until=str(T0 + 8), limit="50")
    assert _uids(window) == ["u007", "u006", "u005"]
    err = _search(filled, state="error", project="beta", limit="50")
    assert _uids(err) == ["u020", "u010", "u000"]


def test_columns_trim_each_run(filled: SqlRunDB) -> None:
    page = _search(filled, columns="params.lr,results.acc", limit="1")
    assert page.runs[0]["params"] == {"lr": pytest.approx(0.023)}
    assert page.runs[0]["results"] == {}
    assert page.runs[0]["labels"]["sweep"] == "s2"


def test_new_and_changed_runs_are_indexed_on_the_next_search(filled: SqlRunDB) -> None:
    search = RunSearch(lambda: filled.engine)
    top = parse_query([("sort", "results.acc"), ("limit", "1")])
    assert _uids(search.search(top)) == ["u019"]
    now = time.time()
    later = [_run(5, results={"acc": 5.0}, updated_at=now), _run(40, updated_at=now + 1)]
    filled.apply(RunBatch.model_validate({"runs": later}))
    assert search.refresh() == 2
    assert _uids(search.search(top)) == ["u005"]
    assert search.search(parse_query([("limit", "1")])).total == 24
    # A fresh searcher (another process) starts from the stored mark: nothing to redo but the
    # margin's runs.
    again = RunSearch(lambda: filled.engine)
    assert again.refresh() <= 2
    assert _uids(again.search(top)) == ["u005"]


@pytest.mark.parametrize(
    "pairs",
    [
        [("sort", "params")],
        [("sort", "bogus.x")],
        [("order", "up")],
        [("limit", "0")],
        [("offset", "-1")],
        [("offset", "99999999")],
        [("since", "yesterday")],
        [("since", "nan")],
        [("label", "novalue")],
        [("columns", "lr")],
        [("param.", "1")],
        [("colour", "red")],
        [("param.x", "gt:")],
    ],
)
def test_bad_queries_are_400(pairs: list[tuple[str, str]]) -> None:
    with pytest.raises(BadRequestError):
        parse_query(pairs)


@pytest.fixture
async def client(filled: SqlRunDB) -> AsyncIterator[TestClient]:
    app = web.Application()
    add_routes(app, filled, ArtifactRoots.of([]))
    async with TestClient(TestServer(app)) as c:
        yield c


async def test_api_answers_the_table_and_keeps_the_old_listing(client: TestClient) -> None:
    resp = await client.get("/api/runs?limit=2&sort=results.acc&label=owner=o0&param.depth=gt:1")
    body = await resp.json()
    assert resp.status == 200
    assert [r["uid"] for r in body["runs"]] == ["u018", "u014"]
    assert body["total"] == 6 and body["columns"]["results"] == ["acc"]
    bad = await client.get("/api/runs?sort=params.")
    assert bad.status == 400 and "sort" in (await bad.json())["detail"]
    # The old parameters give the old answer (one run's iterations included).
    old = await client.get("/api/runs?uid=u003&limit=10")
    body = await old.json()
    assert set(body) == {"runs"} and sorted(r["iteration"] for r in body["runs"]) == [0, 1]


def test_a_big_first_build_runs_beside_plain_pages(
    filled: SqlRunDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(search_module, "INLINE_BUILD_MAX", 5)
    search = RunSearch(lambda: filled.engine)
    plain = search.search(parse_query([("limit", "3")]))  # answered without the values
    assert _uids(plain) == ["u022", "u021", "u020"] and plain.total == 23
    # A sort by a result waits for the build, then sees every run.
    top = search.search(parse_query([("sort", "results.acc"), ("limit", "1")]))
    assert _uids(top) == ["u019"] and not top.indexing
    assert search.search(parse_query([("limit", "1")])).results == ["acc"]
