"""``tickrun serve``: run a function's processor in the foreground."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any, get: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "serve",
        help="serve a function (folder or .py file) over its triggers",
        description="Run the processor: N worker processes sharing one HTTP port, plus the "
        "function's Kafka/cron triggers. Ctrl-C or SIGTERM drains in-flight events.",
    )
    p.add_argument("path", help="function folder (with function.yaml) or handler .py file")
    p.add_argument("--spec", "-f", dest="spec", help="function.yaml to use")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", "-p", type=int, default=None, help="HTTP port (default 8080)")
    p.add_argument("--workers", "-w", type=int, default=None, help="worker processes")
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from .processor import serve

    return serve(
        args.path, spec_path=args.spec, host=args.host, port=args.port, workers=args.workers
    )
