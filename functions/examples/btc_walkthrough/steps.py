"""The walk-through's own steps: the glue between the hub items of ``pipeline.py``.

Each function is a job handler (``steps.py:<name>`` targets): it gets a run context, its params
and inputs by name, and logs results/datasets as a tracked run. The registry calls use the run
DB the step itself is tracked in (the controller's, with ``TICKRUN_CONTROLLER_URL``), so the
versions and aliases a step writes are the ones the next step (model_promote) reads.

- ``market_window``: a fixed window of the shipped hourly BTCUSDT bars, logged as a dataset;
- ``best_model``: which iteration of the training sweep won, its hyperparameters as results
  (for the walk-forward backtest) and its own model's URI (for the registry);
- ``register``: the winning model as the next version of a registered model, alias
  ``challenger``, tagged with its backtest's figures (idempotent: the same model file is never
  registered twice);
- ``deploy_by_alias``: model_server serving ``models:/<name>@champion`` through the controller,
  deployed once; later runs only wait until the served version is the champion's (moving the
  alias is what rolls a new revision out: the controller watches it);
- ``score_window``: the newest bars sent to the served model over HTTP, as traffic; the answers
  (with each response's ``X-Model-Version``) become model_monitor's ``current`` window, the bars
  before it its ``reference``.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

VERSION_HEADER = "x-model-version"
# The label/target columns market_features writes: never sent to the server as features.
TARGETS = ("label", "future_return")
# Figures of the backtest run copied onto the registered version as tags (and results here).
BACKTEST_TAGS = (
    "net_return",
    "gross_return",
    "fee_drag",
    "sharpe",
    "psr",
    "max_drawdown",
    "trades",
    "break_even_fee_bp",
    "bh_cumulative_return",
    "null_p_value",
    "oos_auc",
    "oos_base_rate",
    "shuffled_net_return",
    "wf_folds",
)


def _run_db(context: Any) -> Any:
    """The run DB this step is tracked in (None: the configured one, e.g. a plain call)."""
    db = getattr(context, "db", None)
    if db is None:
        db = getattr(getattr(context, "_tracker", None), "db", None)
    return db


def _frame(item: Any) -> pd.DataFrame:
    """A DataItem input (or, called directly, a DataFrame or a path) as a DataFrame."""
    if isinstance(item, pd.DataFrame):
        return item
    if hasattr(item, "as_df"):
        return item.as_df()
    path = str(item)
    return pd.read_parquet(path) if path.endswith(".parquet") else pd.read_csv(path)


def served_version(name: str, version: int) -> str:
    """What a model_server bound to ``models:/<name>@<alias>`` answers in X-Model-Version
    when the alias names ``version`` (the controller sets MODEL_VERSION=<name>/<version>)."""
    return f"{name}/{int(version)}"


# --- data --------------------------------------------------------------------------------------


def market_window(
    context: Any,
    start: str = "2024-06-01",
    end: str = "2025-01-01",
    source: Any = None,
    bars_key: str = "bars",
) -> None:
    """Bars with ``start <= timestamp < end`` of the shipped hourly BTCUSDT data (or of the
    ``source`` input: a bars table with a timestamp column), logged as dataset ``bars``.

    A fixed window, not "the last N bars up to now": the same params give the same rows, so
    the steps downstream are cached when nothing else changed."""
    if source is None:
        from tickrun.hub.sampledata import market_data

        source = market_data()
    bars = _frame(source)
    if "timestamp" not in bars.columns:
        raise ValueError(f"the bars need a timestamp column (have {list(bars.columns)[:12]})")
    ts = pd.to_datetime(bars["timestamp"], utc=True)
    lo, hi = pd.Timestamp(start, tz="UTC"), pd.Timestamp(end, tz="UTC")
    if not lo < hi:
        raise ValueError(f"start {start} must be before end {end}")
    keep = (ts >= lo) & (ts < hi)
    window = bars[keep].assign(timestamp=ts[keep]).reset_index(drop=True)  # typed, not text
    if len(window) < 500:
        raise ValueError(f"{len(window)} bars between {start} and {end}: too few to train on")
    context.log_dataset(bars_key, window, format="parquet", meta={"time_column": "timestamp"})
    context.log_results(
        {
            "rows": len(window),
            "first": str(window["timestamp"].iloc[0]),
            "last": str(window["timestamp"].iloc[-1]),
        }
    )


# --- training glue -----------------------------------------------------------------------------


def best_model(context: Any, train_run: str = "", model_key: str = "model") -> None:
    """The training sweep's winner: results ``best_iteration``, ``model_uri`` (the winning
    iteration's own model, ``store://project/uid/<iteration>/model``) and each parameter
    the sweep varied or set (``model_class``, ``CLASS_C``, ``scale``…) under its own name.

    The winner's own URI, not the sweep parent's copy: a registered version's lineage is the
    run that logged it, and the iteration's params carry the chosen hyperparameters
    (model_promote refits the version's recipe from them)."""
    from tickrun.functions.runs.records import store_uri

    if not train_run:
        raise ValueError("train_run (the training step's run uid) is required")
    db = _run_db(context)
    if db is None:
        from tickrun.functions.runs.db import open_db

        db = open_db()
    parent = db.get_run(train_run, 0)
    best = parent.results.get("best_iteration")
    if best is None:  # a plain run, not a sweep: the run itself
        chosen, iteration = parent, 0
    else:
        iteration = int(best)
        chosen = db.get_run(train_run, iteration)
    out: dict[str, Any] = {
        "best_iteration": iteration,
        "model_uri": store_uri(parent.project, parent.uid, model_key, iteration),
        "selected_on": parent.results.get("selected_on"),
    }
    for key, value in chosen.params.items():
        if isinstance(value, str | int | float | bool) or value is None:
            out[key] = value
    context.log_results(out)


def _version_with(db: Any, name: str, model_uri: str) -> Any:
    """The existing version of ``name`` registered from ``model_uri``, or None."""
    from tickrun.functions.errors import NotFoundError
    from tickrun.functions.runs import list_model_versions

    try:
        versions = list_model_versions(name, db=db)
    except NotFoundError:
        return None
    return next((v for v in versions if v.model_uri == model_uri), None)


def register(
    context: Any,
    model: str = "",
    name: str = "btc-updown",
    alias: str = "challenger",
    backtest_run: str = "",
    description: str = "",
) -> None:
    """Register ``model`` (a ``store://`` model URI) as the next version of ``name`` and point
    ``alias`` at it; tags: the backtest's figures (``backtest.<result>``) and the pipeline run.

    The same model registered again (a re-run whose training was cached) is not a new version:
    the existing one gets the alias, so a pipeline re-run never inflates the registry."""
    from tickrun.functions.runs import register_model, set_alias

    if not model:
        raise ValueError("model (the store:// URI of a logged model) is required")
    db = _run_db(context)
    tags = {"pipeline-run": context.labels.get("tickrun.pipeline-run", "")}
    figures: dict[str, Any] = {}
    if backtest_run:
        store = db
        if store is None:
            from tickrun.functions.runs.db import open_db

            store = open_db()
        bt = store.get_run(backtest_run, 0)
        figures = {k: bt.results[k] for k in BACKTEST_TAGS if k in bt.results}
        tags["backtest-run"] = backtest_run
        tags.update({f"backtest.{k}": json.dumps(v) for k, v in figures.items()})
    existing = _version_with(db, name, model)
    if existing is not None:
        mv = set_alias(name, alias, existing.version, db=db)
        action = "existing"
    else:
        mv = register_model(
            model,
            name,
            description=description or "btc walk-through: next-bar up/down, hourly BTCUSDT",
            tags={k: v for k, v in tags.items() if v},
            aliases=[alias],
            db=db,
        )
        action = "registered"
    context.logger.info_with("model version", name=name, version=mv.version, action=action)
    context.log_results(
        {
            "name": name,
            "version": mv.version,
            "uri": mv.uri,
            "alias": alias,
            "action": action,
            "lineage_run": mv.lineage.run_uid,
            **{f"backtest_{k}": v for k, v in figures.items()},
        }
    )


# --- serving -----------------------------------------------------------------------------------


def _controller(url: str = "") -> Any:
    """The controller client: ``url`` when given, else ``$TICKRUN_CONTROLLER_URL``, else the
    local controller's state files; the token from ``$TICKRUN_TOKEN`` or those files. (A
    scheduled firing's job gets the controller's database, not its URL: pass ``controller``.)
    User code may import the controller; tickrun's own layers may not."""
    from tickrun.controller.client import ControllerClient

    client = ControllerClient.from_env()
    return ControllerClient(url, client.token) if url else client


def _env_value(fn: dict[str, Any], key: str) -> str | None:
    for entry in fn.get("spec", {}).get("spec", {}).get("env", []) or []:
        if entry.get("name") == key:
            return str(entry.get("value"))
    return None


def _deploy(
    client: Any,
    function: str,
    server: str,
    env: dict[str, str],
    platform: str,
    keep_requirements: bool,
    timeout_s: float,
) -> None:
    import yaml

    import tickrun
    from tickrun.functions.spec import load_spec

    folder = Path(tempfile.mkdtemp(prefix=f"{function}-"))
    tickrun.import_function(server).export(folder, name=function, env=env)
    if not keep_requirements:
        # The controller's own interpreter already has the item's packages (a test, a demo):
        # resolving them into a wheelhouse would dominate the deploy.
        path = folder / "function.yaml"
        spec = yaml.safe_load(path.read_text())
        spec["spec"].pop("requirements", None)
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
    result = client.deploy(load_spec(folder / "function.yaml"), folder, platform=platform or None)
    for _line in client.follow_build(result["build"]["id"]):
        pass
    build = client.get_build(result["build"]["id"])
    if build["state"] != "succeeded":
        raise RuntimeError(f"build of {function} ended {build['state']}: {build.get('message')}")
    client.wait_ready(function, version=result["function"]["version"], timeout_s=timeout_s)


def _served(client: Any, function: str) -> str | None:
    reply = client.invoke(function, path="/", method="GET", timeout_s=10)
    if reply.status != 200:
        return None
    return reply.headers.get(VERSION_HEADER)


def deploy_by_alias(
    context: Any,
    model: str = "btc-updown",
    alias: str = "champion",
    function: str = "btc-updown",
    server: str = "hub://model_server:1.3",
    platform: str = "process",
    keep_requirements: bool = True,
    timeout_s: float = 180.0,
    controller: str = "",
) -> None:
    """model_server with ``MODEL_URI=models:/<model>@<alias>`` on the controller: deployed when
    the function does not exist (or is bound to another URI), else left alone — when a
    promotion moved the alias, the controller rolls the new version out by itself. Then waits
    until the served ``X-Model-Version`` is the alias's version (results ``served_version``,
    ``champion_version``, ``action``, ``wait_s``)."""
    from tickrun.functions.errors import NotFoundError, TickrunError
    from tickrun.functions.runs import get_model_version

    db = _run_db(context)
    uri = f"models:/{model}@{alias}"
    champion = get_model_version(model, alias, db=db)
    want = served_version(model, champion.version)
    client = _controller(controller)
    try:
        bound = _env_value(client.get_function(function), "MODEL_URI")
    except NotFoundError:
        bound = None
    env = {"MODEL_URI": uri, "MODEL_NAME": model}
    started = time.monotonic()
    if bound == uri:
        action = "unchanged"
    else:
        action = "deployed" if bound is None else "rebound"
        _deploy(client, function, server, env, platform, bool(keep_requirements), timeout_s)
    seen = None
    deadline = started + float(timeout_s)
    while True:
        try:
            seen = _served(client, function)
        except (TickrunError, OSError) as exc:  # a replica rolling over: ask again
            context.logger.debug_with("not served yet", error=str(exc))
        if seen == want:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{function} serves X-Model-Version {seen!r}, not {want!r} ({uri}), after "
                f"{timeout_s:.0f} s: does the controller bind models:/ URIs and roll out when "
                "the alias moves?"
            )
        time.sleep(0.25)
    context.log_results(
        {
            "function": function,
            "model_uri": uri,
            "action": action,
            "champion_version": champion.version,
            "served_version": seen,
            "url": f"{client.url}/fn/{function}/",
            "wait_s": round(time.monotonic() - started, 3),
        }
    )


# --- traffic and monitoring --------------------------------------------------------------------


def _post(client: Any, function: str, rows: list[list[float]]) -> tuple[dict[str, Any], str]:
    body = json.dumps({"inputs": rows, "proba": True}).encode()
    reply = client.invoke(
        function,
        path="/",
        method="POST",
        body=body,
        headers={"Content-Type": "application/json"},
        timeout_s=30,
    )
    if reply.status != 200:
        raise RuntimeError(f"{function} answered {reply.status}: {reply.body[:300]!r}")
    return json.loads(reply.body), reply.headers.get(VERSION_HEADER, "")


def score_window(
    context: Any,
    features: Any = None,
    prices: Any = None,
    function: str = "btc-updown",
    rows: int = 500,
    batch: int = 100,
    purge_bars: int = 1,
    controller: str = "",
) -> None:
    """Send the newest ``rows`` bars of ``features`` to the served model (``batch`` rows per
    request, over the controller's gateway) as its traffic. Logs ``current`` (those bars'
    features, ``probability``, ``prediction``, the label, ``close`` from ``prices``) and
    ``reference`` (the bars before them, less ``purge_bars`` whose label reaches into the
    window): model_monitor's two windows."""
    if features is None or prices is None:
        raise ValueError("features and prices inputs are required")
    frame = _frame(features)
    bars = _frame(prices)[["timestamp", "close"]].copy()
    bars["timestamp"] = pd.to_datetime(bars["timestamp"], utc=True)
    n = int(rows)
    if not 0 < n < len(frame) - int(purge_bars):
        raise ValueError(f"rows must be in 1..{len(frame) - int(purge_bars) - 1}, not {n}")
    client = _controller(controller)
    info = client.invoke(function, path="/", method="GET", timeout_s=10)
    names = json.loads(info.body).get("features") if info.status == 200 else None
    if not names:
        raise RuntimeError(f"{function} did not list its features (GET / answered {info.status})")
    window = frame.iloc[-n:].reset_index(drop=True)
    window["timestamp"] = pd.to_datetime(window["timestamp"], utc=True)
    x = window[names].to_numpy(dtype=float)
    if not np.isfinite(x).all():
        raise ValueError("the window has non-finite features; the server would refuse them")
    proba: list[float] = []
    preds: list[Any] = []
    versions: set[str] = set()
    for lo in range(0, n, int(batch)):
        reply, version = _post(client, function, x[lo : lo + int(batch)].tolist())
        proba += [float(p[-1]) for p in reply["probabilities"]]
        preds += list(reply["outputs"])
        versions.add(version)
    current = window.assign(probability=proba, prediction=preds)
    current = current.merge(bars, on="timestamp", how="left")
    if current["close"].isna().any():
        raise ValueError("prices has no close for some scored bars")
    reference = frame.iloc[: len(frame) - n - int(purge_bars)].reset_index(drop=True)
    meta = {"time_column": "timestamp", "targets": list(TARGETS), "label_horizon_bars": 1}
    context.log_dataset("current", current, format="parquet", meta=meta)
    context.log_dataset("reference", reference, format="parquet", meta=meta)
    up = float(np.mean(np.asarray(proba) > 0.5))
    context.log_results(
        {
            "scored_rows": n,
            "requests": math.ceil(n / int(batch)),
            "served_versions": sorted(versions),
            "window_start": str(current["timestamp"].iloc[0]),
            "window_end": str(current["timestamp"].iloc[-1]),
            "long_fraction": up,
        }
    )
