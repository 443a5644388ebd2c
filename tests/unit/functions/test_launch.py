"""The one builder of tickrun's own process command lines (functions/launch.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tickrun.functions.launch import python_command
from tickrun.functions.processes import pid_alive
from tickrun.functions.replica import main as replica_main
from tickrun.functions.replica import replica_command
from tickrun.functions.runs.job import main as job_main


def test_the_child_runs_the_function_with_its_arguments_and_exit_status() -> None:
    done = subprocess.run(
        python_command(job_main, "{}"), capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2  # what job.main exits with for a request it cannot run
    assert "bad request" in done.stderr and "runner" in done.stderr


def test_only_module_level_functions_can_be_launched() -> None:
    with pytest.raises(ValueError, match="module-level"):
        python_command(lambda: None)


def test_a_replica_command_names_the_replica_entry_and_never_dies_with_its_parent() -> None:
    cmd = replica_command("/srv/fn", 8081, 2, python="python")
    assert cmd[0] == "python" and cmd[3:6] == ["0:0", replica_main.__module__, "main"]
    assert cmd[6:] == ["/srv/fn", "127.0.0.1", "8081", "2"]


def test_a_child_dies_with_its_parent() -> None:
    child_cmd = python_command(signal.pause, on_parent_death=signal.SIGTERM)
    # A parent that starts the child, reports its pid, then waits to be killed with -9.
    parent_code = (
        "import json, os, subprocess, sys, time\n"
        "from tickrun.functions.launch import parent_env\n"
        f"cmd = json.loads({json.dumps(json.dumps(child_cmd))})\n"
        "p = subprocess.Popen(cmd, env={**os.environ, **parent_env()})\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code], stdout=subprocess.PIPE)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    time.sleep(0.5)
    assert pid_alive(child)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait(10)
    deadline = time.monotonic() + 10
    while pid_alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(child)
