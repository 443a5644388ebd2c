"""A deployed function cannot reach the controller's secrets: a "spy" function
(tests/fixtures/functions/spy) deployed through a real controller tries to read the token, the
database, the controller's environment, the secret store and another function's code and logs,
on the process platform (bubblewrap) and on the container platform (podman)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_controller_harness import (
    TOKEN,
    ControllerProc,
    cleanup,
    spec_of,
    write_function,
)

pytestmark = pytest.mark.slow

SPY = Path(__file__).resolve().parents[1] / "fixtures" / "functions" / "spy"
CANARY = "canary-controller-only-4f1c"
SECRET_VALUE = "s3cr3t-value-9a7e-never-in-the-db"


def _spy_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "spy-src"
    shutil.copytree(SPY, folder)
    return folder


def _spy_spec(folder: Path) -> dict[str, Any]:
    import yaml

    spec: dict[str, Any] = yaml.safe_load((folder / "function.yaml").read_text())
    spec["spec"]["env"].append(
        {"name": "SPY_SECRET", "valueFrom": {"secretKeyRef": {"name": "spy-creds", "key": "api"}}}
    )
    return spec


def _controller_env(state: Path, base: dict[str, str]) -> dict[str, str]:
    env = dict(base)
    env["TICKRUN_SPY_CANARY"] = CANARY
    env["TICKRUN_DB_URL"] = f"sqlite:///{state / 'tickrun.db'}"
    return env


def _start(tmp_path: Path, base: dict[str, str]) -> ControllerProc:
    state = tmp_path / "state"
    state.mkdir(parents=True)
    # The token also lies in the state dir, where a local controller keeps it.
    (state / "token").write_text(TOKEN + "\n")
    (state / "token").chmod(0o600)
    return ControllerProc(state, _controller_env(state, base)).start()


def _spy(ctl: ControllerProc, victim: dict[str, Any]) -> dict[str, Any]:
    state = ctl.state_dir
    replica = victim["replicas"]["items"][0]
    assert ctl.proc is not None
    ask = {
        "state_dir": str(state),
        "controller_pid": ctl.proc.pid,
        "other_code_dir": str(state / "code" / victim["name"] / victim["code_hash"]),
        "other_log": str(state / "logs" / victim["name"] / f"{replica['id']}.log"),
        "needles": [TOKEN, CANARY],
    }
    res = ctl.client.invoke("spy", method="POST", body=json.dumps(ask).encode())
    assert res.status == 200, res.body
    out: dict[str, Any] = json.loads(res.body)
    return out


def _assert_nothing_leaked(report: dict[str, Any]) -> None:
    for what, outcome in report["tries"].items():
        assert outcome.startswith("denied"), f"the spy reached {what}: {outcome}"
    # What a listing may show: nothing of the state dir but the path to the spy's own code
    # (in a container, ../../.. is the image's root).
    forbidden = ("token", "tickrun.db", "secrets.json", "logs", "builds", "victim", "controller")
    for what, outcome in report["listings"].items():
        leaked = [f for f in forbidden if f"'{f}" in outcome]
        assert not leaked, f"the spy listed {what}: {outcome}"
    assert report["environ_hits"] == []  # no visible process carries the token or the canary
    env = report["env"]
    for name in ("TICKRUN_TOKEN", "TICKRUN_DB_URL", "TICKRUN_SPY_CANARY", "TICKRUN_STATE_DIR"):
        assert name not in env, f"{name} leaked into the replica"
    flat = json.dumps(env)
    assert TOKEN not in flat and CANARY not in flat
    assert env["SPY_PLAIN"] == "plain-value"
    assert env["SPY_SECRET"] == SECRET_VALUE  # the secret reached the replica, and only it


def _assert_secret_only_in_store(ctl: ControllerProc) -> None:
    state = ctl.state_dir
    for name in ("tickrun.db", "tickrun.db-wal"):
        path = state / name
        if path.exists():
            assert SECRET_VALUE.encode() not in path.read_bytes(), f"secret in {name}"
    store = state / "secrets.json"
    assert SECRET_VALUE.encode() in store.read_bytes()
    assert stat.S_IMODE(store.stat().st_mode) == 0o600


def _cli(ctl: ControllerProc, *args: str) -> str:
    env = dict(os.environ, TICKRUN_CONTROLLER_URL=ctl.url, TICKRUN_TOKEN=TOKEN)
    out = subprocess.run(
        [sys.executable, "-m", "tickrun", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_process_replica_cannot_reach_the_controllers_secrets(tmp_path: Path) -> None:
    ctl = _start(tmp_path, dict(os.environ))
    try:
        client = ctl.client
        info = client._request("GET", "/api/version", None)
        assert info["isolation"]["process"]["mechanism"] == "bubblewrap"
        if os.geteuid() == 0:
            assert info["isolation"]["process"]["user"]  # root drops replicas to a user
        # Secret values go in through the CLI (from a file: not in the shell's history) and
        # the API; they never come back out of either.
        value_file = tmp_path / "value.txt"
        value_file.write_text(SECRET_VALUE + "\n")
        _cli(ctl, "secret", "set", "spy-creds", f"api=@{value_file}")
        assert _cli(ctl, "secret", "list").split() == ["spy-creds", "api"]
        assert SECRET_VALUE not in json.dumps(client._request("GET", "/api/secrets", None))

        victim_src = write_function(tmp_path / "src", "victim")
        client.deploy(spec_of(victim_src), victim_src)
        victim = client.wait_ready("victim", timeout_s=180)
        folder = _spy_folder(tmp_path)
        client.deploy(_spy_spec(folder), folder)
        client.wait_ready("spy", timeout_s=180)

        report = _spy(ctl, victim)
        _assert_nothing_leaked(report)
        assert report["listings"]["state_dir"] == "LISTED ['code']"
        assert report["listings"]["code_root"] == "LISTED ['spy']"
        assert report["env"]["TICKRUN_GATEWAY_URL"] == ctl.url  # call_function reaches it
        if os.geteuid() == 0:
            assert report["uid"] != 0
        assert ctl.proc is not None and ctl.proc.pid not in report["pids_visible"]
        assert len(report["pids_visible"]) <= 4  # bwrap's init, the processor, its worker(s)

        # get -o yaml and export show the reference, never the value; the database neither.
        for args in (("get", "function", "spy", "-o", "yaml"), ("export", "spy")):
            text = _cli(ctl, *args)
            assert "secretKeyRef" in text and SECRET_VALUE not in text
        _assert_secret_only_in_store(ctl)

        # Permissions: the state dir and what it holds are the controller's alone.
        state = ctl.state_dir
        assert _mode(state) == 0o700
        for name in ("tickrun.db", "tickrun.db-wal"):
            if (state / name).exists():
                assert _mode(state / name) == 0o600, name
        for folder_name in ("code", "logs", "builds"):
            assert _mode(state / folder_name) == 0o700
        code = state / "code" / "victim" / victim["code_hash"]
        assert _mode(code) == 0o700 and _mode(code / "app.py") == 0o600
        logs = list((state / "logs" / "victim").glob("*.log"))
        assert logs and all(_mode(p) == 0o600 for p in logs)
        build_logs = list((state / "builds" / "victim" / "logs").glob("*.log"))
        assert build_logs and all(_mode(p) == 0o600 for p in build_logs)
    finally:
        cleanup(ctl)


def test_a_missing_secret_is_a_clear_deploy_error(tmp_path: Path) -> None:
    ctl = _start(tmp_path, dict(os.environ))
    try:
        from tickrun.functions.errors import SpecError

        folder = _spy_folder(tmp_path)
        with pytest.raises(SpecError, match="secret 'spy-creds' key 'api', which is not set"):
            ctl.client.deploy(_spy_spec(folder), folder)
    finally:
        cleanup(ctl)


@pytest.mark.podman
def test_container_replica_cannot_reach_the_controllers_secrets(
    podman_env: dict[str, str], tmp_path: Path
) -> None:
    ctl = _start(tmp_path, podman_env)
    try:
        client = ctl.client
        client._request("PUT", "/api/secrets/spy-creds", {"data": {"api": SECRET_VALUE}})
        victim_src = write_function(tmp_path / "src", "victim")
        client.deploy(spec_of(victim_src), victim_src, platform="container")
        victim = client.wait_ready("victim", timeout_s=900)
        folder = _spy_folder(tmp_path)
        client.deploy(_spy_spec(folder), folder, platform="container")
        client.wait_ready("spy", timeout_s=900)
        report = _spy(ctl, victim)
        _assert_nothing_leaked(report)
        assert ctl.proc is not None and ctl.proc.pid not in report["pids_visible"]
        _assert_secret_only_in_store(ctl)
    finally:
        cleanup(ctl)
