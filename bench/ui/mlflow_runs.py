"""The runs page's questions asked of tickrun's API and of MLflow's ``search_runs``, same runs.

    python -m bench.ui.mlflow_runs [--runs 100000] [--repeat 5] [--keep DIR]

Fills (or reuses, with ``--keep``) the same SQLite run DB as ``python -m bench.ui``, loads its runs
into an MLflow tracking store (mlflow_driver.py, in MLflow's own interpreter:
``$TICKRUN_MLFLOW_PYTHON``, else ``.venv-mlflow`` or ``/tmp/mlflow-venv``), and prints each
question's median time on both and the ratio. MLflow has no total count; tickrun's answer
includes one (and the column keys), over HTTP.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from .__main__ import abest_of, fill

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
TICKRUN_QUERIES = {
    "first page": "limit=50",
    "sort by results.sharpe": "limit=50&sort=results.sharpe&order=desc",
    "filter param.window=96": "limit=50&param.window=96",
    "filter label strategy=meanrev": "limit=50&label=strategy=meanrev",
    "text q=logreg-4242": "limit=50&q=logreg-4242",
    "sort by param + filter result": "limit=50&sort=params.lr&order=asc&result.accuracy=gt:0.6",
    "deep page offset=50000": "limit=50&offset=50000",
}


def mlflow_python() -> str:
    for cand in (
        os.environ.get("TICKRUN_MLFLOW_PYTHON"),
        str(ROOT / ".venv-mlflow" / "bin" / "python"),
        "/tmp/mlflow-venv/bin/python",
    ):
        if (
            cand
            and Path(cand).exists()
            and subprocess.run([cand, "-c", "import mlflow"], capture_output=True).returncode == 0
        ):
            return cand
    raise SystemExit("MLflow not found: set TICKRUN_MLFLOW_PYTHON to a python with mlflow")


async def tickrun_times(db: Any, repeat: int) -> dict[str, tuple[float, int, int]]:
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from tickrun.functions.artifacts.targets import ArtifactRoots
    from tickrun.functions.runs.api import add_routes

    app = web.Application()
    add_routes(app, db, ArtifactRoots.of([]))
    out: dict[str, tuple[float, int, int]] = {}
    async with TestClient(TestServer(app)) as client:

        async def get(qs: str) -> dict[str, Any]:
            resp = await client.get(f"/api/runs?{qs}")
            body: dict[str, Any] = await resp.json()
            if resp.status != 200:
                raise SystemExit(f"{qs}: {resp.status} {body}")
            return body

        await get("limit=1")  # builds the search index once
        for name, qs in TICKRUN_QUERIES.items():
            body = await get(qs)
            t = await abest_of(lambda qs=qs: get(qs), repeat)
            out[name] = (t, len(body["runs"]), body["total"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.ui.mlflow_runs")
    ap.add_argument("--runs", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--keep", default=None, help="folder of the SQLite run DB (reused if filled)")
    args = ap.parse_args()
    from tickrun.functions.runs.db import SqlRunDB

    work = Path(args.keep or tempfile.mkdtemp(prefix="tickrun-bench-ui-"))
    work.mkdir(parents=True, exist_ok=True)
    path = work / "runs.db"
    db = SqlRunDB(f"sqlite:///{path}")
    if not db.list_runs(limit=1):
        print(f"filled {args.runs} runs in {fill(db, args.runs):.1f} s")
    ours = asyncio.run(tickrun_times(db, args.repeat))
    db.close()
    ml_dir = Path(tempfile.mkdtemp(prefix="tickrun-bench-ui-mlflow-"))
    proc = subprocess.run(
        [mlflow_python(), str(HERE / "mlflow_driver.py"), str(ml_dir), str(path), str(args.repeat)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"MLflow driver failed: {proc.stderr[-2000:]}")
    theirs = json.loads(proc.stdout.strip().splitlines()[-1])
    print(
        f"\nruns page questions, {args.runs} runs, median of {args.repeat}: tickrun GET /api/runs "
        f"(HTTP, with total) vs MLflow {theirs['mlflow_version']} search_runs (SQLite, in-process;"
        f" loaded in {theirs['load_s']:.0f} s)"
    )
    print(f"{'question':32} {'tickrun ms':>10} {'MLflow ms':>10} {'ratio':>7}  rows/total")
    for name, (t, n, total) in ours.items():
        m = theirs["times"][name]
        timed_out = theirs["counts"][name] < 0
        shown = f"{'>' if timed_out else ''}{m * 1000:.1f}"
        print(
            f"{name:32} {t * 1000:10.1f} {shown:>10} {'>' if timed_out else ''}{m / t:.1f}x  "
            f"{n}/{total} (MLflow {'timed out' if timed_out else theirs['counts'][name]})"
        )
    print("ratio = MLflow / tickrun (above 1: tickrun faster)")


if __name__ == "__main__":
    main()
