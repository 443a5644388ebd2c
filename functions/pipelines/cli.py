"""``tickrun pipeline run|show|list``.

``run FILE.py:NAME`` runs a pipeline here (steps on ``--runner``); with ``--schedule CRON`` it
registers a controller schedule instead, whose job is :data:`~.job.JOB_TARGET` with the
pipeline's absolute path, through the controller client plugin (this layer never imports the
controller).
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BadRequestError
from ..names import slug
from ..runs.cli import parse_pairs
from .steps import KIND_LABEL, PIPELINE_KIND, PIPELINE_LABEL

if TYPE_CHECKING:
    from ..runs.records import RunRecord

# The engine (and the run DB) is imported when a command runs: `tickrun --help` stays light.
JOB_TARGET = "tickrun.functions.pipelines.job:run_pipeline"

RUNNERS = ("local", "subprocess", "container", "kubernetes")
JOB_RUNNERS = RUNNERS[1:]


def register(sub: Any, get: Any) -> None:
    p = sub.add_parser("pipeline", help="run, show and list pipelines (DAGs of steps)")
    psub = p.add_subparsers(dest="pipeline_command", metavar="ACTION")
    psub.required = True

    r = psub.add_parser(
        "run",
        help="run a pipeline (FILE.py:NAME), or schedule it with --schedule",
        description="NAME is a module-level Pipeline or a function returning one (--param "
        "values are its keyword arguments).",
    )
    r.add_argument("pipeline", metavar="FILE.py:NAME")
    r.add_argument("--runner", choices=RUNNERS, default="local", help="where each step runs")
    r.add_argument("--parallel", type=int, default=4, help="steps at once")
    r.add_argument("--no-cache", action="store_true", help="rerun steps a cached run matches")
    r.add_argument("--param", "-p", action="append", default=[], metavar="K=V")
    r.add_argument("--json", action="store_true")
    g = r.add_argument_group("scheduling (registers the pipeline on the controller instead)")
    g.add_argument("--schedule", metavar="CRON", help="a cron (6 fields: seconds first)")
    g.add_argument("--schedule-name", help="default: the pipeline's name")
    g.add_argument(
        "--job-runner",
        choices=JOB_RUNNERS,
        default="subprocess",
        help="where each firing's pipeline job runs (its steps: --runner)",
    )
    g.add_argument("--concurrency", choices=("forbid", "allow", "replace"), default="forbid")
    g.add_argument("--timezone", default="UTC")
    r.set_defaults(func=_run)

    s = psub.add_parser("show", help="a pipeline run's graph, step states and run uids")
    s.add_argument("uid")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_show)

    ls = psub.add_parser("list", help="pipeline runs, newest first")
    ls.add_argument("--project")
    ls.add_argument("--name", help="only this pipeline's runs")
    ls.add_argument("--limit", type=int, default=20)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=_list)


def _run(args: argparse.Namespace) -> int:
    from .job import load_pipeline

    params = parse_pairs(args.param, "--param")
    ref = _absolute(args.pipeline)
    pipeline = load_pipeline(ref, params)
    if args.schedule:
        return _schedule(args, ref, params, pipeline.name, pipeline.project)
    run = pipeline.run(runner=args.runner, parallel=args.parallel, cache=not args.no_cache)
    if args.json:
        print(json.dumps({"uid": run.uid, "state": run.state, "graph": run.graph}, indent=2))
    else:
        print(f"pipeline {run.pipeline} run {run.uid}: {run.state}")
        _print_graph(run.graph)
        if run.error:
            print(f"error: {run.error}")
    return 0 if run.state == "completed" else 1


def _absolute(ref: str) -> str:
    target, sep, name = ref.rpartition(":")
    if sep and target.endswith(".py"):
        return f"{Path(target).expanduser().resolve()}:{name}"
    return ref


def _schedule(
    args: argparse.Namespace, ref: str, params: dict[str, Any], name: str, project: str
) -> int:
    job_params: dict[str, Any] = {
        "pipeline": ref,
        "runner": args.runner,
        "parallel": args.parallel,
        "cache": not args.no_cache,
    }
    if params:
        job_params["params"] = params
    # The plugin registry, for this command only: not for --help.
    from ..runs.plugins import JobRequest, controller_client_class

    request = JobRequest(
        runner=args.job_runner,
        target=JOB_TARGET,
        uid=uuid.uuid4().hex,
        params=job_params,
        project=project,
        name=name,
        labels={PIPELINE_LABEL: name, KIND_LABEL: PIPELINE_KIND},
    )
    schedule_name = args.schedule_name or _slug(name)
    client = controller_client_class().from_env()
    row: dict[str, Any] = client.create_schedule(  # type: ignore[attr-defined]
        schedule_name,
        args.schedule,
        request.model_dump(mode="json", exclude={"uid"}),
        concurrency=args.concurrency,
        timezone=args.timezone,
    )
    if args.json:
        print(json.dumps(row, indent=2))
    else:
        print(f"schedule {row['name']} created: {row['cron']} ({row['timezone']})")
        print(f"  runs pipeline {ref}; `tickrun schedules show {row['name']}`")
    return 0


def _slug(text: str) -> str:
    name = slug(text)
    if not name:
        raise BadRequestError("cannot name the schedule from the pipeline: pass --schedule-name")
    return name


def _show(args: argparse.Namespace) -> int:
    from ..runs.db import open_db

    rec = open_db().get_run(args.uid)
    graph = rec.results.get("graph")
    if not isinstance(graph, dict) or PIPELINE_LABEL not in rec.labels:
        raise BadRequestError(f"run {args.uid} is not a pipeline run (no graph recorded)")
    if args.json:
        print(json.dumps({"uid": rec.uid, "state": rec.state.value, "graph": graph}, indent=2))
        return 0
    print(f"pipeline {rec.labels[PIPELINE_LABEL]} run {rec.uid}: {rec.state.value}")
    _print_graph(graph)
    if rec.error:
        print(f"error: {rec.error}")
    return 0


def _print_graph(graph: dict[str, Any]) -> None:
    cells = [["STEP", "STATE", "RUN UID", "ATTEMPTS", "TARGET"]]
    for n in graph.get("nodes", []):
        state = n.get("state", "-")
        cells.append(
            [n["name"], state, n.get("run_uid") or "-", str(n.get("attempts", 0)), n["target"]]
        )
    _table(cells)
    edges = graph.get("edges", [])
    if edges:
        print("edges: " + ", ".join(f"{a} -> {b}" for a, b in edges))


def _list(args: argparse.Namespace) -> int:
    from ..runs.db import open_db

    label = f"{PIPELINE_LABEL}={args.name}" if args.name else f"{KIND_LABEL}={PIPELINE_KIND}"
    runs = open_db().list_runs(args.project, label=label, limit=args.limit)
    if args.json:
        print(json.dumps([_summary(r) for r in runs], indent=2))
        return 0
    cells = [["UID", "PIPELINE", "PROJECT", "STATE", "STARTED", "STEPS"]]
    for r in runs:
        s = _summary(r)
        cells.append(
            [r.uid, s["pipeline"], r.project, r.state.value, _when(r.created_at), s["steps"]]
        )
    _table(cells)
    return 0


def _summary(r: RunRecord) -> dict[str, Any]:
    nodes = (r.results.get("graph") or {}).get("nodes", [])
    counts: dict[str, int] = {}
    for n in nodes:
        counts[n.get("state", "?")] = counts.get(n.get("state", "?"), 0) + 1
    return {
        "uid": r.uid,
        "pipeline": r.labels.get(PIPELINE_LABEL, r.name),
        "project": r.project,
        "state": r.state.value,
        "created_at": r.created_at,
        "steps": " ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "-",
    }


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))


def _table(cells: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


__all__ = ["register"]
