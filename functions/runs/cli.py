"""``tickrun run``, ``tickrun get runs|run|artifacts``, ``tickrun artifact download`` (and
``tickrun models …``, registry_cli.py)."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BadRequestError, InvalidFieldError, NotFoundError
from ..settings import ARTIFACT_PATH, CONTROLLER_URL
from . import registry_cli

if TYPE_CHECKING:
    from .plugins import JobRequest
    from .runobject import RunObject

# Imported here: argparse, json and the settings' names only. Every `tickrun` command builds
# this module's parsers (`tickrun --help` all of them), so the plugin registry and the
# run machinery are imported by the command that runs, when it runs.

# ``run --platform`` (until 0.2) → ``run --runner``.
LEGACY_RUNNERS = {"local": "local", "process": "subprocess", "container": "container"}


def register(sub: Any, get: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "run",
        help="run a handler as a tracked job (FILE.py:fn, module:fn or hub://item)",
        description="Run a job handler here, tracking params, results and artifacts. Runs go "
        f"to ${CONTROLLER_URL.name} when set, else to a local SQLite file; artifacts to "
        f"${ARTIFACT_PATH.name} (a folder or s3://bucket/prefix).",
    )
    p.add_argument("target", help="path/to/file.py:handler, module:handler or hub://name[:ver]")
    p.add_argument(
        "--param",
        "-p",
        action="append",
        default=[],
        metavar="K=V",
        help="a parameter (JSON values are parsed: 3, 0.1, true, [1,2])",
    )
    p.add_argument(
        "--input",
        "-i",
        action="append",
        default=[],
        metavar="NAME=URI",
        help="an input: a local path, s3://bucket/key, store://project/uid/key or "
        "models:/name/version|models:/name@alias",
    )
    p.add_argument(
        "--hyper",
        "--hyper-param",
        action="append",
        default=[],
        metavar="K=V1,V2",
        help="a hyperparameter and its values (makes this a sweep)",
    )
    p.add_argument(
        "--hyper-file",
        metavar="PATH",
        help="hyperparameters from a JSON/YAML mapping: name → list of values, or (optuna) a "
        'range {"low": 0.01, "high": 1, "log": true}; --hyper entries win',
    )
    p.add_argument(
        "--strategy",
        choices=("grid", "list", "random", "optuna"),
        default="grid",
        help="optuna: TPE sampling of --max-iterations trials (10) with median pruning; "
        "ranges as --hyper K=LOW..HIGH[:log][:step=S][:int|:float]",
    )
    p.add_argument(
        "--selector",
        help="max.<result> or min.<result>, picks the best iteration (on validation_<result> "
        "when the iterations report it)",
    )
    p.add_argument("--stop-condition", help="e.g. 'accuracy >= 0.95': stop the sweep early")
    p.add_argument("--max-iterations", type=int)
    p.add_argument(
        "--parallel",
        type=int,
        default=1,
        help="iterations at once (worker processes; the Job's parallelism on kubernetes)",
    )
    p.add_argument("--seed", type=int, help="seed of the random and optuna strategies")
    p.add_argument(
        "--timeout",
        type=int,
        metavar="SECONDS",
        help="--runner kubernetes: the Job's deadline; what still runs then ends aborted",
    )
    p.add_argument("--project", default="default")
    p.add_argument("--name")
    p.add_argument("--label", action="append", default=[], metavar="K=V")
    p.add_argument("--artifact-path", help="folder or s3://bucket/prefix")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--local", action="store_true", help="run in this process (default)")
    where.add_argument(
        "--runner",
        choices=("local", "subprocess", "container", "kubernetes"),
        help="where the job runs: local (this process), subprocess (a fresh Python "
        "interpreter on this machine), container (podman/docker, an image built from the "
        "file's folder) or kubernetes (a Job from that image; a sweep is one indexed Job); "
        "the run is tracked the same way everywhere. A job is one tracked run: `deploy "
        "--platform` is where a function's replicas serve, a different thing",
    )
    # The flag's name before 0.2: the same word as deploy's, for a different thing.
    where.add_argument(
        "--platform", dest="legacy_platform", choices=LEGACY_RUNNERS, help=argparse.SUPPRESS
    )
    p.add_argument("--uid", help=argparse.SUPPRESS)  # a uid the caller chose (scripts, tests)
    p.add_argument("--json", action="store_true", help="print the run as JSON")
    p.set_defaults(func=_run, prepare=_prepare_run)

    g = get.add_parser("runs", help="list tracked runs")
    g.add_argument("--project")
    g.add_argument("--state")
    g.add_argument("--name")
    g.add_argument("--limit", type=int, default=50)
    g.add_argument("--json", action="store_true")
    g.set_defaults(func=_get_runs)

    g = get.add_parser("run", help="show one run, its iterations and artifacts")
    g.add_argument("uid")
    g.add_argument("--iteration", type=int, default=0)
    g.add_argument("--json", action="store_true")
    g.set_defaults(func=_get_run)

    g = get.add_parser("artifacts", help="list artifacts")
    g.add_argument("--project")
    g.add_argument("--run", dest="uid")
    g.add_argument("--iteration", type=int)
    g.add_argument("--kind", choices=("model", "dataset", "plot", "table", "file"))
    g.add_argument("--limit", type=int, default=200)
    g.add_argument("--json", action="store_true")
    g.set_defaults(func=_get_artifacts)

    a = sub.add_parser("artifact", help="artifact operations")
    asub = a.add_subparsers(dest="artifact_command", metavar="ACTION")
    asub.required = True
    d = asub.add_parser("download", help="download an artifact (store://, s3:// or a path)")
    d.add_argument("uri")
    d.add_argument("-o", "--output", help="file or folder to write (default: ./<name>)")
    d.set_defaults(func=_download)

    registry_cli.register(sub)


# -- parsing -----------------------------------------------------------------------------------


def parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_pairs(items: list[str], what: str, *, raw: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise BadRequestError(f"{what} {item!r} must look like KEY=VALUE")
        out[key.strip()] = value if raw else parse_value(value)
    return out


_NUM = r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
_RANGE = re.compile(rf"^({_NUM})\.\.({_NUM})((?::[a-z]+(?:=(?:{_NUM}))?)*)$")


def parse_range(text: str) -> dict[str, Any] | None:
    """``LOW..HIGH[:log][:step=S][:int|:float]`` → ``{"low": …, "high": …, …}`` (the optuna
    strategy's range); None when ``text`` is not a range."""
    m = _RANGE.match(text.strip())
    if not m:
        return None
    out: dict[str, Any] = {"low": json.loads(m[1]), "high": json.loads(m[2])}
    for opt in filter(None, m[3].split(":")):
        name, _, value = opt.partition("=")
        if name == "log" and not value:
            out["log"] = True
        elif name == "step" and value:
            out["step"] = json.loads(value)
        elif name in ("int", "float") and not value:
            out["type"] = name
        else:
            raise BadRequestError(
                f"range {text!r}: unknown option {opt!r} (options: log, step=S, int, float)"
            )
    return out


def parse_hyper(items: list[str]) -> dict[str, list[Any] | dict[str, Any]]:
    """``K=V1,V2`` or ``K=[json list]`` → a list; ``K=LOW..HIGH[:…]`` or ``K={json}`` → a
    range."""
    out: dict[str, list[Any] | dict[str, Any]] = {}
    for key, value in parse_pairs(items, "--hyper", raw=True).items():
        parsed = parse_value(value)
        if isinstance(parsed, list | dict):
            out[key] = parsed
        elif (rng := parse_range(value)) is not None:
            out[key] = rng
        else:
            out[key] = [parse_value(v) for v in value.split(",")]
    return out


def read_hyper_file(path: str) -> dict[str, list[Any] | dict[str, Any]]:
    """A ``--hyper-file``: a JSON or YAML mapping of name → list of values or range."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise BadRequestError(f"--hyper-file {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise BadRequestError(f"--hyper-file {path} is not JSON/YAML: {exc}") from exc
    if not isinstance(data, dict) or not all(isinstance(v, list | dict) for v in data.values()):
        raise BadRequestError(
            f"--hyper-file {path} must map names to lists of values or to ranges "
            '{"low": L, "high": H}'
        )
    return {str(k): v for k, v in data.items()}


# -- commands ----------------------------------------------------------------------------------


def _prepare_run(args: argparse.Namespace) -> None:
    """What a local ``tickrun run`` imports anyway (the run request, the runner),
    imported while the command starts: before ``tickrun.cli.entrypoint`` freezes what start-up
    made, and before any code of the user's."""
    if getattr(args, "schedule", None) or _where(args) != "local":
        return
    from . import plugins, runner  # noqa: F401


def _run(args: argparse.Namespace) -> int:
    request = _job_request(args)
    if request.timeout_s is not None and request.runner != "kubernetes":
        raise BadRequestError("--timeout is the kubernetes runner's Job deadline: use it there")
    if request.runner != "local":
        return _run_elsewhere(request, as_json=args.json)
    from .runner import run_function

    # hub:// targets resolve through the hub's run-target plugin (tickrun.run_targets).
    run = run_function(request.target, **request.run_kwargs())
    _show(run, as_json=args.json)
    return 0 if run.state == "completed" else 1


def _where(args: argparse.Namespace) -> str:
    """The runner the command line names: --runner, the legacy --platform's, else local."""
    if args.legacy_platform is not None:
        return LEGACY_RUNNERS[args.legacy_platform]
    return str(args.runner or "local")


def _runner(args: argparse.Namespace) -> str:
    runner = _where(args)
    if args.legacy_platform is not None:
        print(f"tickrun run: --platform is now --runner {runner}", file=sys.stderr)
    return runner


def _job_request(args: argparse.Namespace) -> JobRequest:
    """The run the command line asks for, as data: the same request runs here or elsewhere."""
    from .plugins import JobRequest

    try:
        return JobRequest(
            runner=_runner(args),
            target=args.target,
            uid=args.uid or uuid.uuid4().hex,
            params=parse_pairs(args.param, "--param"),
            inputs=parse_pairs(args.input, "--input", raw=True),
            hyperparams={
                **(read_hyper_file(args.hyper_file) if args.hyper_file else {}),
                **parse_hyper(args.hyper),
            },
            hyper_strategy=args.strategy,
            selector=args.selector,
            stop_condition=args.stop_condition,
            max_iterations=args.max_iterations,
            parallel=args.parallel,
            seed=args.seed,
            project=args.project,
            name=args.name,
            labels=parse_pairs(args.label, "--label", raw=True),
            artifact_path=args.artifact_path,
            timeout_s=args.timeout,
        )
    except InvalidFieldError as exc:
        raise BadRequestError(f"invalid run: {exc.message}") from exc


def _show(run: RunObject, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(run.to_dict(), indent=2, default=str))
    else:
        _print_run(
            run.record.model_dump(mode="json"),
            run.artifacts,
            [i.model_dump(mode="json") for i in run.iterations],
        )


def _run_elsewhere(request: JobRequest, *, as_json: bool) -> int:
    """``--runner subprocess|container|kubernetes``: the runner's job launcher (an entry point of
    ``tickrun.job_runners``, the controller's job runner) runs the request in another process
    or a container and waits; the run is then read back and shown as a local one is."""
    from .job import load_run
    from .plugins import job_launcher

    code = job_launcher(request.runner)(request)
    try:
        run = load_run(request.uid)
    except NotFoundError:
        return code  # the launcher said why
    _show(run, as_json=as_json)
    return code


def _get_runs(args: argparse.Namespace) -> int:
    from .db import open_db

    runs = open_db().list_runs(args.project, state=args.state, name=args.name, limit=args.limit)
    if args.json:
        print(json.dumps([r.model_dump(mode="json") for r in runs], indent=2))
        return 0
    rows = [
        [r.uid, r.project, r.name[:24], r.state.value, _when(r.created_at), _short(r.results)]
        for r in runs
    ]
    _table(["UID", "PROJECT", "NAME", "STATE", "CREATED", "RESULTS"], rows)
    return 0


def _get_run(args: argparse.Namespace) -> int:
    from .db import open_db

    db = open_db()
    run = db.get_run(args.uid, args.iteration)
    its = [r for r in db.list_runs(None, uid=args.uid, limit=10000) if r.iteration > 0]
    arts = db.list_artifacts(run.project, uid=run.uid, iteration=run.iteration)
    if args.json:
        print(
            json.dumps(
                {
                    **run.model_dump(mode="json"),
                    "iterations": [i.model_dump(mode="json") for i in its],
                    "artifacts": [a.model_dump(mode="json") for a in arts],
                },
                indent=2,
            )
        )
        return 0
    _print_run(
        run.model_dump(mode="json"),
        arts,
        [i.model_dump(mode="json") for i in its] if args.iteration == 0 else [],
    )
    return 0


def _get_artifacts(args: argparse.Namespace) -> int:
    from .db import open_db

    arts = open_db().list_artifacts(
        args.project, uid=args.uid, iteration=args.iteration, kind=args.kind, limit=args.limit
    )
    if args.json:
        print(json.dumps([a.model_dump(mode="json") for a in arts], indent=2))
        return 0
    _table(
        ["URI", "KIND", "FORMAT", "SIZE", "SHA256"],
        [[a.uri, a.kind.value, a.format, _size(a.size_bytes), a.sha256[:12]] for a in arts],
    )
    return 0


def _download(args: argparse.Namespace) -> int:
    from .dataitem import DataItem

    item = DataItem(args.uri)
    name = Path(item.target).name
    out = Path(args.output) if args.output else Path.cwd() / name
    if out.is_dir():
        out = out / name
    path = item.download(out)
    print(f"{args.uri} → {path} ({_size(path.stat().st_size)})")
    return 0


# -- output ------------------------------------------------------------------------------------


def _print_run(run: dict[str, Any], arts: list[Any], iterations: list[dict[str, Any]]) -> None:
    out = sys.stdout
    print(
        f"run {run['uid']}  project={run['project']}  name={run['name']}  state={run['state']}",
        file=out,
    )
    if run.get("error"):
        print(f"  error: {run['error']}", file=out)
    if run.get("params"):
        print(f"  params: {_short(run['params'], 200)}", file=out)
    for k, v in run.get("results", {}).items():
        print(f"  result {k} = {v}", file=out)
    if iterations:
        print(f"  iterations ({len(iterations)}):", file=out)
        for it in iterations:
            tail = (
                _short(it.get("results", {}), 80)
                if it["state"] == "completed"
                else (it.get("error") or "")
            )
            print(
                f"    {it['iteration']:>3} {it['state']:<9} {_short(it['params'], 60)}  {tail}",
                file=out,
            )
    for a in arts:
        print(
            f"  artifact {a.key:<20} {a.kind.value:<7} {_size(a.size_bytes):>9}  {a.uri}", file=out
        )


def _table(headers: list[str], rows: list[list[Any]]) -> None:
    cells = [headers, *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def _short(d: dict[str, Any], limit: int = 60) -> str:
    text = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in d.items())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"
