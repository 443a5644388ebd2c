"""The controller on the container platform with real podman and the offline base image."""

from __future__ import annotations

import importlib.metadata
import json
import uuid
from pathlib import Path

import pytest

from tests.integration.test_controller_harness import (
    ControllerProc,
    cleanup,
    spec_of,
    wait_for,
    write_function,
)
from tests.peers import podman

pytestmark = [pytest.mark.podman, pytest.mark.slow]


def _containers(env: dict[str, str], name: str) -> list[dict[str, object]]:
    out = podman(
        "ps", "-a", "--filter", f"label=tickrun.function={name}", "--format", "json", env=env
    ).stdout
    return list(json.loads(out or "[]"))


def test_container_platform_end_to_end(podman_env: dict[str, str], tmp_path: Path) -> None:
    name = "boxed"
    folder = write_function(
        tmp_path / "src",
        name,
        extra_spec={"resources": {"limits": {"memory": "256Mi", "cpu": "1"}}},
        requirements={"tabulate": "tabulate==0.9.0"},
    )
    state = tmp_path / "state"
    ctl = ControllerProc(state, podman_env).start()
    try:
        client = ctl.client
        result = client.deploy(spec_of(folder), folder, platform="container")
        build_id = result["build"]["id"]
        log = list(client.follow_build(build_id))
        fn = client.wait_ready(name, timeout_s=900)
        assert fn["platform"] == "container"
        assert fn["image"].startswith(f"localhost/tickrun/{name}:")
        if not client.get_build(build_id)["cached"]:
            assert any("RUN echo built-by-commands" in line for line in log)
        body = json.loads(client.invoke(name).body)
        assert body["marker"] == "built-by-commands"  # build.commands ran in the image
        assert body["flavour"] == "vanilla"
        assert body["deps"] == {"tabulate": "0.9.0"}  # locked wheel installed in the image

        # labels, --init, limits from the spec
        [box] = _containers(podman_env, name)
        replica = fn["replicas"]["items"][0]
        assert box["Labels"]["tickrun.replica"] == replica["id"]
        inspect = json.loads(podman("inspect", str(box["Id"]), env=podman_env).stdout)[0]
        assert inspect["HostConfig"]["Init"] is True
        assert inspect["HostConfig"]["Memory"] == 256 * 1024 * 1024
        assert inspect["HostConfig"]["NetworkMode"] == "host"

        # tickrun is an installed distribution in the image (its wheel), not folders on a path
        assert not [e for e in inspect["Config"]["Env"] if e.startswith("PYTHONPATH=")]
        probe = (
            "import importlib.metadata as m, tickrun.functions as f; "
            "print(m.version('tickrun'), f.__file__)"
        )
        out = podman("exec", str(box["Id"]), "python", "-c", probe, env=podman_env).stdout
        version, where = out.split()
        assert version == importlib.metadata.version("tickrun")
        assert where.startswith("/opt/tickrun/venv/lib/") and "site-packages" in where

        # unchanged → no build; code-only change → a new image, only the last layers rebuilt
        again = client.deploy(spec_of(folder), folder, platform="container")
        wait_for(
            lambda: client.get_build(again["build"]["id"])["state"] == "succeeded",
            120,
            "unchanged build",
        )
        assert client.get_build(again["build"]["id"])["cached"] is True
        # a version no earlier run used, so the image for it cannot exist yet
        new_version = uuid.uuid4().hex
        write_function(
            tmp_path / "src",
            name,
            version=new_version,
            extra_spec={"resources": {"limits": {"memory": "256Mi", "cpu": "1"}}},
            requirements={"tabulate": "tabulate==0.9.0"},
        )
        changed = client.deploy(spec_of(folder), folder, platform="container")
        changed_log = list(client.follow_build(changed["build"]["id"]))
        client.wait_ready(name, version=changed["function"]["version"], timeout_s=300)
        assert client.get_build(changed["build"]["id"])["cached"] is False
        # the requirement/command layers came from the cache
        assert any("Using cache" in line for line in changed_log)
        wait_for(
            lambda: json.loads(client.invoke(name).body)["version"] == new_version,
            60,
            "new code served",
        )
        wait_for(lambda: len(_containers(podman_env, name)) == 1, 60, "old container removed")

        # kill the replica's container → restarted with backoff and recorded
        [box] = _containers(podman_env, name)
        podman("kill", str(box["Id"]), env=podman_env)
        wait_for(
            lambda: (
                client.get_function(name)["replicas"]["items"][0]["restarts"] >= 1
                and client.get_function(name)["replicas"]["ready"] == 1
            ),
            120,
            "restart",
        )
        events = client.events(name)
        assert any(e["kind"] == "replica_exited" for e in events)
        assert any(e["kind"] == "replica_restarted" for e in events)
        [box] = _containers(podman_env, name)

        # controller kill -9 → the running container is re-adopted, not duplicated
        ctl.kill9()
        ctl = ControllerProc(state, podman_env).start()
        client = ctl.client
        wait_for(lambda: client.get_function(name)["replicas"]["ready"] == 1, 60, "re-adopted")
        assert [c["Id"] for c in _containers(podman_env, name)] == [box["Id"]]
        assert json.loads(client.invoke(name).body)["version"] == new_version
        assert any(e["kind"] == "replica_adopted" for e in client.events(name))
        logs = client.logs(name)
        assert any("processor ready" in line for line in logs[0]["lines"])

        # delete → no container left behind
        client.delete_function(name)
        assert _containers(podman_env, name) == []
    finally:
        cleanup(ctl)
        for box in _containers(podman_env, name):
            podman("rm", "-f", str(box["Id"]), env=podman_env, check=False)
