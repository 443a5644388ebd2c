"""Runs page benchmark: the web UI's ``GET /api/runs`` calls on a store of 100,000 runs.

    python -m bench.ui [--runs 100000] [--repeat 5] [--db-url URL] [--keep DIR]

Fills a SQLite run DB (or ``--db-url``, e.g. PostgreSQL) with runs as sweeps write them (8
params, 6 results, 3 labels each, 4 projects, a year of start times), then times the calls the
runs page makes, through the real aiohttp app over HTTP: first page, sorted by a result,
filtered by a param, by a label, by a text query, a deep page (offset 50,000). Beside each, a
baseline measured in the same run on the same file: the same question asked of the run table
directly in SQL, reading params/results out of the JSON bodies (``json_extract``), as a store
without a derived index must. Also: the one-time index build on first search, and the catch-up
after 100 new runs.

Then the browser part (paint.py): first paint of the runs, run and compare pages in Chromium
beside a server-rendered HTML table of the same runs (skipped with --no-browser).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

PROJECTS = ("btc-hourly", "eth-minute", "features", "default")
MODELS = ("xgboost", "lightgbm", "logreg", "mlp")
YEAR_S = 365 * 86400.0


def progress(msg: str) -> None:
    print(f"… {msg}", file=sys.stderr, flush=True)


def make_run(i: int, n: int, rng: random.Random, t_end: float) -> dict[str, Any]:
    lr = round(10 ** rng.uniform(-4, -1), 6)
    depth = rng.randint(2, 12)
    sharpe = round(rng.gauss(0.5, 1.0), 4)
    # Spread over the year before now, as a year of sweeps leaves them; a run takes minutes.
    created = t_end - YEAR_S + YEAR_S * i / n + rng.random()
    duration = rng.uniform(30.0, 900.0)
    return {
        "uid": f"r{i:07d}",
        "iteration": 0,
        "project": PROJECTS[i % len(PROJECTS)],
        "name": f"train-{MODELS[i % len(MODELS)]}-{i}",
        "handler": "train",
        "state": "completed" if i % 50 else "error",
        "params": {
            "lr": lr,
            "depth": depth,
            "n_estimators": rng.choice((100, 200, 400, 800)),
            "window": rng.choice((24, 48, 96, 168)),
            "threshold": round(rng.random(), 3),
            "fee_bps": rng.choice((0, 5, 10)),
            "model": MODELS[i % len(MODELS)],
            "seed": i,
        },
        "results": {
            "accuracy": round(rng.uniform(0.45, 0.62), 4),
            "sharpe": sharpe,
            "pnl": round(sharpe * 1000 + rng.gauss(0, 200), 2),
            "max_drawdown": round(rng.uniform(0.02, 0.4), 4),
            "n_trades": rng.randint(10, 5000),
            "loss": round(rng.uniform(0.2, 1.0), 4),
        },
        "labels": {
            "owner": f"user{i % 7}",
            "strategy": ("momentum", "meanrev", "breakout")[i % 3],
            "sweep": f"s{i // 1000}",
        },
        "created_at": created,
        "started_at": created + 1.0,
        "ended_at": created + duration,
        "updated_at": created + duration,
    }


def fill(db: Any, n: int) -> float:
    from tickrun.functions.runs.records import RunBatch

    rng = random.Random(7)
    t_end = time.time() - 3600.0
    t0 = time.perf_counter()
    for start in range(0, n, 2000):
        runs = [make_run(i, n, rng, t_end) for i in range(start, min(n, start + 2000))]
        db.apply(RunBatch.model_validate({"runs": runs}))
        if start % 20000 == 0:
            progress(f"filled {start + len(runs)}/{n}")
    return time.perf_counter() - t0


# name, API query string, baseline SQL (SQLite, over the JSON bodies; one page + its count)
CALLS: list[tuple[str, str, list[str]]] = [
    (
        "first page",
        "limit=50",
        [
            "SELECT body FROM tickrun_runs WHERE iteration=0 ORDER BY created_at DESC LIMIT 50",
            "SELECT count(*) FROM tickrun_runs WHERE iteration=0",
        ],
    ),
    (
        "sort by results.sharpe",
        "limit=50&sort=results.sharpe&order=desc",
        [
            "SELECT body FROM tickrun_runs WHERE iteration=0 "
            "ORDER BY json_extract(body, '$.results.sharpe') DESC LIMIT 50",
            "SELECT count(*) FROM tickrun_runs WHERE iteration=0",
        ],
    ),
    (
        "filter param.lr>0.05",
        "limit=50&param.lr=gt:0.05",
        [
            "SELECT body FROM tickrun_runs WHERE iteration=0 AND "
            "json_extract(body, '$.params.lr') > 0.05 ORDER BY created_at DESC LIMIT 50",
            "SELECT count(*) FROM tickrun_runs WHERE iteration=0 AND "
            "json_extract(body, '$.params.lr') > 0.05",
        ],
    ),
    (
        "filter label strategy=meanrev",
        "limit=50&label=strategy=meanrev",
        [
            "SELECT body FROM tickrun_runs WHERE iteration=0 AND "
            "json_extract(body, '$.labels.strategy') = 'meanrev' "
            "ORDER BY created_at DESC LIMIT 50",
            "SELECT count(*) FROM tickrun_runs WHERE iteration=0 AND "
            "json_extract(body, '$.labels.strategy') = 'meanrev'",
        ],
    ),
    (
        "text q=logreg-4242",
        "limit=50&q=logreg-4242",
        [
            "SELECT body FROM tickrun_runs WHERE iteration=0 AND name LIKE '%logreg-4242%' "
            "ORDER BY created_at DESC LIMIT 50",
            "SELECT count(*) FROM tickrun_runs WHERE iteration=0 AND name LIKE '%logreg-4242%'",
        ],
    ),
    (
        "sort by param + filter result",
        "limit=50&sort=params.lr&order=asc&result.accuracy=gt:0.6&project=btc-hourly",
        [
            "SELECT body FROM tickrun_runs WHERE iteration=0 AND project='btc-hourly' AND "
            "json_extract(body, '$.results.accuracy') > 0.6 "
            "ORDER BY json_extract(body, '$.params.lr') ASC LIMIT 50",
            "SELECT count(*) FROM tickrun_runs WHERE iteration=0 AND project='btc-hourly' AND "
            "json_extract(body, '$.results.accuracy') > 0.6",
        ],
    ),
    (
        "deep page offset=50000",
        "limit=50&offset=50000",
        [
            "SELECT body FROM tickrun_runs WHERE iteration=0 "
            "ORDER BY created_at DESC LIMIT 50 OFFSET 50000",
            "SELECT count(*) FROM tickrun_runs WHERE iteration=0",
        ],
    ),
]


def best_of(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


async def abest_of(fn: Callable[[], Awaitable[Any]], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        await fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


async def run_api(
    db: Any, repeat: int, sqlite_path: Path | None
) -> list[tuple[str, float, float | None]]:
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from tickrun.functions.artifacts.targets import ArtifactRoots
    from tickrun.functions.runs.api import add_routes

    app = web.Application()
    add_routes(app, db, ArtifactRoots.of([]))
    out: list[tuple[str, float, float | None]] = []
    async with TestClient(TestServer(app)) as client:

        async def get(qs: str) -> dict[str, Any]:
            resp = await client.get(f"/api/runs?{qs}")
            body = await resp.json()
            if resp.status != 200:
                raise SystemExit(f"{qs}: {resp.status} {body}")
            return body  # type: ignore[no-any-return]

        t0 = time.perf_counter()
        first = await get("limit=50")
        plain = time.perf_counter() - t0
        # A plain page does not wait for the first build of the params/results index (it runs
        # in a thread); a sort by a result does.
        t0 = time.perf_counter()
        await get("limit=50&sort=results.sharpe")
        build = time.perf_counter() - t0
        print(
            f"first page on a never-indexed store: {plain:.2f} s (indexing: {first['indexing']});"
            f" first sort by a result (waits for the index build): {build:.2f} s"
            f" ({first['total']} runs)"
        )
        for name, qs, sqls in CALLS:
            body = await get(qs)
            ours = await abest_of(lambda qs=qs: get(qs), repeat)
            base = None
            if sqlite_path is not None:
                con = sqlite3.connect(sqlite_path)

                def raw(sqls: list[str] = sqls, con: sqlite3.Connection = con) -> None:
                    for s in sqls:
                        con.execute(s).fetchall()

                base = best_of(raw, repeat)
                con.close()
            out.append((name, ours, base))
            progress(f"{name}: {len(body['runs'])} runs of {body['total']}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.ui")
    ap.add_argument("--runs", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--db-url", default=None, help="default: a fresh SQLite file")
    ap.add_argument("--keep", default=None, help="folder for the SQLite file (kept)")
    ap.add_argument("--no-browser", action="store_true", help="skip the first-paint part")
    args = ap.parse_args()
    from tickrun.functions.runs.db import SqlRunDB

    work = Path(args.keep or tempfile.mkdtemp(prefix="tickrun-bench-ui-"))
    work.mkdir(parents=True, exist_ok=True)
    sqlite_path = None
    url = args.db_url
    if url is None:
        sqlite_path = work / "runs.db"
        url = f"sqlite:///{sqlite_path}"
    db = SqlRunDB(url)
    existing = len(db.list_runs(limit=1))
    if not existing:
        fill_s = fill(db, args.runs)
        print(f"filled {args.runs} runs in {fill_s:.1f} s")
    rows = asyncio.run(run_api(db, args.repeat, sqlite_path))
    print(f"\nruns page API, {args.runs} runs, median of {args.repeat} ({url.split(':')[0]})")
    print(f"{'call':34} {'tickrun ms':>11} {'json SQL ms':>12} {'ratio':>7}")
    for name, ours, base in rows:
        b = f"{base * 1000:12.1f}" if base is not None else f"{'-':>12}"
        ratio = f"{base / ours:6.1f}x" if base else f"{'-':>7}"
        print(f"{name:34} {ours * 1000:11.1f} {b} {ratio}")
    print("ratio = baseline / tickrun (above 1: tickrun faster); tickrun includes HTTP and JSON")
    if not args.no_browser:
        from . import paint

        if paint.available():
            paint.report(asyncio.run(paint.run(db, args.repeat)), args.repeat)
        else:
            print(f"\nbrowser part skipped: needs playwright and {paint.CHROMIUM}")
    db.close()


if __name__ == "__main__":
    main()
