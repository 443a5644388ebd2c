"""The ``tickrun`` command line: the nuctl verbs users know, plus runs and the hub.

Each area registers its own sub-commands with ``register(subparsers, get_subparsers)`` (the
second is the shared ``get RESOURCE`` verb), so this file stays a table of
contents. Exit codes: 0 ok, 1 the operation failed, 2 bad usage or input.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from tickrun.functions.errors import TickrunError
from tickrun.functions.settings import LOG_FORMAT

logger = logging.getLogger(__name__)


def _functions() -> ModuleType:
    from tickrun.functions import cli

    return cli


def _controller() -> ModuleType:
    from tickrun.controller import cli

    return cli


def _secrets() -> ModuleType:
    from tickrun.controller import secrets_cli

    return secrets_cli


def _runs() -> ModuleType:
    from tickrun.functions.runs import cli

    return cli


def _pipelines() -> ModuleType:
    from tickrun.functions.pipelines import cli

    return cli


def _schedules() -> ModuleType:
    from tickrun.controller.schedules import cli

    return cli


def _hub() -> ModuleType:
    from tickrun.hub import cli

    return cli


def _ui() -> ModuleType:
    from tickrun.controller.ui import cli

    return cli


def _kafka() -> ModuleType:
    from tickrun.triggers.kafka import replay_cli

    return replay_cli


# The areas that add sub-commands, imported when the parser is built (real import statements,
# so the layer contract sees them); an area missing its optional dependencies is skipped quietly.
COMMAND_MODULES: tuple[Callable[[], ModuleType], ...] = (
    _functions,
    _controller,
    _secrets,
    _runs,
    _pipelines,
    _schedules,  # after _runs: it adds --schedule to `run`
    _hub,
    _kafka,
    _ui,
)


# The areas a verb needs: `tickrun serve` (every replica's start-up) and `tickrun run` (a job's)
# build only their own parsers rather than every area's. A verb not listed (`get`, shared by
# several areas; a verb added since) builds them all; tests/unit/tickrun/test_cli_imports.py
# checks that each verb's parser here is the one the full parser has.
FAST_COMMANDS: dict[str, tuple[Callable[[], ModuleType], ...]] = {
    "serve": (_functions,),
    "run": (_runs, _schedules),  # schedules adds `run --schedule`
    "artifact": (_runs,),
    "models": (_runs,),
    "pipeline": (_pipelines,),
    "schedules": (_schedules,),
    "hub": (_hub,),
    "kafka": (_kafka,),
    "secret": (_secrets,),
    "ui": (_ui,),
    **dict.fromkeys(
        ("controller", "delete", "deploy", "export", "invoke", "logs", "scale"), (_controller,)
    ),
}


def build_parser(
    modules: Sequence[Callable[[], ModuleType]] = COMMAND_MODULES,
) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tickrun",
        description="Serverless functions for quant ML: serve, deploy, run, track.",
    )
    parser.add_argument("--version", action="version", version=_version())
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=argparse.SUPPRESS,
        help="log lines as text or JSON (default: text on a terminal)",
    )
    common.add_argument("--log-level", default=argparse.SUPPRESS, help="DEBUG, INFO, WARNING…")
    parser.add_argument("--log-format", choices=("text", "json"), default=None)
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _with_common(sub, common)
    # `get` is shared: functions, runs and artifacts each add a resource to it.
    get_parser = sub.add_parser("get", help="show functions, runs or artifacts")
    get = get_parser.add_subparsers(dest="resource", metavar="RESOURCE")
    get.required = True
    _with_common(get, common)
    for load in modules:
        try:
            module = load()
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("tickrun"):
                continue
            raise
        module.register(sub, get)
    return parser


def _with_common(subparsers: Any, common: argparse.ArgumentParser) -> None:
    """Accept the global flags after the verb too (`tickrun serve . --log-format json`)."""
    add_parser = subparsers.add_parser

    def add_with_common(*args: Any, **kwargs: Any) -> argparse.ArgumentParser:
        kwargs["parents"] = [*kwargs.get("parents", []), common]
        return add_parser(*args, **kwargs)  # type: ignore[no-any-return]

    subparsers.add_parser = add_with_common


def _version() -> str:
    from tickrun import __version__

    return f"tickrun {__version__}"


# The global options that take a value (`tickrun --log-level WARNING run …`).
_VALUE_OPTIONS = ("--log-format", "--log-level")


def command_verb(argv: Sequence[str]) -> str | None:
    """The sub-command ``argv`` names (its first word that is not a global option or value)."""
    args = iter(argv)
    for arg in args:
        if arg in _VALUE_OPTIONS:
            next(args, None)
        elif not arg.startswith("-"):
            return arg
    return None


def main(argv: Sequence[str] | None = None, *, started: Callable[[], None] | None = None) -> None:
    """Run one command. ``started`` is called once the command has imported what it needs and
    before it runs anything of the user's (see :func:`entrypoint`)."""
    from tickrun.functions.logs import configure_logging

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(FAST_COMMANDS.get(command_verb(argv) or "", COMMAND_MODULES))
    args = parser.parse_args(argv)
    json_logs = None if args.log_format is None else args.log_format == "json"
    configure_logging(json_logs=json_logs, level=args.log_level.upper())
    if json_logs is not None:  # worker processes log in the same format
        os.environ[LOG_FORMAT.name] = "json" if json_logs else "text"
    try:
        prepare: Callable[[argparse.Namespace], None] | None = getattr(args, "prepare", None)
        if prepare is not None:
            prepare(args)
        if started is not None:
            started()
        code = args.func(args)
    except TickrunError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        detail = exc.detail
        if isinstance(detail, list):
            for item in detail[:20]:
                if isinstance(item, dict) and "field" in item:
                    print(f"  {item['field']}: {item['message']}", file=sys.stderr)
        sys.exit(2 if exc.status in (400, 401, 404, 409, 413) else 1)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(code or 0)


def entrypoint() -> None:
    """The ``tickrun`` command (its console script, and ``python -m tickrun``).

    Start-up makes tens of thousands of objects that live as long as the process: modules,
    classes, pydantic's validators. The cyclic GC would walk them several times while they are
    made and twice more at exit, about 35 ms of a ``tickrun run`` on two cores for nothing. So
    the collector is off until the command has imported what it needs (the command's
    ``prepare``), then those objects are frozen (``gc.freeze``: later collections, the ones at
    exit included, skip them) and the collector is back on before any code of the user's runs.
    What start-up left as cyclic garbage (a few hundred objects) stays for the process's life.
    In-process callers of :func:`main` (tests, embedding) keep their own GC as it was.
    """
    gc.disable()
    main(started=_end_startup)


def _end_startup() -> None:
    gc.freeze()
    gc.enable()
