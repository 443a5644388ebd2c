"""Compare's batch: GET /api/runs?uids=a,b,c:N gives exactly those runs (and iterations), with
their params and results, in one call."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tickrun.functions.errors import BadRequestError
from tickrun.functions.runs import SqlRunDB
from tickrun.functions.runs.api import add_routes
from tickrun.functions.runs.db.search import RunSearch
from tickrun.functions.runs.db.search_query import MAX_UIDS, parse_query
from tickrun.functions.runs.records import RunBatch

T0 = 1_700_000_000.0


def _run(i: int, iteration: int = 0) -> dict[str, Any]:
    return {
        "uid": f"u{i:04d}",
        "iteration": iteration,
        "project": "p",
        "name": f"r{i}",
        "params": {"C": 10.0 ** (i % 4 - 2), "it": iteration},
        "results": {"log_loss": 0.5 + i / 1000},
        "created_at": T0 + i,
    }


@pytest.fixture
def filled(db: SqlRunDB) -> SqlRunDB:
    runs = [_run(i) for i in range(300)] + [_run(7, it) for it in (1, 2)]
    db.apply(RunBatch.model_validate({"runs": runs}))
    return db


def _search(db: SqlRunDB, *pairs: tuple[str, str]) -> Any:
    return RunSearch(lambda: db.engine).search(parse_query(pairs))


def test_exactly_the_runs_asked_for_all_of_them(filled: SqlRunDB) -> None:
    want = [f"u{i:04d}" for i in range(0, 300, 2)]  # 150: past the default page of 100
    page = _search(filled, ("uids", ",".join(want)))
    assert sorted(r["uid"] for r in page.runs) == sorted(want) and page.total == len(want)
    assert all(r["iteration"] == 0 for r in page.runs)
    got = {r["uid"]: r for r in page.runs}
    assert got["u0010"]["params"]["C"] == 10.0 ** (10 % 4 - 2)
    assert got["u0010"]["results"]["log_loss"] == 0.5 + 10 / 1000


def test_iterations_by_uid_colon_iteration_and_repeated_param(filled: SqlRunDB) -> None:
    page = _search(filled, ("uids", "u0007:1,u0007:2"), ("uids", "u0003"), ("uids", "nope"))
    assert sorted((r["uid"], r["iteration"]) for r in page.runs) == [
        ("u0003", 0),
        ("u0007", 1),
        ("u0007", 2),
    ]
    assert page.runs[0]["params"]["it"] in (0, 1, 2)


def test_bad_or_too_many_uids_are_refused() -> None:
    with pytest.raises(BadRequestError, match="bad uids entry"):
        parse_query([("uids", "u1,../x")])
    with pytest.raises(BadRequestError, match="bad uids entry"):
        parse_query([("uids", "u1:x")])
    too_many = ",".join(f"u{i}" for i in range(MAX_UIDS + 1))
    with pytest.raises(BadRequestError, match=f"at most {MAX_UIDS}"):
        parse_query([("uids", too_many)])
    assert parse_query([("uids", "a,b"), ("limit", "1")]).limit == 1


@pytest.fixture
async def client(filled: SqlRunDB) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = web.Application()
    add_routes(app, filled)
    async with TestClient(TestServer(app)) as c:
        yield c


async def test_over_http(client: TestClient[web.Request, web.Application]) -> None:
    resp = await client.get("/api/runs", params={"uids": "u0001,u0002,u0299"})
    assert resp.status == 200
    body = await resp.json()
    assert sorted(r["uid"] for r in body["runs"]) == ["u0001", "u0002", "u0299"]
    assert body["total"] == 3
    bad = await client.get("/api/runs", params={"uids": "a b"})
    assert bad.status == 400
