"""The processor: loads a handler, runs its triggers in worker processes, serves health/metrics."""

from __future__ import annotations

from pathlib import Path

from ..source import resolve_function
from .supervisor import Supervisor


def serve(
    path: str | Path,
    *,
    spec_path: str | Path | None = None,
    host: str = "127.0.0.1",
    port: int | None = None,
    workers: int | None = None,
) -> int:
    """Serve a function until SIGTERM/SIGINT; returns the process exit code."""
    directory, spec = resolve_function(path, spec_path)
    if port is None:
        http = next((t for t in spec.spec.effective_triggers() if t.kind == "http"), None)
        port = getattr(getattr(http, "attributes", None), "port", None) or 8080
    return Supervisor(directory, spec, host=host, port=port, workers=workers).run()


__all__ = ["Supervisor", "serve"]
