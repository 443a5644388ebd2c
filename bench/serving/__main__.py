"""Model serving throughput and latency: ``hub://model_server`` vs ``mlflow models serve``.

One model (scaled LogisticRegression on hourly BTCUSDT features, trained through
``hub://auto_trainer``) is served by both, each with the same number of worker processes; the
same load generator (wrk, one thread, N keep-alive connections) posts the same 1-row MLflow
``dataframe_split`` request to ``/invocations`` on each, alternating, in the same run. Before
timing, both servers must return identical predictions for a sample of rows.

    python -m bench.serving [--workers 1] [--connections 16] [--duration-s 8] [--rounds 3]
        [--mlflow-venv /tmp/mlflow-venv]
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
from pathlib import Path
from typing import Any

import pandas as pd
from tickrun.functions.sampledata import market_data

from bench.wrk import Sample, median, print_table, wrk

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


def train(workdir: Path) -> tuple[str, pd.DataFrame]:
    import tickrun

    bars = workdir / "bars.csv"
    pd.read_csv(DATA).iloc[-20000:].to_csv(bars, index=False)
    print("training the model through hub://market_features → hub://auto_trainer …", flush=True)
    feats = (
        tickrun.import_function("hub://market_features")
        .run(inputs={"dataset": str(bars)}, progress=False)
        .raise_for_state()
    )
    run = (
        tickrun.import_function("hub://auto_trainer")
        .run(
            "train",
            params={
                "model_class": "sklearn.linear_model.LogisticRegression",
                "scale": True,
                "drop_columns": "future_return",
                "plots": False,
                "time_ordered": True,
            },
            inputs={"dataset": feats.outputs["features"]},
            progress=False,
        )
        .raise_for_state()
    )
    print(f"  model {run.outputs['model']}  accuracy {run.results['accuracy']:.4f}", flush=True)
    return str(run.outputs["model"]), run.artifact("test_set").as_df()


def start_mlflow(
    venv: Path, model_file: Path, workdir: Path, port: int, workers: int
) -> subprocess.Popen[bytes]:
    folder = workdir / "mlflow-model"
    subprocess.run(
        [
            str(venv / "bin" / "python"),
            str(HERE / "mlflow_export.py"),
            str(model_file),
            str(folder),
        ],
        check=True,
        capture_output=True,
    )
    log = (workdir / "mlflow.log").open("wb")
    return subprocess.Popen(
        [
            str(venv / "bin" / "mlflow"),
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
            "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
            "MLFLOW_TRACKING_URI": f"file://{workdir / 'mlruns'}",
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--duration-s", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mlflow-venv", type=Path, default=Path("/tmp/mlflow-venv"))
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk")
    if not (args.mlflow_venv / "bin" / "mlflow").exists():
        sys.exit(
            f"no MLflow in {args.mlflow_venv}: python -m venv {args.mlflow_venv} && "
            f"{args.mlflow_venv}/bin/pip install mlflow scikit-learn"
        )

    workdir = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    os.environ["TICKRUN_HOME"] = str(workdir / "home")
    os.environ["TICKRUN_LOG_LEVEL"] = "WARNING"
    for var in ("TICKRUN_ARTIFACT_PATH", "TICKRUN_DB_URL", "TICKRUN_CONTROLLER_URL"):
        os.environ.pop(var, None)

    from tickrun.functions.runs import DataItem, load_model
    from tickrun.hub.function import free_port

    import tickrun

    model_uri, test_set = train(workdir)
    _model, info = load_model(model_uri)
    features = list(info.feature_names or [])
    model_file = Path(DataItem(model_uri).local())

    mlflow_port = free_port()
    mlflow_proc = start_mlflow(args.mlflow_venv, model_file, workdir, mlflow_port, args.workers)
    server = tickrun.import_function("hub://model_server").deploy(
        env={"MODEL_URI": model_uri}, workers=args.workers, directory=workdir / "fn"
    )
    mlflow_url = f"http://127.0.0.1:{mlflow_port}/invocations"
    tickrun_url = f"{server.url}/invocations"
    try:
        wait_http(f"http://127.0.0.1:{mlflow_port}/ping", mlflow_proc)
        sample = test_set[features].iloc[:200]
        body = {"dataframe_split": {"columns": features, "data": sample.to_numpy().tolist()}}
        ours, theirs = post(tickrun_url, body), post(mlflow_url, body)
        if ours["predictions"] != theirs["predictions"]:
            raise SystemExit("the two servers disagree on predictions; not benchmarking")
        print(f"both servers agree on {len(sample)} predictions", flush=True)

        one_row = {"dataframe_split": {"columns": features, "data": [sample.iloc[0].tolist()]}}
        script = workdir / "post.lua"
        script.write_text(
            'wrk.method = "POST"\n'
            'wrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = {json.dumps(json.dumps(one_row))}\n"
        )
        results: dict[str, list[Sample]] = {"tickrun": [], "mlflow": []}
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
                f"round {r + 1}/{args.rounds}: tickrun {results['tickrun'][-1].rps:,.0f} "
                f"req/s, mlflow {results['mlflow'][-1].rps:,.0f} req/s",
                flush=True,
            )
    except BaseException:
        print(f"(logs kept in {workdir})", file=sys.stderr)
        raise
    finally:
        server.stop()
        os.killpg(mlflow_proc.pid, signal.SIGTERM)
        try:
            mlflow_proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(mlflow_proc.pid, signal.SIGKILL)

    med = {k: median(v) for k, v in results.items()}
    t, m = med["tickrun"], med["mlflow"]
    print()
    print(
        f"bench/serving  1-row dataframe_split POST /invocations, {len(features)} features, "
        f"workers={args.workers} connections={args.connections} "
        f"duration={args.duration_s}s x{args.rounds} (medians; wrk -t1; cores={os.cpu_count()})"
    )
    print_table([("tickrun model_server", t), ("mlflow models serve", m)])
    print(
        f"goal: throughput >= 20x ({'met' if t.rps >= 20 * m.rps else 'NOT met'}), "
        f"p99 <= 1/5 ({'met' if t.p99_ms <= m.p99_ms / 5 else 'NOT met'})"
    )
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
