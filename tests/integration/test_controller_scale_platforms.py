"""``PUT /api/functions/{name}/scale`` on the container platform (real podman): the count moves,
the version and the revision do not, no build runs and the running container stays (the
kubernetes platform: test_controller_scale_k8s.py)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_controller_harness import (
    ControllerProc,
    cleanup,
    spec_of,
    wait_for,
    write_function,
)
from tests.peers import podman

pytestmark = [pytest.mark.slow]


def _builds(ctl: ControllerProc, name: str) -> list[dict[str, Any]]:
    return list(ctl.client._request("GET", f"/api/functions/{name}/builds")["builds"])


def _containers(env: dict[str, str], name: str) -> list[str]:
    out = podman(
        "ps", "--filter", f"label=tickrun.function={name}", "--format", "json", env=env
    ).stdout
    return sorted(str(c["Id"]) for c in json.loads(out or "[]"))


@pytest.mark.podman
def test_scale_on_the_container_platform(podman_env: dict[str, str], tmp_path: Path) -> None:
    name = f"boxscale-{uuid.uuid4().hex[:6]}"
    folder = write_function(tmp_path / "src", name)
    ctl = ControllerProc(tmp_path / "state", podman_env).start()
    try:
        client = ctl.client
        client.deploy(spec_of(folder), folder, platform="container")
        fn = client.wait_ready(name, timeout_s=900)
        [first] = _containers(podman_env, name)
        builds = _builds(ctl, name)
        client.scale(name, replicas=2)
        wait_for(lambda: client.get_function(name)["replicas"]["ready"] == 2, 180, "2 ready")
        running = _containers(podman_env, name)
        assert len(running) == 2 and first in running  # the first container kept running
        after = client.get_function(name)
        assert (after["version"], after["revision"]) == (fn["version"], fn["revision"])
        assert _builds(ctl, name) == builds
        client.scale(name, replicas=0)
        wait_for(lambda: not _containers(podman_env, name), 120, "containers stopped")
        assert client.get_function(name)["replicas"]["desired"] == 0
    finally:
        cleanup(ctl)
