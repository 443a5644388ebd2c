"""Model serving throughput and latency: ``hub://model_server`` vs ``mlflow models serve``.

Two models trained through ``hub://auto_trainer`` on hourly BTCUSDT features: a scaled
LogisticRegression and the demo's XGBoost classifier. Each is served by both servers, with the
same number of worker processes; the same load generator (wrk, one thread, N keep-alive
connections) posts the same 1-row MLflow ``dataframe_split`` request to ``/invocations`` on each,
alternating, in the same run. Before timing, both servers must return identical predictions for
a sample of rows.

MLflow runs from its own interpreter, found as bench.tracking finds it: ``--mlflow-venv``, else
``$TICKRUN_MLFLOW_PYTHON`` (what ``make bench`` sets), else ``/tmp/mlflow-venv``, else this one;
it needs ``mlflow`` (and ``xgboost`` for the XGBoost case) and its ``mlflow`` command beside it.

    python -m bench.serving [--models logreg,xgboost] [--workers 1] [--connections 16]
        [--duration-s 8] [--rounds 3] [--mlflow-venv /tmp/mlflow-venv]

``--monitoring [--kafka]`` instead compares hub://model_server:1.3 with prediction recording on
(JSONL; with ``--kafka`` also a topic on a real broker) vs off (bench/serving/monitoring.py);
MLflow is not needed then.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from bench.wrk import Sample, median, print_table, wrk
from tickrun.hub.sampledata import market_data

HERE = Path(__file__).resolve().parent
DATA = market_data()


def post(url: str, body: Any) -> Any:
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server behind {url} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout_s:.0f}s")


@dataclass(frozen=True)
class Case:
    key: str
    label: str
    params: dict[str, Any]
    flavor: str  # the MLflow flavor that saves it


CASES = {
    "logreg": Case(
        "logreg",
        "LogisticRegression",
        {"model_class": "sklearn.linear_model.LogisticRegression", "scale": True},
        "sklearn",
    ),
    # The demo's model (tickrun.hub.demo): what `make demo` serves.
    "xgboost": Case(
        "xgboost",
        "XGBoost",
        {
            "model_class": "xgboost.XGBClassifier",
            "CLASS_n_estimators": 200,
            "CLASS_max_depth": 3,
            "CLASS_learning_rate": 0.05,
        },
        "xgboost",
    ),
}


def mlflow_python(explicit_venv: Path | None, flavors: set[str]) -> Path:
    """The first interpreter that imports mlflow (and each flavor's library) and has the
    ``mlflow`` command beside it, in bench.tracking's order of precedence."""
    modules = ["mlflow", *sorted(f for f in flavors if f != "sklearn")]
    tried = []
    for cand in (
        str(explicit_venv / "bin" / "python") if explicit_venv else None,
        os.environ.get("TICKRUN_MLFLOW_PYTHON"),
        "/tmp/mlflow-venv/bin/python",
        sys.executable,
    ):
        if not cand:
            continue
        # Not resolved: a venv's python is a symlink out of the venv, whose bin/ we need.
        py = Path(cand)
        tried.append(str(py))
        if not py.exists() or not (py.parent / "mlflow").exists():
            continue
        probe = subprocess.run([str(py), "-c", f"import {', '.join(modules)}"], capture_output=True)
        if probe.returncode == 0:
            return py
    raise SystemExit(
        f"no interpreter with {' and '.join(modules)} and the mlflow command (tried: "
        f"{', '.join(tried)}): set TICKRUN_MLFLOW_PYTHON, or python -m venv /tmp/mlflow-venv && "
        "/tmp/mlflow-venv/bin/pip install mlflow scikit-learn xgboost"
    )


def featurize(workdir: Path) -> str:
    import tickrun

    bars = workdir / "bars.csv"
    pd.read_csv(DATA).iloc[-20000:].to_csv(bars, index=False)
    print("features through hub://market_features …", flush=True)
    feats = (
        tickrun.import_function("hub://market_features")
        .run(inputs={"dataset": str(bars)}, progress=False)
        .raise_for_state()
    )
    return str(feats.outputs["features"])


def train(case: Case, features_uri: str) -> tuple[str, pd.DataFrame]:
    import tickrun

    print(f"training {case.label} through hub://auto_trainer …", flush=True)
    run = (
        tickrun.import_function("hub://auto_trainer")
        .run(
            "train",
            params={
                **case.params,
                "drop_columns": "future_return",
                "plots": False,
                "time_ordered": True,
            },
            inputs={"dataset": features_uri},
            progress=False,
        )
        .raise_for_state()
    )
    print(f"  model {run.outputs['model']}  accuracy {run.results['accuracy']:.4f}", flush=True)
    return str(run.outputs["model"]), run.artifact("test_set").as_df()


def start_mlflow(
    python: Path,
    model_file: Path,
    flavor: str,
    model_class: str,
    workdir: Path,
    port: int,
    workers: int,
) -> subprocess.Popen[bytes]:
    folder = workdir / "mlflow-model"
    export = subprocess.run(
        [
            str(python),
            str(HERE / "mlflow_export.py"),
            str(model_file),
            str(folder),
            flavor,
            model_class,
        ],
        capture_output=True,
        text=True,
    )
    if export.returncode != 0:
        raise RuntimeError(f"exporting the model for MLflow failed:\n{export.stderr[-2000:]}")
    bindir = python.parent
    log = (workdir / "mlflow.log").open("wb")
    return subprocess.Popen(
        [
            str(bindir / "mlflow"),
            "models",
            "serve",
            "-m",
            str(folder),
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-w",
            str(workers),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        # mlflow execs `uvicorn` by name: the venv's bin must be on PATH.
        env={
            **os.environ,
            "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
            "MLFLOW_TRACKING_URI": f"file://{workdir / 'mlruns'}",
        },
    )


def bench_case(
    case: Case,
    features_uri: str,
    python: Path,
    workdir: Path,
    args: argparse.Namespace,
) -> tuple[Sample, Sample, int]:
    """(tickrun, mlflow, feature count) medians for one model, both servers up side by side."""
    import tickrun
    from tickrun.functions.runs import DataItem, load_model
    from tickrun.hub.function import free_port

    model_uri, test_set = train(case, features_uri)
    _model, info = load_model(model_uri)
    features = list(info.feature_names or [])
    model_file = Path(DataItem(model_uri).local())
    model_class = info.model_class or ""

    casedir = workdir / case.key
    casedir.mkdir()
    mlflow_port = free_port()
    mlflow_proc = start_mlflow(
        python, model_file, case.flavor, model_class, casedir, mlflow_port, args.workers
    )
    server = tickrun.import_function("hub://model_server").deploy(
        env={"MODEL_URI": model_uri},
        workers=args.workers,
        directory=casedir / "fn",
        controller=False,  # the same machine as the MLflow server, whatever is configured
    )
    mlflow_url = f"http://127.0.0.1:{mlflow_port}/invocations"
    tickrun_url = f"{server.url}/invocations"
    results: dict[str, list[Sample]] = {"tickrun": [], "mlflow": []}
    try:
        wait_http(f"http://127.0.0.1:{mlflow_port}/ping", mlflow_proc)
        sample = test_set[features].iloc[:200]
        body = {"dataframe_split": {"columns": features, "data": sample.to_numpy().tolist()}}
        ours, theirs = post(tickrun_url, body), post(mlflow_url, body)
        if ours["predictions"] != theirs["predictions"]:
            raise SystemExit(f"{case.label}: the two servers disagree on predictions")
        print(f"{case.label}: both servers agree on {len(sample)} predictions", flush=True)

        one_row = {"dataframe_split": {"columns": features, "data": [sample.iloc[0].tolist()]}}
        script = casedir / "post.lua"
        script.write_text(
            'wrk.method = "POST"\n'
            'wrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = {json.dumps(json.dumps(one_row))}\n"
        )
        wrk(tickrun_url, 2, args.connections, script=script)  # warm-up both
        wrk(mlflow_url, 2, args.connections, script=script)
        for r in range(args.rounds):
            results["tickrun"].append(
                wrk(tickrun_url, args.duration_s, args.connections, script=script)
            )
            results["mlflow"].append(
                wrk(mlflow_url, args.duration_s, args.connections, script=script)
            )
            print(
                f"{case.label} round {r + 1}/{args.rounds}: tickrun "
                f"{results['tickrun'][-1].rps:,.0f} req/s, mlflow "
                f"{results['mlflow'][-1].rps:,.0f} req/s",
                flush=True,
            )
    finally:
        server.stop()
        os.killpg(mlflow_proc.pid, signal.SIGTERM)
        try:
            mlflow_proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(mlflow_proc.pid, signal.SIGKILL)
    return median(results["tickrun"]), median(results["mlflow"]), len(features)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}"
    )
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--duration-s", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--mlflow-venv",
        type=Path,
        default=None,
        help="venv with mlflow (default: $TICKRUN_MLFLOW_PYTHON's, else /tmp/mlflow-venv)",
    )
    parser.add_argument(
        "--monitoring",
        action="store_true",
        help="model_server 1.3 with monitoring on (JSONL, --kafka) vs off, instead of vs MLflow",
    )
    parser.add_argument("--kafka", action="store_true", help="with --monitoring: a Kafka sink too")
    parser.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="with --monitoring: do not pin the servers to core 0 and wrk + broker to core 1",
    )
    args = parser.parse_args()
    keys = [k.strip() for k in args.models.split(",") if k.strip()]
    unknown = [k for k in keys if k not in CASES]
    if unknown or not keys:
        sys.exit(f"--models: unknown {unknown or keys}; choose from {', '.join(CASES)}")
    cases = [CASES[k] for k in keys]
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk")
    if args.monitoring:
        monitoring_main(cases, args)
        return
    python = mlflow_python(args.mlflow_venv, {c.flavor for c in cases})
    print(f"MLflow from {python.parent}", flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    os.environ["TICKRUN_HOME"] = str(workdir / "home")
    os.environ["TICKRUN_LOG_LEVEL"] = "WARNING"
    for var in ("TICKRUN_ARTIFACT_PATH", "TICKRUN_DB_URL", "TICKRUN_CONTROLLER_URL"):
        os.environ.pop(var, None)

    measured: list[tuple[Case, Sample, Sample, int]] = []
    try:
        features_uri = featurize(workdir)
        for case in cases:
            measured.append((case, *bench_case(case, features_uri, python, workdir, args)))
    except BaseException:
        print(f"(logs kept in {workdir})", file=sys.stderr)
        raise

    for case, t, m, n_features in measured:
        print()
        print(
            f"bench/serving  {case.label}: 1-row dataframe_split POST /invocations, "
            f"{n_features} features, workers={args.workers} connections={args.connections} "
            f"duration={args.duration_s}s x{args.rounds} (medians; wrk -t1; "
            f"cores={os.cpu_count()})"
        )
        print_table([("tickrun model_server", t), ("mlflow models serve", m)])
        print(
            f"goal: throughput >= 20x ({'met' if t.rps >= 20 * m.rps else 'NOT met'}), "
            f"p99 <= 1/5 ({'met' if t.p99_ms <= m.p99_ms / 5 else 'NOT met'})"
        )
    shutil.rmtree(workdir, ignore_errors=True)


def monitoring_main(cases: list[Case], args: argparse.Namespace) -> None:
    from bench.serving.monitoring import bench_monitoring
    from tickrun.functions.runs import load_model

    workdir = Path(tempfile.mkdtemp(prefix="bench-serving-monitoring-"))
    os.environ["TICKRUN_HOME"] = str(workdir / "home")
    os.environ["TICKRUN_LOG_LEVEL"] = "WARNING"
    for var in ("TICKRUN_ARTIFACT_PATH", "TICKRUN_DB_URL", "TICKRUN_CONTROLLER_URL"):
        os.environ.pop(var, None)
    try:
        features_uri = featurize(workdir)
        for case in cases:
            model_uri, test_set = train(case, features_uri)
            _model, info = load_model(model_uri)
            features = list(info.feature_names or [])
            row = test_set[features].iloc[0].tolist()
            bench_monitoring(case, model_uri, features, row, workdir, args)
    except BaseException:
        print(f"(logs kept in {workdir})", file=sys.stderr)
        raise
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
