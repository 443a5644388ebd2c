"""``tickrun ui [--home DIR] [--host H] [--port N]``: the web UI on a local runs store.

Registering the verb imports nothing heavy: the server is imported when the command runs.
"""

from __future__ import annotations

import argparse
from typing import Any

from tickrun.functions import settings

DEFAULT_PORT = 5070


def register(sub: Any, get: Any) -> None:
    ui = sub.add_parser(
        "ui",
        help="serve the web UI on the local runs store (no controller)",
        description="Browse runs, artifacts, models and the hub of a local runs store "
        f"(${settings.HOME.name} or --home) in a browser, as `mlflow ui` does.",
    )
    ui.add_argument("--home", default=None, help=f"the runs store's folder ({settings.HOME.name})")
    ui.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    ui.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    ui.set_defaults(func=_ui)


def _ui(args: argparse.Namespace) -> int:
    from .local import serve

    serve(args.home, args.host, args.port)
    return 0
