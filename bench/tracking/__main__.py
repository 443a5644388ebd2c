"""Tracking benchmark: tickrun's run tracking vs MLflow's, measured in the same run.

    python -m bench.tracking [--quick] [--plot /tmp/tracking-bench.png]

- results/s: ``context.log_result`` (buffered, flushed to SQLite at the end and every second)
  and, for a like-for-like durable number, ``log_result`` + ``commit()`` per call; against
  MLflow ``log_metric`` on a SQLite tracking store (one transaction per call).
- artifacts/s: ``log_artifact(local_path=<1 MB file>)`` to a local folder vs MLflow's
  ``log_artifact`` to its local file store.
- run overhead: a no-op job through ``run_function`` and through ``tickrun run`` vs calling the
  function directly (in-process, and as ``python noop_job.py``).

MLflow runs in its own interpreter (``$TICKRUN_MLFLOW_PYTHON``, else ``/tmp/mlflow-venv``, else
this one): ``python -m venv /tmp/mlflow-venv && /tmp/mlflow-venv/bin/pip install mlflow``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
NOOP = HERE / "noop_job.py"
MB = 1024 * 1024


def progress(msg: str) -> None:
    print(f"… {msg}", file=sys.stderr, flush=True)


def mlflow_python() -> str:
    for cand in (
        os.environ.get("TICKRUN_MLFLOW_PYTHON"),
        "/tmp/mlflow-venv/bin/python",
        sys.executable,
    ):
        if cand and Path(cand).exists():
            ok = subprocess.run([cand, "-c", "import mlflow"], capture_output=True).returncode
            if ok == 0:
                return cand
    raise SystemExit(
        "MLflow not found: python -m venv /tmp/mlflow-venv && "
        "/tmp/mlflow-venv/bin/pip install mlflow (or set TICKRUN_MLFLOW_PYTHON)"
    )


def bench_tickrun(work: Path, n_results: int, n_durable: int, n_arts: int) -> dict[str, float]:
    from tickrun.functions.artifacts import LocalArtifactStore
    from tickrun.functions.runs import SqlRunDB, TrackingSettings, run_function

    settings = TrackingSettings(
        home=work, artifact_path=str(work / "artifacts"), db_url=f"sqlite:///{work / 'runs.db'}"
    )
    db = SqlRunDB(settings.db_url)
    store = LocalArtifactStore(settings.artifact_path)
    work.mkdir(parents=True, exist_ok=True)
    blob = work / "blob.bin"
    blob.write_bytes(os.urandom(MB))
    out: dict[str, float] = {}

    def job(context: Any) -> None:
        t0 = time.perf_counter()
        for i in range(n_results):
            context.log_result(f"m{i % 50}", float(i))
        context.commit()  # persisted before the clock stops
        out["log_result_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i in range(n_durable):
            context.log_result(f"d{i % 50}", float(i))
            context.commit()
        out["log_result_durable_s"] = time.perf_counter() - t0
        context.log_artifact("warmup", local_path=blob)
        t0 = time.perf_counter()
        for i in range(n_arts):
            context.log_artifact(f"a{i}", local_path=blob)
        context.commit()
        out["log_artifact_s"] = time.perf_counter() - t0

    run = run_function(job, settings=settings, db=db, store=store)
    if run.state != "completed":
        raise SystemExit(f"tickrun bench run failed: {run.error}")
    stored = db.get_run(run.uid)
    assert stored.results[f"m{(n_results - 1) % 50}"] == float(n_results - 1)
    return out


def bench_overhead(work: Path, n_inproc: int, n_cli: int) -> dict[str, float]:
    from tickrun.functions.runs import SqlRunDB, TrackingSettings, run_function
    from tickrun.functions.runs.job_handler import load_callable

    fn = load_callable(f"{NOOP}:noop")
    loops = 100000
    t0 = time.perf_counter()
    for _ in range(loops):
        fn(None)
    direct = (time.perf_counter() - t0) / loops
    settings = TrackingSettings(
        home=work, artifact_path=str(work / "ovh-artifacts"), db_url=f"sqlite:///{work / 'ovh.db'}"
    )
    db = SqlRunDB(settings.db_url)
    run_function(fn, settings=settings, db=db)  # warm: tables, imports
    times = []
    for _ in range(n_inproc):
        t0 = time.perf_counter()
        run_function(fn, settings=settings, db=db)
        times.append(time.perf_counter() - t0)
    env = {**os.environ, "TICKRUN_HOME": str(work / "cli-home")}
    cli, plain = [], []
    for _ in range(n_cli):
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "tickrun", "--log-level", "WARNING", "run", f"{NOOP}:noop"],
            env=env,
            check=True,
            capture_output=True,
        )
        cli.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, str(NOOP)], check=True, capture_output=True)
        plain.append(time.perf_counter() - t0)
    return {
        "direct_s": direct,
        "run_function_s": statistics.median(times),
        "cli_s": statistics.median(cli),
        "python_script_s": statistics.median(plain),
    }


def plot(path: Path, r: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 3.8))
    ax1, ax2, ax3 = fig.subplots(1, 3)
    names = ["tickrun\nbuffered", "tickrun\ncommit/call", "MLflow\nlog_metric"]
    vals = [
        r["tickrun_results_per_s"],
        r["tickrun_durable_results_per_s"],
        r["mlflow_results_per_s"],
    ]
    ax1.bar(names, vals, color=["tab:green", "tab:olive", "tab:gray"])
    ax1.set_yscale("log")
    ax1.set_title("results logged per second (log scale)")
    ax2.bar(
        ["tickrun\n(incl. sha256)", "MLflow\n(no hash)"],
        [r["tickrun_artifacts_per_s"], r["mlflow_artifacts_per_s"]],
        color=["tab:green", "tab:gray"],
    )
    ax2.set_title("1 MB artifacts logged per second")
    ax3.bar(
        ["direct\ncall", "run_function\n(in-process)", "python\nfile.py", "tickrun\nrun"],
        [r["direct_ms"], r["run_function_ms"], r["python_script_ms"], r["cli_ms"]],
        color=["tab:gray", "tab:green", "tab:gray", "tab:green"],
    )
    ax3.set_title("no-op job wall time (ms)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.tracking")
    ap.add_argument("--quick", action="store_true", help="fewer iterations (CI smoke)")
    ap.add_argument(
        "--plot",
        default=str(Path(tempfile.gettempdir()) / "tracking-bench.png"),
        help="PNG to write ('' for none)",
    )
    ap.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = ap.parse_args()
    n_res, n_dur, n_ml, n_arts = (20000, 200, 200, 5) if args.quick else (200000, 1000, 1000, 20)
    py = mlflow_python()
    with tempfile.TemporaryDirectory(prefix="tickrun-bench-") as tmp:
        work = Path(tmp)
        progress(f"MLflow: {n_ml} log_metric, {n_arts} x 1 MB log_artifact (sqlite store)")
        proc = subprocess.run(
            [
                py,
                str(HERE / "mlflow_driver.py"),
                str(work / "mlflow"),
                str(n_ml),
                str(n_arts),
                str(MB),
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if proc.returncode != 0:
            raise SystemExit(f"MLflow driver failed:\n{proc.stderr[-2000:]}")
        ml = json.loads(proc.stdout.strip().splitlines()[-1])
        progress(f"tickrun: {n_res} log_result, {n_dur} durable, {n_arts} x 1 MB log_artifact")
        tk = bench_tickrun(work / "tickrun", n_res, n_dur, n_arts)
        progress("run overhead: no-op job")
        ov = bench_overhead(work / "overhead", 10 if args.quick else 30, 2 if args.quick else 5)
    r: dict[str, Any] = {
        "mlflow_version": ml["mlflow_version"],
        "tickrun_results_per_s": n_res / tk["log_result_s"],
        "tickrun_durable_results_per_s": n_dur / tk["log_result_durable_s"],
        "mlflow_results_per_s": n_ml / ml["log_metric_s"],
        "tickrun_artifacts_per_s": n_arts / tk["log_artifact_s"],
        "mlflow_artifacts_per_s": n_arts / ml["log_artifact_s"],
        "direct_ms": ov["direct_s"] * 1e3,
        "run_function_ms": ov["run_function_s"] * 1e3,
        "cli_ms": ov["cli_s"] * 1e3,
        "python_script_ms": ov["python_script_s"] * 1e3,
    }
    rows = [
        (
            "log_result/s (buffered, flushed)",
            r["tickrun_results_per_s"],
            r["mlflow_results_per_s"],
            "MLflow log_metric/s",
        ),
        (
            "log_result/s (commit every call)",
            r["tickrun_durable_results_per_s"],
            r["mlflow_results_per_s"],
            "MLflow log_metric/s",
        ),
        (
            "log_artifact(1 MB)/s",
            r["tickrun_artifacts_per_s"],
            r["mlflow_artifacts_per_s"],
            "MLflow log_artifact/s",
        ),
    ]
    print(f"\ntracking benchmark (MLflow {r['mlflow_version']}, SQLite stores, local artifacts)")
    print(f"{'metric':<36}{'tickrun':>14}{'baseline':>14}  ratio  baseline is")
    for name, ours, base, what in rows:
        print(f"{name:<36}{ours:>14,.0f}{base:>14,.1f}  {ours / base:5.1f}x  {what}")
    print("\nrun overhead, no-op job (median wall time)")
    print(
        f"  run_function(noop)         {r['run_function_ms']:8.2f} ms   vs direct call "
        f"{r['direct_ms'] * 1e3:.2f} µs  → overhead {r['run_function_ms']:.2f} ms"
    )
    print(
        f"  tickrun run noop_job.py    {r['cli_ms']:8.0f} ms   vs python noop_job.py "
        f"{r['python_script_ms']:.0f} ms  → ratio {r['cli_ms'] / r['python_script_ms']:.1f}x"
    )
    goal = r["tickrun_results_per_s"] / r["mlflow_results_per_s"]
    print(f"\ngoal ≥ 10x MLflow for results: {'met' if goal >= 10 else 'NOT met'} ({goal:,.0f}x)")
    if args.plot:
        plot(Path(args.plot), r)
        print(f"plot: {args.plot}")
    if args.json:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
