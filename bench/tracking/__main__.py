"""Tracking benchmark: tickrun's run tracking vs MLflow's, measured in the same run.

    python -m bench.tracking [--quick] [--plot /tmp/tracking-bench.png]

- results/s: ``context.log_result`` (buffered, flushed to SQLite at the end and every second)
  and, for a like-for-like durable number, ``log_result`` + ``commit()`` per call; against
  MLflow ``log_metric`` on a SQLite tracking store (one transaction per call).
- artifacts/s: ``log_artifact(local_path=<1 MB file>)`` to a local folder vs MLflow's
  ``log_artifact`` to its local file store. Per call MLflow copies the file into a temp file in
  the run's folder (Python read/write), renames it over the name and copies the file's times;
  no hash, no record, no fsync. tickrun copies with the kernel into a temp file it renames (no
  fsync either), computes the stored copy's sha256 and writes a record to the run DB. The goal
  (>= 1.5x) is judged *through* ``commit()``: the clock stops when every record is in the run
  DB with its sha256, and after the run the bench reads them back (a new reader) and checks
  each sha256 against the file's. The calls alone (the loop the job runs, hashes possibly still
  running) are printed beside it, not judged. ``--rounds`` rounds of 50 files a side, MLflow
  and tickrun back to back in each, each side first in every other round; the goal is judged
  on the median of the rounds' ratios, as ``bench/http`` and ``bench/kafka`` judge theirs (the
  machine may be shared: the median of each side, and each round's ratios, are printed).
- run overhead: a no-op job through ``run_function`` and through ``tickrun run`` vs calling the
  function directly (in-process, and as ``python noop_job.py``). Goal: ``tickrun run`` at most
  200 ms over ``python noop_job.py`` (medians of interleaved runs).

The tickrun side records runs as ``run_function`` and ``tickrun run`` do by default (a SQLite
file through the stdlib driver, :class:`LiteRunDB`). MLflow runs in its own interpreter
(``$TICKRUN_MLFLOW_PYTHON``, else the repo's ``.venv-mlflow`` that ``make bench`` makes, else
``/tmp/mlflow-venv``, else this one).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.rounds import in_turn

HERE = Path(__file__).resolve().parent
NOOP = HERE / "noop_job.py"
MB = 1024 * 1024
ARTIFACT_GOAL = 1.5  # x MLflow's log_artifact(1 MB)/s
CLI_GOAL_MS = 200.0  # tickrun run noop_job.py over python noop_job.py


def progress(msg: str) -> None:
    print(f"… {msg}", file=sys.stderr, flush=True)


def mlflow_python() -> str:
    for cand in (
        os.environ.get("TICKRUN_MLFLOW_PYTHON"),
        str(HERE.parents[1] / ".venv-mlflow" / "bin" / "python"),
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
    store = LocalArtifactStore(settings.artifact_path)
    work.mkdir(parents=True, exist_ok=True)
    blob = work / "blob.bin"
    data = os.urandom(MB)
    blob.write_bytes(data)
    want = hashlib.sha256(data).hexdigest()
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
        context.commit()
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(n_arts):
            context.log_artifact(f"a{i}", local_path=blob)
        out["log_artifact_calls_s"] = time.perf_counter() - t0
        context.commit()  # waits for the hashes still running, writes the records
        out["log_artifact_s"] = time.perf_counter() - t0
        # CPU of the whole process (every thread: the hashes too), steadier than wall time
        # on a shared machine.
        out["log_artifact_cpu_s"] = time.process_time() - c0

    # The run DB run_function picks by default (as tickrun run does): LiteRunDB on SQLite.
    run = run_function(job, settings=settings, store=store)
    if run.state != "completed":
        raise SystemExit(f"tickrun bench run failed: {run.error}")
    db = SqlRunDB(settings.db_url)
    stored = db.get_run(run.uid)
    if n_results:
        assert stored.results[f"m{(n_results - 1) % 50}"] == float(n_results - 1)
    # A new reader of the run DB: every record is there, with the stored bytes' sha256.
    arts = db.list_artifacts(stored.project, uid=run.uid)
    if len(arts) != n_arts + 1 or not all(a.sha256 == want and a.size_bytes == MB for a in arts):
        raise SystemExit(
            f"tickrun bench: {len(arts)} artifact records, expected {n_arts + 1} with sha256 {want}"
        )
    return out


def bench_overhead(work: Path, n_inproc: int, n_cli: int) -> dict[str, float]:
    from tickrun.functions.runs import TrackingSettings, run_function
    from tickrun.functions.runs.db import open_recording_db
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
    db = open_recording_db(settings)
    run_function(fn, settings=settings, db=db)  # warm: tables, imports
    times = []
    for _ in range(n_inproc):
        t0 = time.perf_counter()
        run_function(fn, settings=settings, db=db)
        times.append(time.perf_counter() - t0)
    env = {**os.environ, "TICKRUN_HOME": str(work / "cli-home")}
    for name in ("TICKRUN_DB_URL", "TICKRUN_CONTROLLER_URL", "TICKRUN_ARTIFACT_PATH"):
        env.pop(name, None)  # the embedded SQLite run DB and artifact folder, as out of the box
    # Python caches bytecode out of the box; some CI images and sandboxes turn that off, and
    # then every start compiles every module it imports (+30-50 ms for `tickrun run` here):
    # that measures the compiler, not what a user waits for. One untimed start of each
    # command writes the caches.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    commands = (
        [sys.executable, "-m", "tickrun", "--help"],
        [sys.executable, "-m", "tickrun", "--log-level", "WARNING", "run", f"{NOOP}:noop"],
        [sys.executable, str(NOOP)],
    )
    for cmd in commands:
        subprocess.run(cmd, env=env, check=True, capture_output=True)
    cli, plain, helps = [], [], []
    for _ in range(n_cli):
        for cmd, times_s in zip(commands, (helps, cli, plain), strict=True):
            t0 = time.perf_counter()
            subprocess.run(cmd, env=env, check=True, capture_output=True)
            times_s.append(time.perf_counter() - t0)
    return {
        "direct_s": direct,
        "run_function_s": statistics.median(times),
        "cli_s": statistics.median(cli),
        "cli_min_s": min(cli),
        "python_script_min_s": min(plain),
        "cli_help_s": statistics.median(helps),
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
        ["tickrun\ncalls", "tickrun thru\ncommit (sha256)", "MLflow\n(no hash)"],
        [
            r["tickrun_artifact_calls_per_s"],
            r["tickrun_artifacts_per_s"],
            r["mlflow_artifacts_per_s"],
        ],
        color=["tab:green", "tab:olive", "tab:gray"],
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


def mlflow_round(py: str, work: Path, n_metrics: int, n_arts: int) -> dict[str, Any]:
    proc = subprocess.run(
        [py, str(HERE / "mlflow_driver.py"), str(work), str(n_metrics), str(n_arts), str(MB)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0:
        raise SystemExit(f"MLflow driver failed:\n{proc.stderr[-2000:]}")
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.tracking")
    ap.add_argument("--quick", action="store_true", help="fewer iterations (CI smoke)")
    ap.add_argument(
        "--rounds", type=int, default=None, help="artifact rounds (default 3; --quick 1)"
    )
    ap.add_argument(
        "--plot",
        default=str(Path(tempfile.gettempdir()) / "tracking-bench.png"),
        help="PNG to write ('' for none)",
    )
    ap.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = ap.parse_args()
    n_res, n_dur, n_ml, n_arts = (20000, 200, 200, 5) if args.quick else (200000, 1000, 1000, 50)
    rounds = args.rounds or (1 if args.quick else 3)
    py = mlflow_python()
    ml_rates: list[float] = []
    tk_rates: list[float] = []
    tk_call_rates: list[float] = []
    ml_cpu_ms: list[float] = []
    tk_cpu_ms: list[float] = []
    with tempfile.TemporaryDirectory(prefix="tickrun-bench-") as tmp:
        work = Path(tmp)
        tk: dict[str, float] = {}
        ml: dict[str, Any] = {}

        def ml_side(i: int) -> dict[str, Any]:
            first = i == 0
            progress(
                f"round {i + 1}/{rounds}: MLflow {n_ml if first else 1} log_metric, "
                f"{n_arts} x 1 MB log_artifact (sqlite store)"
            )
            return mlflow_round(py, work / f"mlflow{i}", n_ml if first else 1, n_arts)

        def tk_side(i: int) -> dict[str, float]:
            first = i == 0
            progress(
                f"round {i + 1}/{rounds}: tickrun {n_res if first else 0} log_result, "
                f"{n_dur if first else 0} durable, {n_arts} x 1 MB log_artifact"
            )
            return bench_tickrun(
                work / f"tickrun{i}", n_res if first else 0, n_dur if first else 0, n_arts
            )

        for i in range(rounds):
            first = i == 0
            sides = {name: side(i) for name, side in in_turn(i, ("ml", ml_side), ("tk", tk_side))}
            got, out = sides["ml"], sides["tk"]
            ml = got if first else ml
            ml_rates.append(n_arts / got["log_artifact_s"])
            ml_cpu_ms.append(got["log_artifact_cpu_s"] / n_arts * 1e3)
            tk = out if first else tk
            tk_rates.append(n_arts / out["log_artifact_s"])
            tk_call_rates.append(n_arts / out["log_artifact_calls_s"])
            tk_cpu_ms.append(out["log_artifact_cpu_s"] / n_arts * 1e3)
        progress("run overhead: no-op job")
        ov = bench_overhead(work / "overhead", 10 if args.quick else 30, 3 if args.quick else 10)
    r: dict[str, Any] = {
        "mlflow_version": ml["mlflow_version"],
        "tickrun_results_per_s": n_res / tk["log_result_s"],
        "tickrun_durable_results_per_s": n_dur / tk["log_result_durable_s"],
        "mlflow_results_per_s": n_ml / ml["log_metric_s"],
        "tickrun_artifacts_per_s": statistics.median(tk_rates),
        "tickrun_artifact_calls_per_s": statistics.median(tk_call_rates),
        "mlflow_artifacts_per_s": statistics.median(ml_rates),
        "mlflow_artifact_cpu_ms": statistics.median(ml_cpu_ms),
        "tickrun_artifact_cpu_ms": statistics.median(tk_cpu_ms),
        "artifact_round_ratios": [t / m for t, m in zip(tk_rates, ml_rates, strict=True)],
        "artifact_call_round_ratios": [t / m for t, m in zip(tk_call_rates, ml_rates, strict=True)],
        "direct_ms": ov["direct_s"] * 1e3,
        "run_function_ms": ov["run_function_s"] * 1e3,
        "cli_ms": ov["cli_s"] * 1e3,
        "cli_min_ms": ov["cli_min_s"] * 1e3,
        "python_script_min_ms": ov["python_script_min_s"] * 1e3,
        "cli_help_ms": ov["cli_help_s"] * 1e3,
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
            "log_artifact(1 MB)/s, calls",
            r["tickrun_artifact_calls_per_s"],
            r["mlflow_artifacts_per_s"],
            "MLflow log_artifact/s",
        ),
        (
            "log_artifact(1 MB)/s, thru commit",
            r["tickrun_artifacts_per_s"],
            r["mlflow_artifacts_per_s"],
            "MLflow log_artifact/s",
        ),
    ]
    print(f"\ntracking benchmark (MLflow {r['mlflow_version']}, SQLite stores, local artifacts)")
    print(f"{'metric':<36}{'tickrun':>14}{'baseline':>14}  ratio  baseline is")
    for name, ours, base, what in rows:
        print(f"{name:<36}{ours:>14,.0f}{base:>14,.1f}  {ours / base:5.1f}x  {what}")
    calls_text = ", ".join(f"{x:.2f}x" for x in r["artifact_call_round_ratios"])
    rounds_text = ", ".join(f"{x:.2f}x" for x in r["artifact_round_ratios"])
    print(
        f"  log_artifact per round (tickrun/MLflow): calls {calls_text}; thru commit {rounds_text}"
    )
    print(
        f"  CPU a call (every thread, medians): tickrun thru commit "
        f"{r['tickrun_artifact_cpu_ms']:.2f} ms, MLflow {r['mlflow_artifact_cpu_ms']:.2f} ms"
    )
    print("  (rates: medians of the rounds; the goal: the median of the rounds' ratios, each")
    print("  side first in every other round; 'thru commit' stops the clock when every record")
    print("  is in the run DB with its sha256, the goal's figure; 'calls' when the last call")
    print("  returns, its hashes maybe still running)")
    print("\nrun overhead, no-op job (median wall time)")
    print(
        f"  run_function(noop)         {r['run_function_ms']:8.2f} ms   vs direct call "
        f"{r['direct_ms'] * 1e3:.2f} µs  → overhead {r['run_function_ms']:.2f} ms"
    )
    over = r["cli_ms"] - r["python_script_ms"]
    print(
        f"  tickrun run noop_job.py    {r['cli_ms']:8.0f} ms   vs python noop_job.py "
        f"{r['python_script_ms']:.0f} ms  → +{over:.0f} ms, ratio "
        f"{r['cli_ms'] / r['python_script_ms']:.1f}x"
    )
    print(
        f"  (fastest of each: {r['cli_min_ms']:.0f} vs {r['python_script_min_ms']:.0f} ms → "
        f"+{r['cli_min_ms'] - r['python_script_min_ms']:.0f} ms; the goal is judged on medians)"
    )
    print(f"  tickrun --help             {r['cli_help_ms']:8.0f} ms")
    goal = r["tickrun_results_per_s"] / r["mlflow_results_per_s"]
    art = statistics.median(r["artifact_round_ratios"])
    art_calls = statistics.median(r["artifact_call_round_ratios"])
    art_of_medians = r["tickrun_artifacts_per_s"] / r["mlflow_artifacts_per_s"]
    print("\ngoals")
    print(f"  results ≥ 10x MLflow log_metric:         {met(goal >= 10)} ({goal:,.0f}x)")
    print(
        f"  log_artifact(1 MB) ≥ {ARTIFACT_GOAL}x MLflow (thru commit): "
        f"{met(art >= ARTIFACT_GOAL)} ({art:.2f}x, the median of the rounds' ratios; the ratio "
        f"of the medians {art_of_medians:.2f}x; the calls alone {art_calls:.2f}x, not judged)"
    )
    print(
        f"  tickrun run ≤ python + {CLI_GOAL_MS:.0f} ms:          {met(over <= CLI_GOAL_MS)} "
        f"(+{over:.0f} ms)"
    )
    if args.plot:
        plot(Path(args.plot), r)
        print(f"plot: {args.plot}")
    if args.json:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
