"""``tickrun run … --runner subprocess|container``: the job runs elsewhere, tracked as if local."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from tests.peers import podman
from tickrun.functions.artifacts import ArtifactRoots
from tickrun.functions.processes import pid_alive
from tickrun.functions.runs.dataitem import DataItem
from tickrun.functions.runs.db import SqlRunDB
from tickrun.functions.runs.records import RunRecord

JOB = """\
import os
import socket
import time


def train(context, lr=0.1):
    print("training with", lr, flush=True)
    context.log_result("accuracy", 0.5 + lr)
    context.log_result("pid", os.getpid())
    context.log_result("in_container", os.path.exists("/run/.containerenv"))
    context.log_result("hostname", socket.gethostname())
    context.log_artifact("notes", body=b"hello from the job")


def bad(context):
    raise ValueError("boom in the job")


def slow(context):
    context.log_result("started", 1)
    time.sleep(120)
"""

_STARTED = re.compile(r"run ([0-9a-f]{32}) started \((\w+), pid (\d+)\)")


def _job(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "job.py").write_text(JOB)
    return src / "job.py"


def _env(tmp_path: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    for var in (
        "TICKRUN_DB_URL",
        "TICKRUN_CONTROLLER_URL",
        "TICKRUN_TOKEN",
        "TICKRUN_ARTIFACT_PATH",
    ):
        env.pop(var, None)
    env["TICKRUN_HOME"] = str(tmp_path / "home")
    env["TICKRUN_STATE_DIR"] = str(tmp_path / "controller")  # image build contexts
    env["TICKRUN_FLUSH_INTERVAL_S"] = "0.1"
    return env


def _roots(tmp_path: Path) -> ArtifactRoots:
    # The jobs' artifact store ($TICKRUN_HOME/artifacts of _env), not this process's.
    return ArtifactRoots.of([tmp_path / "home" / "artifacts"])


def _db(tmp_path: Path) -> SqlRunDB:
    return SqlRunDB(f"sqlite:///{tmp_path / 'home' / 'runs.db'}")


def _start(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tickrun", "run", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen[str], timeout: float) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"tickrun run did not finish in {timeout} s:\n{out}\n{err}")
    return proc.returncode, out, err


def _started(err: str) -> tuple[str, int]:
    m = _STARTED.search(err)
    assert m is not None, err
    return m.group(1), int(m.group(3))


def _wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def _running(db: SqlRunDB, name: str) -> RunRecord | None:
    runs = db.list_runs(name=name)
    if runs and runs[0].state.value == "running" and runs[0].results.get("started") == 1:
        return runs[0]
    return None


# -- process -----------------------------------------------------------------------------------


def test_process_job_is_tracked_completed(tmp_path: Path) -> None:
    job = _job(tmp_path)
    proc = _start(
        [f"{job}:train", "--param", "lr=0.25", "--runner", "subprocess", "--json"], _env(tmp_path)
    )
    code, out, err = _finish(proc, 120)
    assert code == 0, err
    uid, child_pid = _started(err)
    assert "training with 0.25" in out  # the job's own output reached the parent's stdout
    printed = json.loads(out[out.index("{") :])
    assert printed["uid"] == uid
    run = _db(tmp_path).get_run(uid)
    assert run.state.value == "completed"
    assert run.params == {"lr": 0.25}
    assert run.results["accuracy"] == pytest.approx(0.75)
    # a separate interpreter, not the CLI process
    assert run.results["pid"] == child_pid == run.pid
    assert child_pid != proc.pid
    item = DataItem(f"store://default/{uid}/notes", db=_db(tmp_path), roots=_roots(tmp_path))
    assert item.get() == (b"hello from the job")


def test_process_job_failure_is_recorded_as_error(tmp_path: Path) -> None:
    job = _job(tmp_path)
    code, out, err = _finish(_start([f"{job}:bad", "--runner", "subprocess"], _env(tmp_path)), 120)
    assert code == 1
    uid, _ = _started(err)
    run = _db(tmp_path).get_run(uid)
    assert run.state.value == "error"
    assert run.error is not None and "boom in the job" in run.error
    assert "state=error" in out


def test_process_job_sigterm_aborts_run_and_leaves_no_child(tmp_path: Path) -> None:
    job = _job(tmp_path)
    db = _db(tmp_path)
    proc = _start([f"{job}:slow", "--runner", "subprocess"], _env(tmp_path))
    try:
        _wait_for(lambda: _running(db, "job-slow") is not None, 60, "the slow job to run")
        running = _running(db, "job-slow")
        assert running is not None and running.pid is not None
        assert running.pid != proc.pid and pid_alive(running.pid)
        proc.send_signal(signal.SIGTERM)
        code, _, err = _finish(proc, 60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 128 + signal.SIGTERM, err
    run = db.get_run(running.uid)
    assert run.state.value == "aborted"
    assert run.results["started"] == 1
    assert not pid_alive(running.pid)


def test_process_job_parent_killed_takes_the_job_with_it(tmp_path: Path) -> None:
    job = _job(tmp_path)
    db = _db(tmp_path)
    proc = _start([f"{job}:slow", "--runner", "subprocess"], _env(tmp_path))
    try:
        _wait_for(lambda: _running(db, "job-slow") is not None, 60, "the slow job to run")
        running = _running(db, "job-slow")
        assert running is not None and running.pid is not None
        proc.kill()  # SIGKILL: the CLI cannot clean up; the job gets its parent-death signal
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    _wait_for(lambda: not pid_alive(running.pid or 0), 30, "the orphaned job to end")
    _wait_for(lambda: db.get_run(running.uid).state.value == "aborted", 30, "run aborted")


def test_bad_param_fails_before_any_child(tmp_path: Path) -> None:
    job = _job(tmp_path)
    code, _, err = _finish(
        _start([f"{job}:train", "--param", "oops", "--runner", "subprocess"], _env(tmp_path)), 60
    )
    assert code == 2
    assert "KEY=VALUE" in err and "started (" not in err


# -- container ---------------------------------------------------------------------------------


@pytest.mark.podman
@pytest.mark.slow
def test_container_job_tracked_into_host_store(podman_env: dict[str, str], tmp_path: Path) -> None:
    job = _job(tmp_path)
    env = _env(tmp_path, podman_env)
    proc = _start([f"{job}:train", "--param", "lr=0.125", "--runner", "container"], env)
    code, out, err = _finish(proc, 900)
    assert code == 0, err[-3000:]
    uid, _ = _started(err)
    assert "training with 0.125" in out
    assert "build: " in err  # the controller's builder made the image
    db = _db(tmp_path)
    run = db.get_run(uid)
    assert run.state.value == "completed"
    assert run.results["accuracy"] == pytest.approx(0.625)
    assert run.results["in_container"] is True
    assert run.results["hostname"] == f"tickrun-job-{uid[:16]}" == run.host
    [art] = [a for a in db.list_artifacts("default", uid=uid) if a.key != "log"]  # + its log
    assert art.key == "notes"
    item = DataItem(f"store://default/{uid}/notes", db=db, roots=_roots(tmp_path))
    assert item.get() == b"hello from the job"
    # the artifact landed in the host's artifact folder
    assert list((tmp_path / "home" / "artifacts" / "default" / uid).rglob("notes*"))
    left = podman(
        "ps", "-a", "--filter", f"label=tickrun.run={uid}", "--format", "{{.ID}}", env=podman_env
    ).stdout.strip()
    assert left == ""  # --rm


@pytest.mark.podman
@pytest.mark.slow
def test_container_job_sigterm_aborts_run_and_removes_container(
    podman_env: dict[str, str], tmp_path: Path
) -> None:
    job = _job(tmp_path)
    db = _db(tmp_path)
    proc = _start([f"{job}:slow", "--runner", "container"], _env(tmp_path, podman_env))
    try:
        _wait_for(lambda: _running(db, "job-slow") is not None, 900, "the container job")
        running = _running(db, "job-slow")
        assert running is not None
        listed = podman(
            "ps",
            "--filter",
            f"label=tickrun.run={running.uid}",
            "--format",
            "{{.ID}}",
            env=podman_env,
        ).stdout.strip()
        assert listed != ""
        proc.send_signal(signal.SIGTERM)
        code, _, err = _finish(proc, 120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 128 + signal.SIGTERM, err[-3000:]
    assert db.get_run(running.uid).state.value == "aborted"
    _wait_for(
        lambda: (
            podman(
                "ps",
                "-a",
                "--filter",
                f"label=tickrun.run={running.uid}",
                "--format",
                "{{.ID}}",
                env=podman_env,
            ).stdout.strip()
            == ""
        ),
        60,
        "the container to be removed",
    )
