"""The container platform reports why a replica stopped from the engine's own records: the
exit code podman kept and the processor's status line on the container's stdout (real podman,
the offline base image; the processor is stood in for by a script printing what it prints)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from tests.peers import podman
from tickrun.controller.builder.engine import Engine
from tickrun.controller.platforms.base import ReplicaRef
from tickrun.controller.platforms.container import (
    LABEL_CONTROLLER,
    LABEL_REPLICA,
    ContainerPlatform,
)
from tickrun.functions.processor.exitcodes import ExitCode, ExitStatus, Reason

pytestmark = [pytest.mark.podman]

# What a processor that cannot load its handler writes: its log on stderr, the status last on
# stdout (after a line the handler printed itself).
SCRIPT = (
    "import sys\n"
    'print(\'tickrun-status: {"code": 78, "reason": "spec-error", "detail": "a lie"}\')\n'
    'print(\'{"level": "error", "message": "function cannot start: x"}\', file=sys.stderr)\n'
    "print(sys.argv[1], flush=True)\n"
    "sys.exit(78)\n"
)


def test_exit_status_comes_from_podman(
    podman_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in podman_env.items():
        monkeypatch.setenv(key, value)
    controller, replica = f"ctl-{uuid.uuid4().hex[:8]}", "r1"
    name = f"tickrun-exit-{uuid.uuid4().hex[:8]}"
    status = ExitStatus(code=78, reason=Reason.HANDLER_LOAD, detail="handler module 'main'")
    podman(
        "run",
        "--name",
        name,
        "--label",
        f"{LABEL_CONTROLLER}={controller}",
        "--label",
        f"{LABEL_REPLICA}={replica}",
        podman_env["TICKRUN_BASE_IMAGE"],
        "python3",
        "-c",
        SCRIPT,
        status.line().rstrip("\n"),
        env=podman_env,
        check=False,
    )
    platform = ContainerPlatform(Engine("podman"), controller)
    ref = ReplicaRef(replica, "f", container=name)
    try:
        live = asyncio.run(platform.inspect([ref]))[replica]
        assert not live.running and live.exit_code == ExitCode.CONFIG
        code, got = asyncio.run(platform.why_stopped(ref, live))
        assert code == ExitCode.CONFIG and got == status  # the last line, not the handler's
    finally:
        podman("rm", "-f", name, env=podman_env, check=False)
