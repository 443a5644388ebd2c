"""MLflow's side of the runs page benchmark. Runs in MLflow's own venv (stdlib + mlflow only).

Usage: python mlflow_driver.py WORKDIR TICKRUN_SQLITE REPEAT → one JSON line.

Loads the runs of a tickrun run DB (iteration 0) into a fresh MLflow SQLite tracking store with
MLflow's own schema (params as MLflow strings, results as metrics and latest_metrics, labels as
tags), by bulk SQL (MLflow's API would take an hour for 100,000 runs), then times
``MlflowClient.search_runs`` for the same questions the runs page asks (``QUESTIONS``).
"""

from __future__ import annotations

import base64
import json
import logging
import multiprocessing
import sqlite3
import statistics
import sys
import time
from typing import Any

# name → (filter_string, order_by, offset). MLflow compares params as strings (= != LIKE only)
# and sorts them as strings; the tickrun side asks the numeric question where MLflow cannot.
NEWEST = ["attributes.start_time DESC"]
QUESTIONS = {
    "first page": ("", NEWEST, 0),
    "sort by results.sharpe": ("", ["metrics.sharpe DESC"], 0),
    "filter param.window=96": ("params.window = '96'", NEWEST, 0),
    "filter label strategy=meanrev": (
        "tags.strategy = 'meanrev'",
        ["attributes.start_time DESC"],
        0,
    ),
    "text q=logreg-4242": (
        "attributes.run_name LIKE '%logreg-4242%'",
        ["attributes.start_time DESC"],
        0,
    ),
    "sort by param + filter result": ("metrics.accuracy > 0.6", ["params.lr ASC"], 0),
    "deep page offset=50000": ("", NEWEST, 50000),
}


SLOW_S = 20.0
TIMEOUT_S = 120.0


def _timed(
    client: Any, exp: str, flt: str, order: list[str], token: str | None
) -> tuple[float, int | None]:
    """One search_runs call in a forked child, stopped after TIMEOUT_S: (seconds, rows or None)."""
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()

    def child() -> None:
        t0 = time.perf_counter()
        page = client.search_runs([exp], flt, max_results=50, order_by=order, page_token=token)
        queue.put((time.perf_counter() - t0, len(page)))

    proc = ctx.Process(target=child)
    t0 = time.perf_counter()
    proc.start()
    proc.join(TIMEOUT_S)
    if proc.is_alive():
        proc.terminate()
        proc.join()
        return time.perf_counter() - t0, None
    took, n = queue.get(timeout=5)
    return float(took), int(n)


def load(src: str, dst_uri: str) -> tuple[str, float]:
    import mlflow

    mlflow.set_tracking_uri(dst_uri)
    client = mlflow.MlflowClient()
    exp = client.create_experiment("bench-ui")
    dst = sqlite3.connect(dst_uri[len("sqlite:///") :])
    t0 = time.perf_counter()
    rows = sqlite3.connect(src).execute("SELECT body FROM tickrun_runs WHERE iteration = 0")
    runs, params, metrics, latest, tags = [], [], [], [], []
    for (body,) in rows:
        r = json.loads(body)
        rid = r["uid"][:32]
        start = int(r["created_at"] * 1000)
        end = int((r.get("ended_at") or r["created_at"]) * 1000)
        status = "FINISHED" if r["state"] == "completed" else "FAILED"
        runs.append(
            (
                rid,
                r["name"],
                "LOCAL",
                "",
                "",
                "bench",
                status,
                start,
                end,
                "",
                "active",
                f"file:///tmp/mlruns/{rid}",
                int(exp),
            )
        )
        params += [(k, str(v), rid) for k, v in r["params"].items()]
        for k, v in r["results"].items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                metrics.append((k, float(v), end, rid, 0, 0))
                latest.append((k, float(v), end, 0, 0, rid))
        tags += [(k, v, rid) for k, v in r["labels"].items()]
        tags.append(("mlflow.runName", r["name"], rid))
    dst.executemany(
        "INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, "
        "status, start_time, end_time, source_version, lifecycle_stage, artifact_uri, "
        "experiment_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        runs,
    )
    dst.executemany("INSERT INTO params (key, value, run_uuid) VALUES (?,?,?)", params)
    dst.executemany(
        "INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan) VALUES (?,?,?,?,?,?)",
        metrics,
    )
    dst.executemany(
        "INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid) "
        "VALUES (?,?,?,?,?,?)",
        latest,
    )
    dst.executemany("INSERT INTO tags (key, value, run_uuid) VALUES (?,?,?)", tags)
    dst.commit()
    dst.close()
    return exp, time.perf_counter() - t0


def main() -> None:
    workdir, src, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3])
    logging.disable(logging.WARNING)
    import mlflow

    uri = f"sqlite:///{workdir}/mlflow.db"
    exp, load_s = load(src, uri)
    client = mlflow.MlflowClient(tracking_uri=uri)
    out: dict[str, object] = {"mlflow_version": mlflow.__version__, "load_s": load_s}
    times: dict[str, float] = {}
    counts: dict[str, int] = {}
    for name, (flt, order, offset) in QUESTIONS.items():
        # MLflow's SQL store pages with an offset inside its page token.
        token = (
            base64.b64encode(json.dumps({"offset": offset}).encode()).decode() if offset else None
        )
        samples = []
        for _ in range(repeat):
            took, n = _timed(client, exp, flt, order, token)
            print(f"… MLflow {name}: {took:.2f} s", file=sys.stderr, flush=True)
            samples.append(took)
            if n is None or took > SLOW_S:  # timed out, or so slow one sample is enough
                break
        counts[name] = -1 if n is None else n
        times[name] = statistics.median(samples)
    out["times"] = times
    out["counts"] = counts
    print(json.dumps(out))


if __name__ == "__main__":
    main()
