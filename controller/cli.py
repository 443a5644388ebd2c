"""Controller verbs: ``controller start``, ``deploy``, ``get functions|function``, ``invoke``,
``logs``, ``scale``, ``delete``, ``export`` (the nuctl verbs users know)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tickrun.functions.errors import BadRequestError, NotFoundError, PlatformError, SpecError
from tickrun.functions.settings import PLATFORMS

# yaml is imported by the commands that read or print it: every `tickrun` command builds this
# module's parsers (`tickrun --help` too).

if TYPE_CHECKING:
    from tickrun.functions.spec import FunctionSpec


def register(sub: Any, get: Any) -> None:
    ctl = sub.add_parser("controller", help="run the controller (API, builder, gateway)")
    ctl_sub = ctl.add_subparsers(dest="controller_command", metavar="ACTION")
    ctl_sub.required = True
    start = ctl_sub.add_parser("start", help="serve the controller in the foreground")
    start.add_argument("--host", default=None, help="listen address (default 127.0.0.1)")
    start.add_argument("--port", type=int, default=None, help="port (default 8070; 0 = any)")
    start.add_argument("--state-dir", default=None, help="state folder (DB, token, logs)")
    start.add_argument(
        "--platform",
        choices=PLATFORMS,
        default=None,
        help="default platform for new functions",
    )
    start.set_defaults(func=_start)

    dep = sub.add_parser(
        "deploy",
        help="build and deploy a function; prints its URL",
        description="Upload PATH (a folder with function.yaml), build it, start "
        "its replicas and wait until they are ready.",
    )
    dep.add_argument(
        "path", help="function folder, handler .py, function.yaml or hub://item[:version]"
    )
    dep.add_argument("-f", "--file", dest="spec", help="function.yaml to use")
    dep.add_argument("--name", help="override metadata.name")
    dep.add_argument("--platform", choices=PLATFORMS, default=None)
    dep.add_argument("--replicas", type=int, help="fixed replica count")
    dep.add_argument("--min", dest="min_replicas", type=int, help="minimum replicas")
    dep.add_argument("--max", dest="max_replicas", type=int, help="maximum replicas")
    dep.add_argument("--env", action="append", default=[], metavar="K=V")
    dep.add_argument(
        "--trigger",
        action="append",
        default=[],
        metavar="NAME=KIND[,k=v…]",
        help="add a trigger, e.g. tick=cron,interval=10s",
    )
    dep.add_argument("--no-wait", action="store_true", help="return once the build started")
    _client_args(dep)
    dep.set_defaults(func=_deploy)

    fns = get.add_parser("functions", help="list deployed functions")
    fns.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table")
    _client_args(fns)
    fns.set_defaults(func=_get_functions)
    fn = get.add_parser("function", help="show one function")
    fn.add_argument("name")
    fn.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table")
    _client_args(fn)
    fn.set_defaults(func=_get_function)

    inv = sub.add_parser("invoke", help="call a function through the controller's gateway")
    inv.add_argument("name")
    inv.add_argument(
        "-m", "--method", default=None, help="HTTP method (default GET, POST with a body)"
    )
    inv.add_argument("-b", "--body", default=None, help="request body (@file reads a file)")
    inv.add_argument("-H", "--header", action="append", default=[], metavar="K:V")
    inv.add_argument("--path", default="/", help="path below the function's URL")
    _client_args(inv)
    inv.set_defaults(func=_invoke)

    logs = sub.add_parser("logs", help="logs of a function's replicas")
    logs.add_argument("name")
    logs.add_argument("--tail", type=int, default=200)
    logs.add_argument("--replica", default=None)
    _client_args(logs)
    logs.set_defaults(func=_logs)

    sca = sub.add_parser(
        "scale",
        help="set a function's replica count or bounds (no build, no new version)",
        description="Change only how many replicas run: --replicas N (0 stops the function) "
        "or --min A --max B (autoscaled). Running replicas are not restarted.",
    )
    sca.add_argument("name")
    sca.add_argument("--replicas", type=int, default=None, help="fixed replica count")
    sca.add_argument("--min", dest="min_replicas", type=int, default=None, help="minimum")
    sca.add_argument("--max", dest="max_replicas", type=int, default=None, help="maximum")
    _client_args(sca)
    sca.set_defaults(func=_scale)

    dele = sub.add_parser("delete", help="delete a function and stop its replicas")
    dele.add_argument("name")
    _client_args(dele)
    dele.set_defaults(func=_delete)

    exp = sub.add_parser("export", help="print a deployed function's function.yaml")
    exp.add_argument("name")
    _client_args(exp)
    exp.set_defaults(func=_export)


def _client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state-dir", default=None, help=argparse.SUPPRESS)


def _client(args: argparse.Namespace) -> Any:
    from .client import ControllerClient

    return ControllerClient.from_env(getattr(args, "state_dir", None))


def _start(args: argparse.Namespace) -> int:
    from .server import run
    from .settings import Settings

    settings = Settings.from_env(
        host=args.host, port=args.port, state_dir=args.state_dir, default_platform=args.platform
    )
    return run(settings)


def _parse_trigger(text: str) -> tuple[str, dict[str, Any]]:
    import yaml

    name, sep, rest = text.partition("=")
    if not sep or not name:
        raise BadRequestError(f"--trigger {text!r}: expected NAME=KIND[,key=value…]")
    kind, *pairs = rest.split(",")
    trigger: dict[str, Any] = {"kind": kind, "attributes": {}}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise BadRequestError(f"--trigger {text!r}: {pair!r} is not key=value")
        target = (
            trigger
            if key in ("maxWorkers", "workerAvailabilityTimeoutMilliseconds")
            else trigger["attributes"]
        )
        target[key] = yaml.safe_load(value)
    return name, trigger


def build_spec(args: argparse.Namespace) -> tuple[Path, FunctionSpec]:
    """The code folder and the spec ``deploy`` sends: the file's spec with the flags applied,
    validated here (the one parse on this side of the API) so a bad flag fails before upload."""
    from tickrun.functions.source import resolve_function
    from tickrun.functions.spec import parse_spec

    path = args.path
    if path.startswith("hub://"):
        path = _export_hub_item(args)
    code_dir, spec = resolve_function(path, args.spec)
    data = spec.to_yaml_dict()
    s = data.setdefault("spec", {})
    if args.name:
        data["metadata"]["name"] = args.name
    if args.replicas is not None:
        s["replicas"] = args.replicas
        s.pop("minReplicas", None)
        s.pop("maxReplicas", None)
    if args.min_replicas is not None or args.max_replicas is not None:
        s.pop("replicas", None)
        if args.min_replicas is not None:
            s["minReplicas"] = args.min_replicas
        if args.max_replicas is not None:
            s["maxReplicas"] = args.max_replicas
    if args.env:
        env = {e["name"]: e for e in s.get("env", [])}
        for key, value in _env_pairs(args.env).items():
            env[key] = {"name": key, "value": value}
        s["env"] = list(env.values())
    for item in args.trigger:
        name, trigger = _parse_trigger(item)
        s.setdefault("triggers", {})[name] = trigger
    return code_dir, parse_spec(data)


def _env_pairs(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BadRequestError(f"--env {item!r}: expected KEY=VALUE")
        out[key] = value
    return out


def _export_hub_item(args: argparse.Namespace) -> str:
    """``deploy hub://item[:version]``: the hub item's serving function, exported to a folder."""
    import tempfile

    from tickrun.hub.resolver import import_function

    item = import_function(args.path)
    folder = Path(tempfile.mkdtemp(prefix="tickrun-hub-deploy-"))
    item.export(folder, name=args.name, env=_env_pairs(args.env))
    return str(folder)


def _deploy(args: argparse.Namespace) -> int:
    code_dir, spec = build_spec(args)
    client = _client(args)
    t0 = time.monotonic()
    result = client.deploy(spec, code_dir, platform=args.platform)
    fn, build = result["function"], result["build"]
    name = fn["name"]
    print(
        f"deploying {name} v{fn['version']} on {fn['platform']} (build {build['id']})",
        file=sys.stderr,
    )
    for warning in result.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    if args.no_wait:
        return 0
    for line in client.follow_build(build["id"]):
        print(f"  {line}", file=sys.stderr)
    try:
        final = client.get_build(build["id"])
    except NotFoundError as exc:
        # The delete removed the build with the function.
        raise PlatformError(f"build of {name} aborted: function deleted") from exc
    if final["state"] == "failed":
        raise PlatformError(
            f"build of {name} failed: {final['message']} "
            f"(full log above; `tickrun get function {name}` for state)"
        )
    if final["state"] == "aborted":
        raise PlatformError(f"build of {name} aborted: {final['message']}")
    ready = client.wait_ready(name, version=fn["version"])
    took = time.monotonic() - t0
    r = ready["replicas"]
    print(f"{name} ready: {r['ready']}/{r['desired']} replica(s) in {took:.1f} s", file=sys.stderr)
    if ready.get("port"):
        host = ready.get("port_host") or client.url.split("://", 1)[1].rsplit(":", 1)[0]
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        print(
            f"function port (no token, balanced per connection): http://{host}:{ready['port']}/",
            file=sys.stderr,
        )
    print(f"{client.url}{ready['url']}")
    return 0


def _print(data: Any, output: str) -> None:
    import yaml

    if output == "json":
        print(json.dumps(data, indent=2))
    else:
        print(yaml.safe_dump(data, sort_keys=False), end="")


def _table(fns: list[dict[str, Any]]) -> None:
    rows = [("NAME", "STATE", "PLATFORM", "VERSION", "REPLICAS", "URL")]
    for f in fns:
        r = f["replicas"]
        rows.append(
            (
                f["name"],
                f["state"],
                f["platform"],
                str(f["version"]),
                f"{r['ready']}/{r['desired']}",
                f["url"],
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _get_functions(args: argparse.Namespace) -> int:
    fns = _client(args).list_functions()
    if args.output == "table":
        _table(fns)
    else:
        _print(fns, args.output)
    return 0


def _get_function(args: argparse.Namespace) -> int:
    fn = _client(args).get_function(args.name)
    if args.output == "table":
        _table([fn])
        if fn["message"]:
            print(f"message: {fn['message']}")
        for rep in fn["replicas"]["items"]:
            why = rep.get("exit") if rep["state"] == "failed" else None
            print(
                f"  replica {rep['id']}: {rep['state']} port {rep['port']} "
                f"restarts {rep['restarts']}"
                + (f" exit {why['name']}" if why else "")
                + (f" ({why['reason']}: {why['detail']})" if why and why.get("reason") else "")
                + (f" ({rep['not_ready']})" if rep.get("not_ready") else "")
            )
    else:
        _print(fn, args.output)
    return 0


def _invoke(args: argparse.Namespace) -> int:
    body: bytes | None = None
    if args.body is not None:
        body = Path(args.body[1:]).read_bytes() if args.body.startswith("@") else args.body.encode()
    headers = {}
    for h in args.header:
        key, sep, value = h.partition(":")
        if not sep:
            raise SpecError(f"-H {h!r}: expected KEY:VALUE")
        headers[key.strip()] = value.strip()
    if body is not None and "Content-Type" not in headers:
        stripped = body.lstrip()[:1]
        headers["Content-Type"] = "application/json" if stripped in (b"{", b"[") else "text/plain"
    method = args.method or ("POST" if body is not None else "GET")
    result = _client(args).invoke(
        args.name, path=args.path, method=method.upper(), body=body, headers=headers
    )
    sys.stdout.buffer.write(result.body)
    if result.body and not result.body.endswith(b"\n") and sys.stdout.isatty():
        sys.stdout.write("\n")
    sys.stdout.flush()
    if result.status >= 400:
        print(f"HTTP {result.status}", file=sys.stderr)
        return 1
    return 0


def _logs(args: argparse.Namespace) -> int:
    for rep in _client(args).logs(args.name, tail=args.tail, replica=args.replica):
        for line in rep["lines"]:
            print(f"[{rep['replica']}] {line}")
        if rep.get("error"):  # a cluster that could not give a pod's log
            print(f"[{rep['replica']}] (no log: {rep['error']})", file=sys.stderr)
    return 0


def _scale(args: argparse.Namespace) -> int:
    bounds = (args.min_replicas, args.max_replicas)
    if args.replicas is not None and bounds != (None, None):
        raise BadRequestError("tickrun scale: give --replicas N or --min A --max B, not both")
    if args.replicas is None and None in bounds:
        raise BadRequestError("tickrun scale: give --replicas N, or both --min A and --max B")
    out = _client(args).scale(
        args.name,
        replicas=args.replicas,
        min_replicas=args.min_replicas,
        max_replicas=args.max_replicas,
    )
    r = out["function"]["replicas"]
    print(
        f"scaled {args.name}: min {r['min']}, max {r['max']}, desired {r['desired']} "
        f"(version {out['function']['version']} unchanged)",
        file=sys.stderr,
    )
    return 0


def _delete(args: argparse.Namespace) -> int:
    _client(args).delete_function(args.name)
    print(f"deleted {args.name}", file=sys.stderr)
    return 0


def _export(args: argparse.Namespace) -> int:
    import yaml

    print(yaml.safe_dump(_client(args).export(args.name), sort_keys=False), end="")
    return 0
