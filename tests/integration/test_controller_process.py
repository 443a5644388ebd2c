"""The controller on the process platform, end to end: a real controller process, real replica
processes, the gateway, the CLI."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.integration.test_controller_harness import (
    TOKEN,
    ControllerProc,
    cleanup,
    controller,
    pid_alive,
    replica_pids_of,
    spec_of,
    wait_for,
    write_function,
)
from tickrun.functions.errors import AuthError, NotFoundError, PlatformError, SpecError
from tickrun.functions.processor.exitcodes import ExitCode

pytestmark = pytest.mark.slow

__all__ = ["controller"]  # the fixture, re-exported so pytest finds it here


def _invoke_json(ctl: ControllerProc, name: str, **kw: object) -> dict[str, object]:
    res = ctl.client.invoke(name, **kw)  # type: ignore[arg-type]
    assert res.status == 200, res.body
    return json.loads(res.body)


def _ready_replicas(ctl: ControllerProc, name: str) -> list[dict[str, object]]:
    fn = ctl.client.get_function(name)
    return [r for r in fn["replicas"]["items"] if r["state"] == "ready"]


def test_deploy_invoke_scale_delete(controller: ControllerProc, tmp_path: Path) -> None:
    folder = write_function(tmp_path / "src", "scaly")
    client = controller.client
    result = client.deploy(spec_of(folder), folder)
    assert result["function"]["state"] == "building"
    fn = client.wait_ready("scaly", timeout_s=180)
    assert fn["url"] == "/fn/scaly/"
    body = _invoke_json(
        controller, "scaly", path="/some/path?x=1", headers={"X-Request-Id": "req-123"}
    )
    assert body["marker"] == "built-by-commands"  # build.commands ran
    assert body["flavour"] == "vanilla"
    assert body["request_id"] == "req-123"  # preserved through the gateway
    res = controller.client.invoke("scaly", headers={"X-Request-Id": "req-456"})
    assert res.headers["x-request-id"] == "req-456"
    assert body["path"] == "/some/path"

    # Scale 1 → 3 by a spec update (no code): same revision, no rebuild of the replicas.
    first_pid = fn["replicas"]["items"][0]["pid"]
    spec = spec_of(folder)
    spec["spec"]["replicas"] = 3
    client.deploy(spec, None)
    wait_for(lambda: len(_ready_replicas(controller, "scaly")) == 3, 120, "3 ready replicas")
    fn = client.get_function("scaly")
    pids = {r["pid"] for r in fn["replicas"]["items"]}
    assert len(pids) == 3 and first_pid in pids  # the first replica kept running
    assert fn["replicas"]["desired"] == 3
    served_by = {_invoke_json(controller, "scaly")["replica"] for _ in range(9)}
    assert len(served_by) == 3  # the gateway balances over all ready replicas

    spec["spec"]["replicas"] = 1
    client.deploy(spec, None)
    wait_for(
        lambda: len(client.get_function("scaly")["replicas"]["items"]) == 1, 60, "scale down to 1"
    )
    gone = pids - {client.get_function("scaly")["replicas"]["items"][0]["pid"]}
    wait_for(lambda: not any(pid_alive(p) for p in gone), 30, "scaled-down replicas to exit")

    # Delete: nothing keeps running.
    last_pid = client.get_function("scaly")["replicas"]["items"][0]["pid"]
    client.delete_function("scaly")
    assert not pid_alive(last_pid)
    with pytest.raises(NotFoundError):
        client.get_function("scaly")
    assert controller.client.invoke("scaly").status == 404
    kinds = [e["kind"] for e in client.events("scaly")]
    assert "replica_stopped" in kinds and kinds[-1] == "deleted"


def test_killed_replica_is_restarted_and_recorded(
    controller: ControllerProc, tmp_path: Path
) -> None:
    folder = write_function(tmp_path / "src", "crashy")
    client = controller.client
    client.deploy(spec_of(folder), folder)
    fn = client.wait_ready("crashy", timeout_s=180)
    replica = fn["replicas"]["items"][0]
    os.kill(replica["pid"], signal.SIGKILL)

    def restarted() -> dict[str, object] | None:
        items = client.get_function("crashy")["replicas"]["items"]
        return (
            items[0]
            if items and items[0]["restarts"] >= 1 and items[0]["state"] == "ready"
            else None
        )

    new = wait_for(restarted, 60, "replica restart")
    assert new["id"] == replica["id"] and new["pid"] != replica["pid"]
    assert len(client.get_function("crashy")["replicas"]["items"]) == 1
    events = client.events("crashy")
    exited = [e for e in events if e["kind"] == "replica_exited"]
    assert exited and "signal 9" in exited[0]["message"]
    assert any(e["kind"] == "replica_restarted" for e in events)
    assert _invoke_json(controller, "crashy")["marker"] == "built-by-commands"
    logs = client.logs("crashy")
    assert logs[0]["replica"] == replica["id"] and logs[0]["lines"]


def test_controller_kill9_keeps_functions_replicas_and_history(tmp_path: Path) -> None:
    state = tmp_path / "state"
    ctl = ControllerProc(state, dict(os.environ)).start()
    try:
        for name, replicas in (("alpha", 1), ("beta", 2)):
            folder = write_function(tmp_path / "src", name, replicas=replicas)
            ctl.client.deploy(spec_of(folder), folder)
        for name in ("alpha", "beta"):
            ctl.client.wait_ready(name, timeout_s=180)
        before = {n: ctl.client.get_function(n) for n in ("alpha", "beta")}
        events_before = {n: len(ctl.client.events(n)) for n in ("alpha", "beta")}
        pids = {n: sorted(r["pid"] for r in before[n]["replicas"]["items"]) for n in before}
        ctl.kill9()
        assert all(pid_alive(p) for ps in pids.values() for p in ps)  # replicas outlive it

        ctl2 = ControllerProc(state, dict(os.environ)).start()
        try:
            for name in ("alpha", "beta"):
                wait_for(
                    lambda n=name: ctl2.client.get_function(n)["replicas"]["ready"] == len(pids[n]),
                    60,
                    f"{name} replicas re-adopted",
                )
                fn = ctl2.client.get_function(name)
                assert sorted(r["pid"] for r in fn["replicas"]["items"]) == pids[name]
                assert fn["version"] == before[name]["version"]
                events = ctl2.client.events(name)
                assert len(events) > events_before[name]  # history kept, adoption recorded
                assert any(e["kind"] == "replica_adopted" for e in events)
                assert not any(
                    e["kind"] == "replica_started" for e in events[events_before[name] :]
                )
                assert _invoke_json(ctl2, name)["marker"] == "built-by-commands"
            # No duplicates: exactly the recorded replica processes are running.
            time.sleep(1.0)
            for name in ("alpha", "beta"):
                fn = ctl2.client.get_function(name)
                assert len(fn["replicas"]["items"]) == len(pids[name])
            leaders = [p for p in replica_pids_of("TICKRUN_FUNCTION", "beta") if os.getpgid(p) == p]
            assert sorted(leaders) == pids["beta"]
        finally:
            cleanup(ctl2)
        assert not any(pid_alive(p) for ps in pids.values() for p in ps)
    finally:
        ctl.stop()


def test_requirements_go_into_a_cached_env_keyed_by_the_lock(tmp_path: Path) -> None:
    cache = tmp_path / "cache"  # a fresh cache: the first deploy must resolve and install
    ctl = ControllerProc(tmp_path / "state", dict(os.environ, TICKRUN_CACHE=str(cache))).start()
    try:
        client = ctl.client
        reqs = {"tabulate": "tabulate==0.9.0"}
        first = write_function(tmp_path / "src", "needy", requirements=reqs)
        res = client.deploy(spec_of(first), first)
        log = "\n".join(client.follow_build(res["build"]["id"]))
        assert "resolving 1 on the host" in log and "installing locked requirements" in log
        client.wait_ready("needy", timeout_s=300)
        assert _invoke_json(ctl, "needy")["deps"] == {"tabulate": "0.9.0"}
        [lock] = list((cache / "controller" / "wheels").glob("*/requirements.lock"))
        assert lock.read_text().startswith("tabulate==0.9.0 --hash=sha256:")
        # same requirements, another function: nothing resolved or installed again
        second = write_function(tmp_path / "src", "needy2", requirements=reqs)
        res = client.deploy(spec_of(second), second)
        log = "\n".join(client.follow_build(res["build"]["id"]))
        assert "requirements: 1 cached" in log and "environment: cached" in log
        client.wait_ready("needy2", timeout_s=120)
        assert _invoke_json(ctl, "needy2")["deps"] == {"tabulate": "0.9.0"}
    finally:
        cleanup(ctl)


def test_a_build_interrupted_by_a_controller_stop_resumes_on_start(tmp_path: Path) -> None:
    env = dict(os.environ, TICKRUN_CACHE=str(tmp_path / "cache"))
    state = tmp_path / "state"
    ctl = ControllerProc(state, env).start()
    try:
        folder = write_function(
            tmp_path / "src",
            "slowbuild",
            extra_spec={"build": {"commands": ["sleep 5", "echo built-by-commands > marker.txt"]}},
        )
        res = ctl.client.deploy(spec_of(folder), folder)
        for line in ctl.client.follow_build(res["build"]["id"]):
            if "build command 1/2" in line:
                break
        ctl.stop()  # SIGTERM mid-build: the build's subprocess is ended, not waited for
        assert ctl.proc is not None and ctl.proc.returncode == 0
        ctl = ControllerProc(state, env).start()
        fn = ctl.client.wait_ready("slowbuild", timeout_s=120)
        assert fn["version"] == 1
        assert any("resuming a build" in e["message"] for e in ctl.client.events("slowbuild"))
        assert _invoke_json(ctl, "slowbuild")["marker"] == "built-by-commands"
    finally:
        cleanup(ctl)


def test_errors_are_json_with_the_right_status(controller: ControllerProc, tmp_path: Path) -> None:
    client = controller.client
    # health and the OpenAPI document are open; the API is not
    with urllib.request.urlopen(controller.url + "/healthz") as resp:
        assert json.loads(resp.read())["status"] == "ok"
    with urllib.request.urlopen(controller.url + "/api/openapi.json") as resp:
        assert json.loads(resp.read())["openapi"].startswith("3.")
    from tickrun.controller.client import ControllerClient

    with pytest.raises(AuthError, match="missing bearer token"):
        ControllerClient(controller.url, None).list_functions()
    with pytest.raises(AuthError, match="invalid bearer token"):
        ControllerClient(controller.url, "wrong").list_functions()
    assert ControllerClient(controller.url, None).invoke("x").status == 401
    # unknown function
    with pytest.raises(NotFoundError, match="'ghost' not found"):
        client.get_function("ghost")
    res = client.invoke("ghost")
    assert res.status == 404 and json.loads(res.body)["error"] == "NotFoundError"
    # bad spec: field-level detail
    with pytest.raises(SpecError) as bad:
        client.deploy({"metadata": {"name": "Bad_Name"}, "spec": {"handlr": "x:y"}}, tmp_path)
    fields = {f["field"] for f in bad.value.detail}
    assert {"metadata.name", "spec.handlr"} <= fields
    # unknown platform, spec update of an unknown function, malformed JSON
    with pytest.raises(SpecError, match="platform"):
        client._request(
            "POST", "/api/functions", {"spec": {"metadata": {"name": "p"}}, "platform": "mainframe"}
        )
    with pytest.raises(SpecError, match="does not exist yet"):
        client._request("PUT", "/api/functions/newbie", {"spec": {"metadata": {"name": "newbie"}}})
    req = urllib.request.Request(
        controller.url + "/api/functions",
        data=b"{nope",
        method="POST",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req)
    assert err.value.code == 400
    assert json.loads(err.value.read()) == {
        "error": "BadRequestError",
        "detail": "request body is not valid JSON",
        "request_id": err.value.headers["X-Request-Id"],
    }
    # a handler that cannot load: the function ends in error with the processor's reason
    folder = write_function(
        tmp_path / "src", "broken", extra_spec={"handler": "missing_module:handler", "build": {}}
    )
    client.deploy(spec_of(folder), folder)
    with pytest.raises(
        PlatformError, match=r"failed: function cannot start \(handler-load-error: .*missing_module"
    ):
        client.wait_ready("broken", timeout_s=60)
    fn = client.get_function("broken")
    assert fn["state"] == "error" and "Traceback" not in fn["message"]
    # the replica says why, from its exit code and its processor's status line (not its log)
    [rep] = fn["replicas"]["items"]
    assert rep["state"] == "failed" and rep["exit_code"] == ExitCode.CONFIG
    assert rep["exit"]["name"] == "config" and rep["exit"]["reason"] == "handler-load-error"
    assert "missing_module" in rep["exit"]["detail"]
    exited = [e for e in client.events("broken") if e["kind"] == "replica_exited"]
    assert exited and exited[0]["data"]["reason"] == "handler-load-error"
    res = client.invoke("broken")
    assert res.status == 503
    assert "no ready replica" in json.loads(res.body)["detail"]


def test_cli_deploy_get_invoke_logs_export_delete(
    controller: ControllerProc, tmp_path: Path
) -> None:
    folder = write_function(tmp_path / "src", "clif")
    env = dict(os.environ, TICKRUN_CONTROLLER_URL=controller.url, TICKRUN_TOKEN=TOKEN)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tickrun", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    out = cli("deploy", str(folder), "--replicas", "2", "--env", "FLAVOUR=mint")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"{controller.url}/fn/clif/"  # the URL at the end
    assert "environment:" in out.stderr and "build " in out.stderr  # build log streamed
    out = cli("invoke", "clif", "--path", "/x", "-H", "X-Request-Id:cli-1")
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    assert body["flavour"] == "mint" and body["request_id"] == "cli-1"
    out = cli("get", "function", "clif", "-o", "json")
    assert json.loads(out.stdout)["replicas"]["desired"] == 2
    out = cli("get", "functions")
    assert "clif" in out.stdout and "2/2" in out.stdout
    out = cli("export", "clif")
    assert "name: clif" in out.stdout and "replicas: 2" in out.stdout
    out = cli("logs", "clif")
    assert out.returncode == 0 and "processor ready" in out.stdout
    out = cli("get", "function", "nope")
    assert out.returncode == 2 and "error: function 'nope' not found" in out.stderr
    out = cli("delete", "clif")
    assert out.returncode == 0
    assert "clif" not in cli("get", "functions").stdout


def _processes_with_args(*args: str) -> list[int]:
    wanted = "\0".join(args).encode()
    out = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and wanted in (entry / "cmdline").read_bytes():
                out.append(int(entry.name))
        except OSError:
            continue
    return [p for p in out if pid_alive(p)]


def test_delete_during_a_build_ends_the_deploy_and_a_recreate_starts_clean(
    controller: ControllerProc, tmp_path: Path
) -> None:
    slow = ("sleep", "47.25")  # a duration no other process here uses
    folder = write_function(
        tmp_path / "slow",
        "doomed",
        extra_spec={"build": {"commands": ["echo doomed-build; " + " ".join(slow)]}},
    )
    env = dict(os.environ, TICKRUN_CONTROLLER_URL=controller.url, TICKRUN_TOKEN=TOKEN)
    deploy = subprocess.Popen(
        [sys.executable, "-m", "tickrun", "deploy", str(folder)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: _processes_with_args(*slow), 180, "the build command to run")
        controller.client.delete_function("doomed")
        _, err = deploy.communicate(timeout=30)  # following the build log used to hang
    finally:
        if deploy.poll() is None:
            deploy.kill()
            deploy.wait()
    assert deploy.returncode != 0
    assert "doomed-build" in err and "build of doomed aborted: function deleted" in err
    wait_for(lambda: not _processes_with_args(*slow), 15, "the build's subprocess to end")
    state = controller.state_dir
    assert not (state / "builds" / "doomed").exists() and not (state / "code" / "doomed").exists()

    # The same name again: its build log is its own, not the deleted function's as well.
    fresh = write_function(tmp_path / "fresh", "doomed")
    res = controller.client.deploy(spec_of(fresh), fresh)
    log = "\n".join(controller.client.follow_build(res["build"]["id"]))
    assert log.startswith("requirements:"), log  # this build's first line, nothing before it
    assert "doomed-build" not in log and "sleep" not in log and "aborted" not in log
    controller.client.wait_ready("doomed", timeout_s=180)
    assert _invoke_json(controller, "doomed")["marker"] == "built-by-commands"
    assert [
        b["state"]
        for b in controller.client._request("GET", "/api/functions/doomed/builds")["builds"]
    ] == ["succeeded"]


def test_a_delete_cut_short_by_kill9_is_finished_on_restart(tmp_path: Path) -> None:
    state = tmp_path / "state"
    ctl = ControllerProc(state, dict(os.environ)).start()
    try:
        folder = write_function(tmp_path / "src", "halfway")
        ctl.client.deploy(spec_of(folder), folder)
        fn = ctl.client.wait_ready("halfway", timeout_s=180)
        pids = [r["pid"] for r in fn["replicas"]["items"]]
        ctl.kill9()
        # What a kill -9 between marking the function deleting and stopping its replicas
        # leaves: the row says deleting, the replicas still run.
        db = sqlite3.connect(state / "tickrun.db")
        with db:
            db.execute("UPDATE functions SET state = 'deleting' WHERE name = 'halfway'")
        db.close()
        assert all(pid_alive(p) for p in pids)

        ctl2 = ControllerProc(state, dict(os.environ)).start()
        try:
            with pytest.raises(NotFoundError):
                ctl2.client.get_function("halfway")
            wait_for(lambda: not any(pid_alive(p) for p in pids), 30, "the replicas to stop")
            ctl2.client.deploy(spec_of(folder), folder)  # used to be 409 forever
            assert ctl2.client.wait_ready("halfway", timeout_s=180)["version"] == 1
        finally:
            cleanup(ctl2)
    finally:
        ctl.stop()
