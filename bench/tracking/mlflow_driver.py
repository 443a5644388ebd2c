"""MLflow's side of the tracking benchmark. Runs in MLflow's own venv (stdlib + mlflow only).

Usage: python mlflow_driver.py WORKDIR N_METRICS N_ARTIFACTS ARTIFACT_BYTES → one JSON line.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main() -> None:
    workdir, n_metrics, n_arts, art_bytes = (
        sys.argv[1],
        int(sys.argv[2]),
        int(sys.argv[3]),
        int(sys.argv[4]),
    )
    import logging

    logging.disable(logging.WARNING)
    import mlflow

    os.makedirs(workdir, exist_ok=True)
    mlflow.set_tracking_uri(f"sqlite:///{workdir}/mlflow.db")
    exp = mlflow.create_experiment("bench", artifact_location=f"file://{workdir}/artifacts")
    blob = os.path.join(workdir, "blob.bin")
    with open(blob, "wb") as f:
        f.write(os.urandom(art_bytes))
    out = {"mlflow_version": mlflow.__version__}
    with mlflow.start_run(experiment_id=exp):
        mlflow.log_metric("warmup", 0.0)
        t0 = time.perf_counter()
        for i in range(n_metrics):
            mlflow.log_metric(f"m{i % 50}", float(i), step=i)
        out["log_metric_s"] = time.perf_counter() - t0
        mlflow.log_artifact(blob, artifact_path="warmup")
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(n_arts):
            mlflow.log_artifact(blob, artifact_path=f"a{i}")
        out["log_artifact_s"] = time.perf_counter() - t0
        out["log_artifact_cpu_s"] = time.process_time() - c0
    print(json.dumps(out))


if __name__ == "__main__":
    main()
