"""``PUT /api/functions/{name}/scale`` on a real controller with process-platform replicas: the
count changes with no build, no new version and no restart of the running replica."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_controller_harness import (
    TOKEN,
    ControllerProc,
    controller,
    pid_alive,
    spec_of,
    wait_for,
    write_function,
)
from tickrun.functions.errors import NotFoundError, SpecError

pytestmark = pytest.mark.slow

__all__ = ["controller"]  # the fixture, re-exported so pytest finds it here


def _put_raw(ctl: ControllerProc, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(
        ctl.url + path,
        data=body,
        method="PUT",
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as res:
            return res.status, json.loads(res.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _get(ctl: ControllerProc, path: str) -> Any:
    req = urllib.request.Request(ctl.url + path, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=30) as res:
        return json.loads(res.read())


def _builds(ctl: ControllerProc, name: str) -> list[dict[str, Any]]:
    return list(_get(ctl, f"/api/functions/{name}/builds")["builds"])


def _items(ctl: ControllerProc, name: str) -> list[dict[str, Any]]:
    return list(ctl.client.get_function(name)["replicas"]["items"])


def test_scale_without_build_or_restart(controller: ControllerProc, tmp_path: Path) -> None:
    folder = write_function(tmp_path / "src", "scaled")
    client = controller.client
    client.deploy(spec_of(folder), folder)
    fn = client.wait_ready("scaled", timeout_s=180)
    first = fn["replicas"]["items"][0]
    builds_before = _builds(controller, "scaled")
    version, revision = fn["version"], fn["revision"]

    # 1 → 2: a second replica starts; the first keeps running (same id, pid, no restart).
    out = client.scale("scaled", replicas=2)
    assert out["scale"] == {"from": {"replicas": 1}, "to": {"replicas": 2}}
    now = client.get_function("scaled")  # the new bounds show at once
    assert (now["replicas"]["min"], now["replicas"]["max"]) == (2, 2)
    assert now["spec"]["spec"]["replicas"] == 2
    wait_for(
        lambda: sum(r["state"] == "ready" for r in _items(controller, "scaled")) == 2,
        120,
        "2 ready replicas",
    )
    fn = client.get_function("scaled")
    assert fn["version"] == version and fn["revision"] == revision
    kept = [r for r in fn["replicas"]["items"] if r["id"] == first["id"]]
    assert kept and kept[0]["pid"] == first["pid"] and kept[0]["restarts"] == 0
    assert _builds(controller, "scaled") == builds_before
    events = client.events("scaled")
    scale_events = [e for e in events if e["kind"] == "scale"]
    assert scale_events[-1]["data"] == {"from": {"replicas": 1}, "to": {"replicas": 2}}
    assert "1 replica(s) to 2 replica(s)" in scale_events[-1]["message"]
    assert not [
        e for e in events if e["kind"] in ("deploy", "build") and e["id"] > scale_events[-1]["id"]
    ]

    # Autoscaled bounds: stored as minReplicas/maxReplicas, replicas dropped.
    out = client.scale("scaled", min_replicas=1, max_replicas=3)
    assert out["function"]["spec"]["spec"].get("replicas") is None
    assert (out["function"]["replicas"]["min"], out["function"]["replicas"]["max"]) == (1, 3)

    # To 0: every replica stops; still no build and the same version.
    pids = [r["pid"] for r in _items(controller, "scaled")]
    client.scale("scaled", replicas=0)
    wait_for(lambda: not _items(controller, "scaled"), 60, "replicas stopped")
    wait_for(lambda: not any(pid_alive(p) for p in pids), 30, "replica processes to exit")
    fn = client.get_function("scaled")
    assert fn["version"] == version and fn["replicas"]["desired"] == 0
    assert _builds(controller, "scaled") == builds_before

    # Back to 1 from 0: a replica of the same revision, still without a build.
    client.scale("scaled", replicas=1)
    wait_for(
        lambda: [r for r in _items(controller, "scaled") if r["state"] == "ready"],
        120,
        "a ready replica again",
    )
    assert client.get_function("scaled")["revision"] == revision
    assert _builds(controller, "scaled") == builds_before


def test_scale_bad_bodies_and_unknown(controller: ControllerProc, tmp_path: Path) -> None:
    folder = write_function(tmp_path / "src", "scalebad")
    client = controller.client
    client.deploy(spec_of(folder), folder)
    client.wait_ready("scalebad", timeout_s=180)
    path = "/api/functions/scalebad/scale"
    bad = [
        b"not json",
        b"[]",
        b"{}",
        b'{"replicas": -1}',
        b'{"replicas": "2"}',
        b'{"replicas": true}',
        b'{"replicas": 1.5}',
        b'{"replicas": 2, "minReplicas": 1, "maxReplicas": 3}',
        b'{"minReplicas": 1}',
        b'{"minReplicas": 3, "maxReplicas": 2}',
        b'{"minReplicas": 0, "maxReplicas": 0}',
        b'{"replicas": 2, "image": "evil"}',
    ]
    for body in bad:
        status, answer = _put_raw(controller, path, body)
        assert status == 400, (body, status, answer)
        assert "Traceback" not in json.dumps(answer)
    status, answer = _put_raw(controller, path, b'{"minReplicas": 3, "maxReplicas": 2}')
    assert "minReplicas (3) is greater than maxReplicas (2)" in answer["detail"]
    # Nothing changed and no scale event was recorded by the refused bodies.
    fn = client.get_function("scalebad")
    assert fn["spec"]["spec"]["replicas"] == 1
    assert not [e for e in client.events("scalebad") if e["kind"] == "scale"]

    with pytest.raises(NotFoundError):
        client.scale("nosuchfn", replicas=2)
    with pytest.raises(SpecError):
        client.scale("scalebad", replicas=-3)


def test_cli_scale(controller: ControllerProc, tmp_path: Path) -> None:
    folder = write_function(tmp_path / "src", "cliscale")
    client = controller.client
    client.deploy(spec_of(folder), folder)
    version = client.wait_ready("cliscale", timeout_s=180)["version"]
    env = dict(os.environ, TICKRUN_CONTROLLER_URL=controller.url, TICKRUN_TOKEN=TOKEN)
    res = subprocess.run(
        [sys.executable, "-m", "tickrun", "scale", "cliscale", "--min", "1", "--max", "4"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert "min 1, max 4" in res.stderr
    fn = client.get_function("cliscale")
    assert (fn["replicas"]["min"], fn["replicas"]["max"], fn["version"]) == (1, 4, version)
    res = subprocess.run(
        [sys.executable, "-m", "tickrun", "scale", "cliscale", "--min", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode != 0 and "--max" in res.stderr
