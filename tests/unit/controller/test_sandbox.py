"""The process platform's sandbox: environment allowlist, mount plan, and a real bubblewrap run."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tickrun.controller.platforms.sandbox import (
    Isolation,
    bwrap_command,
    probe,
    replica_env,
    sandbox_child,
)


def test_replica_env_is_an_allowlist_and_runtime_variables_win() -> None:
    host = {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TICKRUN_TOKEN": "tok",
        "TICKRUN_DB_URL": "sqlite:////state/tickrun.db",
        "TICKRUN_WORKER_CONFIG": "{}",
        "AWS_SECRET_ACCESS_KEY": "aws",
        "TICKRUN_S3_SECRET_KEY": "s3",
        "TICKRUN_S3_ENDPOINT": "127.0.0.1:9000",
        "SSH_AUTH_SOCK": "/tmp/agent",
        "HOME": "/root",
        "SOME_CANARY": "x",
    }
    env = replica_env(
        host,
        {"USER_VAR": "u", "PORT": "1", "PATH": "/opt/bin:/usr/bin"},
        {"PORT": "20001", "TICKRUN_REPLICA_ID": "r1"},
    )
    assert env == {
        "PATH": "/opt/bin:/usr/bin",  # the spec may set PATH
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TICKRUN_S3_ENDPOINT": "127.0.0.1:9000",  # where artifacts go, not the keys
        "HOME": "/tmp",
        "TMPDIR": "/tmp",
        "USER_VAR": "u",
        "PORT": "20001",  # the runtime's own variables win over the spec's
        "TICKRUN_REPLICA_ID": "r1",
    }


def test_probe_reports_none_when_bubblewrap_is_missing_or_broken(tmp_path: Path) -> None:
    missing = probe(str(tmp_path / "no-bwrap"))
    assert missing.mechanism == "none" and "cannot run" in missing.reason
    broken = probe("/bin/false")
    assert broken.mechanism == "none" and broken.describe()["mechanism"] == "none"
    assert probe().mechanism == "bubblewrap"  # this machine (and CI) has it


def _sandbox_run(iso: Isolation, code: Path, state: Path, script: str) -> str:
    cmd = bwrap_command(
        iso,
        [sys.executable, "-c", script],
        code_dir=str(code),
        env_root=None,
        hidden=[str(state)],
    )
    out = subprocess.run(
        cmd, capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"}, check=False
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_a_sandboxed_process_sees_its_code_and_nothing_else_of_the_state_dir(
    tmp_path: Path,
) -> None:
    iso = probe()
    state = tmp_path / "state"
    code = state / "code" / "fn" / "abc"
    other = state / "code" / "other" / "def"
    for d in (code, other):
        d.mkdir(parents=True)
        (d / "app.py").write_text("x = 1\n")
    (state / "token").write_text("secret-token")
    (state / "tickrun.db").write_bytes(b"db")
    if iso.uid is not None:
        os.chown(code, iso.uid, iso.gid or iso.uid)
        os.chown(code / "app.py", iso.uid, iso.gid or iso.uid)
    script = (
        "import os\n"
        "def t(f):\n"
        "    try:\n"
        "        f(); return 'ok'\n"
        "    except OSError as e:\n"
        "        return type(e).__name__\n"
        f"print(t(lambda: open('app.py').read()), t(lambda: open('{state}/token').read()),"
        f" t(lambda: open('{other}/app.py').read()), t(lambda: open('{state}/tickrun.db').read()),"
        " t(lambda: open('/proc/1/environ').read() and None),"
        " len([p for p in os.listdir('/proc') if p.isdigit()]) < 10,"
        " os.getuid(), os.getcwd())\n"
    )
    out = _sandbox_run(iso, code, state, script).split()
    assert out[0] == "ok"  # its own code
    assert out[1:4] == ["FileNotFoundError"] * 3  # token, another function, the database
    assert out[5] == "True"  # its own pid namespace: only a handful of processes
    if os.geteuid() == 0:
        assert int(out[6]) == iso.uid and iso.uid != 0
    assert out[7] == str(code)


def test_sandbox_child_finds_the_process_below_bwrap(tmp_path: Path) -> None:
    iso = probe()
    code = tmp_path / "code"
    code.mkdir()
    if iso.uid is not None:
        os.chown(code, iso.uid, iso.gid or iso.uid)
    cmd = bwrap_command(
        iso,
        [sys.executable, "-c", "import time; time.sleep(30)"],
        code_dir=str(code),
        env_root=None,
        hidden=[],
    )
    proc = subprocess.Popen(cmd, start_new_session=True, env={"PATH": "/usr/bin:/bin"})
    try:
        inner = None
        deadline = time.monotonic() + 10
        while inner is None and time.monotonic() < deadline:
            inner = sandbox_child(proc.pid)
            time.sleep(0.02)
        assert inner is not None and inner != proc.pid
        assert Path(f"/proc/{inner}/comm").read_text().strip() == "python"
        os.kill(inner, 15)  # the replica ends; bwrap follows with its exit status
        assert proc.wait(timeout=10) != 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()
    assert sandbox_child(os.getpid()) is None  # not a bwrap


def test_without_bubblewrap_the_platform_says_so_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from tickrun.controller.platforms.process import ProcessPlatform

    monkeypatch.setenv("PATH", "/nonexistent")  # no bwrap to be found
    platform = ProcessPlatform()
    with caplog.at_level(logging.WARNING):
        assert platform.isolation()["mechanism"] == "none"
        assert platform.isolation()["mechanism"] == "none"
    warnings = [r for r in caplog.records if "NOT isolated" in r.getMessage()]
    assert len(warnings) == 1 and "bubblewrap" in warnings[0].getMessage()


def test_a_data_folder_holding_the_state_dir_does_not_uncover_it(tmp_path: Path) -> None:
    iso = probe()
    state = tmp_path / "state"
    code = state / "code" / "fn" / "abc"
    code.mkdir(parents=True)
    (state / "token").write_text("secret-token")
    (tmp_path / "data.csv").write_text("a,b\n")
    os.chmod(tmp_path / "data.csv", 0o644)
    os.chmod(tmp_path, 0o755)  # a data folder the replica user may read
    if iso.uid is not None:
        os.chown(code, iso.uid, iso.gid or iso.uid)
    cmd = bwrap_command(
        iso,
        [
            sys.executable,
            "-c",
            f"import os; print(open('{tmp_path}/data.csv').read().strip(),"
            f" os.path.exists('{state}/token'), os.path.exists('/root/.bash_history'))",
        ],
        code_dir=str(code),
        env_root=None,
        hidden=[str(state)],
        readable=[str(tmp_path), "/", str(Path.home())],  # the last two are refused
    )
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["a,b", "False", "False"]


def test_runtime_paths_never_include_the_home_or_root(monkeypatch: pytest.MonkeyPatch) -> None:
    from tickrun.controller.platforms.sandbox import runtime_paths

    monkeypatch.setattr(sys, "path", [*sys.path, str(Path.home()), "/"])
    paths = runtime_paths()
    assert str(Path.home()) not in paths and "/" not in paths
    assert sys.base_prefix in paths  # the interpreter itself is there
