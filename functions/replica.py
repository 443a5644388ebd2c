"""The replica process: one function's processor in the foreground, without the CLI.

Started as :func:`replica_command` builds it, by the process and container platforms and by a hub
item's local deployment. It does not import the CLI (which imports every command module:
controller, runs, hub), which costs start-up time and ties a replica to code it never uses.
Replicas do not die with their parent: a platform's replicas outlive the controller, and a hub
item's local deployment is stopped through its handle.
"""

from __future__ import annotations

import sys

from . import settings
from .launch import python_command


def replica_command(
    code_dir: str, port: int | str, workers: int, *, host: str = "127.0.0.1", python: str = ""
) -> list[str]:
    """The command that serves ``code_dir`` on ``host:port`` with ``workers`` worker processes
    (0: the spec's own count), run by ``python`` (default: this interpreter)."""
    return python_command(
        main,
        code_dir,
        host,
        str(port),
        str(workers),
        python=python or sys.executable,
        on_parent_death=None,
    )


def main() -> int:
    from .logs import configure_logging
    from .processor import serve

    configure_logging(
        json_logs=settings.LOG_FORMAT.get() != "text",  # JSON unless asked for text
        level=settings.LOG_LEVEL.get(),
    )
    code_dir, host, port, workers = sys.argv[1:5]
    return serve(code_dir, host=host, port=int(port), workers=int(workers) or None)


__all__ = ["main", "replica_command"]
