"""``tickrun schedules list|show|pause|resume|delete|run`` and ``tickrun run … --schedule CRON``.

``--schedule`` and its options are added to the runs area's ``run`` verb from here (this area
registers after it, ``tickrun/cli.py``): the same command line builds the same JobRequest, which
is then handed to the controller as a schedule instead of run (the runs layer never reaches the
controller itself).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from tickrun.functions.errors import BadRequestError
from tickrun.functions.names import slug

Command = Callable[[argparse.Namespace], int]


def register(sub: Any, get: Any) -> None:
    s = sub.add_parser(
        "schedules",
        help="scheduled jobs on the controller (create one with `tickrun run … --schedule`)",
    )
    ssub = s.add_subparsers(dest="schedules_command", metavar="ACTION")
    ssub.required = True
    p = ssub.add_parser("list", help="every schedule, its next firing and last run")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_list)
    for verb, func, text in (
        ("show", _show, "one schedule in full"),
        ("pause", _pause, "stop firing until resumed"),
        ("resume", _resume, "fire again from its next time on"),
        ("delete", _delete, "delete it (running runs finish)"),
        ("run", _run_now, "run its job now"),
    ):
        p = ssub.add_parser(verb, help=text)
        p.add_argument("name")
        p.add_argument("--json", action="store_true")
        p.set_defaults(func=func)
    _extend_run(sub)


def _extend_run(sub: Any) -> None:
    run: argparse.ArgumentParser | None = sub.choices.get("run")
    if run is None:  # the runs area is not installed
        return
    g = run.add_argument_group("scheduling (registers the job on the controller instead)")
    g.add_argument(
        "--schedule",
        metavar="CRON",
        help='run it on the controller on this cron schedule ("0 * * * *": hourly; 6 fields '
        "with seconds first); --runner defaults to subprocess",
    )
    g.add_argument("--schedule-name", help="the schedule's name (default: from --name/target)")
    g.add_argument(
        "--concurrency",
        choices=("forbid", "allow", "replace"),
        default="forbid",
        help="a firing while the previous run runs: skip it, run both, or abort the old one",
    )
    g.add_argument(
        "--missed",
        choices=("skip", "run-once"),
        default="skip",
        help="firings missed while the controller was down: skip, or one catch-up run",
    )
    g.add_argument(
        "--starting-deadline",
        type=float,
        metavar="SECONDS",
        help="--missed run-once: no catch-up for a firing older than this",
    )
    g.add_argument("--timezone", default="UTC", help="the cron's timezone (IANA name)")
    g.add_argument("--paused", action="store_true", help="create it paused")
    run_here: Command = run.get_default("func")

    def run_or_schedule(args: argparse.Namespace) -> int:
        return _schedule(args) if args.schedule else run_here(args)

    run.set_defaults(func=run_or_schedule)


def _client() -> Any:
    from ..client import ControllerClient

    return ControllerClient.from_env()


def _default_name(args: argparse.Namespace) -> str:
    if args.schedule_name:
        return str(args.schedule_name)
    if args.name:
        return slug(str(args.name)) or str(args.name)
    target = str(args.target)
    if target.startswith("hub://"):
        target = target.removeprefix("hub://").split(":")[0].split("#")[0]
    else:
        target = target.rsplit("/", 1)[-1].replace(".py:", "-")
    name = slug(target)
    if not name:
        raise BadRequestError("cannot name the schedule from the target: pass --schedule-name")
    return name


def _schedule(args: argparse.Namespace) -> int:
    # The model (pydantic, the function spec): imported by the command that needs it, not by
    # every `tickrun run`, which builds this area's `--schedule` option.
    from tickrun.functions.runs.cli import _job_request

    from .model import RUNNERS, template

    if args.runner is None and args.legacy_platform is None:
        args.runner = "subprocess"
    request = _job_request(args)
    if request.runner not in RUNNERS:
        raise BadRequestError(
            f"--runner {request.runner}: a scheduled job runs outside the controller's process; "
            f"use {', '.join(RUNNERS)}"
        )
    row = _client().create_schedule(
        _default_name(args),
        args.schedule,
        template(request),
        concurrency=args.concurrency,
        missed=args.missed,
        starting_deadline_s=args.starting_deadline,
        timezone=args.timezone,
        paused=args.paused,
    )
    if args.json:
        print(json.dumps(row, indent=2))
    else:
        print(f"schedule {row['name']} created: {row['cron']} ({row['timezone']})")
        print(f"  next firing {row['next'] or '(paused)'}; `tickrun schedules show {row['name']}`")
    return 0


def _when(ts: float | None) -> str:
    # Here rather than at the top: every `tickrun run` builds this area's --schedule option,
    # and the cron module (datetime, zoneinfo) is only for showing schedules.
    from . import cron

    return cron.iso(ts) if ts is not None else "-"


def _list(args: argparse.Namespace) -> int:
    rows = _client().list_schedules()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    cells = [["NAME", "CRON", "STATE", "NEXT", "LAST RUN", "RUNS", "SKIPPED", "MISSED"]]
    for r in rows:
        last = f"{r['last_run_uid'][:12]} {r['last_run_state']}" if r["last_run_uid"] else "-"
        state = "paused" if r["paused"] else ("running" if r["active_runs"] else "waiting")
        cells.append(
            [
                r["name"],
                r["cron"],
                state,
                _when(r["next_at"]),
                last,
                r["runs"],
                r["skipped"],
                r["missed_firings"],
            ]
        )
    widths = [max(len(str(row[i])) for row in cells) for i in range(len(cells[0]))]
    for row in cells:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _print(row: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(row, indent=2))
        return
    job = row["job"]
    print(f"schedule {row['name']}  cron={row['cron']} ({row['timezone']})")
    print(f"  job: {job['target']} (runner {job['runner']}, project {job['project']})")
    if job.get("params"):
        print(f"  params: {json.dumps(job['params'])[:200]}")
    print(f"  concurrency={row['concurrency']}  missed={row['missed']}", end="")
    deadline = row["starting_deadline_s"]
    print(f"  starting deadline {deadline:g} s" if deadline is not None else "")
    print(f"  paused: {'yes' if row['paused'] else 'no'}  next firing: {_when(row['next_at'])}")
    print(f"  runs: {row['runs']}  last firing: {_when(row['last_fired_at'])}", end="")
    if row["last_run_uid"]:
        print(f"  last run: {row['last_run_uid']} ({row['last_run_state']})")
    else:
        print()
    if row["active_runs"]:
        print(f"  running: {', '.join(row['active_runs'])}")
    if row["skipped"] or row["missed_firings"]:
        print(f"  skipped (forbid): {row['skipped']}  missed: {row['missed_firings']}")
        print(f"  last at {_when(row['last_skipped_at'])}: {row['last_skip_reason']}")


def _show(args: argparse.Namespace) -> int:
    _print(_client().get_schedule(args.name), args.json)
    return 0


def _pause(args: argparse.Namespace) -> int:
    _print(_client().pause_schedule(args.name), args.json)
    return 0


def _resume(args: argparse.Namespace) -> int:
    _print(_client().resume_schedule(args.name), args.json)
    return 0


def _delete(args: argparse.Namespace) -> int:
    _client().delete_schedule(args.name)
    print(f"schedule {args.name} deleted", file=sys.stderr if args.json else sys.stdout)
    return 0


def _run_now(args: argparse.Namespace) -> int:
    uid = _client().run_schedule(args.name)
    print(json.dumps({"run_uid": uid}) if args.json else f"run {uid} started")
    return 0
