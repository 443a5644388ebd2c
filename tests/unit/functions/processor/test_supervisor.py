"""`tickrun serve` as a real process tree: worker processes, restarts, SIGTERM drain."""

from __future__ import annotations

import concurrent.futures
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import ServedFunction
from tickrun.functions.processes import pid_alive
from tickrun.functions.processor.exitcodes import STATUS_PREFIX, ExitCode, ExitStatus, Reason

FORMS = Path(__file__).resolve().parents[3] / "fixtures" / "functions" / "forms"


def write_function(tmp_path: Path, handler: str, **spec_lines: str) -> Path:
    (tmp_path / "forms.py").write_text((FORMS / "forms.py").read_text())
    extra = "".join(f"  {k}: {v}\n" for k, v in spec_lines.items())
    (tmp_path / "function.yaml").write_text(
        "metadata:\n  name: forms\nspec:\n"
        f"  handler: forms:{handler}\n{extra}"
        "  triggers:\n    http:\n      kind: http\n      maxWorkers: 8\n"
    )
    return tmp_path


def get(url: str, timeout: float = 10) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture
def served() -> Iterator[list[ServedFunction]]:
    procs: list[ServedFunction] = []
    yield procs
    for p in procs:
        p.terminate()


def test_workers_share_one_port(tmp_path: Path, served: list[ServedFunction]) -> None:
    fn = ServedFunction(write_function(tmp_path, "pid"), "--workers", "2").start()
    served.append(fn)
    pids = set()
    workers = set()
    for _ in range(60):
        status, body = get(fn.url)
        assert status == 200
        data = __import__("json").loads(body)
        pids.add(data["pid"])
        workers.add(data["worker"])
        if len(pids) == 2:
            break
    assert len(pids) == 2 and workers == {0, 1}


def test_crashed_worker_is_restarted(tmp_path: Path, served: list[ServedFunction]) -> None:
    fn = ServedFunction(write_function(tmp_path, "crash"), "--workers", "1").start()
    served.append(fn)
    status, body = get(fn.url)
    assert status == 200
    first_pid = __import__("json").loads(body)["pid"]
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        get(fn.url + "?crash=1")
    deadline = time.monotonic() + 20
    new_pid = None
    while time.monotonic() < deadline:
        try:
            status, body = get(fn.url, timeout=2)
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.1)
            continue
        if status == 200:
            new_pid = __import__("json").loads(body)["pid"]
            break
    assert new_pid is not None and new_pid != first_pid
    assert fn.proc is not None and fn.proc.poll() is None  # the replica itself survived
    restarts = [r for r in fn.log_records() if r.get("message") == "worker exited; restarting"]
    assert restarts and restarts[0]["exit_code"] == 3
    _, metrics = get(fn.url + "/metrics")
    match = re.search(rb'tickrun_worker_restarts_total\{function="forms"\} (\d+)', metrics)
    assert match and int(match.group(1)) >= 1


def test_workers_die_with_their_supervisor(tmp_path: Path, served: list[ServedFunction]) -> None:
    fn = ServedFunction(write_function(tmp_path, "pid"), "--workers", "1").start()
    served.append(fn)
    status, body = get(fn.url)
    assert status == 200
    worker = __import__("json").loads(body)["pid"]
    assert fn.proc is not None and worker != fn.proc.pid and pid_alive(worker)
    fn.proc.send_signal(__import__("signal").SIGKILL)  # no drain: only parent-death can end it
    fn.proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while pid_alive(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(worker), "a worker outlived its supervisor"


def test_sigterm_drains_in_flight_requests(tmp_path: Path, served: list[ServedFunction]) -> None:
    fn = ServedFunction(write_function(tmp_path, "slow_async"), "--workers", "1").start()
    served.append(fn)
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(get, fn.url + "?s=1.5", 20) for _ in range(6)]
        time.sleep(0.5)  # all six are in the handler now
        assert fn.proc is not None
        fn.proc.send_signal(__import__("signal").SIGTERM)
        results = [f.result() for f in futures]
    assert [status for status, _ in results] == [200] * 6
    assert fn.proc.wait(timeout=30) == 0
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        get(fn.url, timeout=2)


def test_unloadable_handler_exits_with_clear_error(tmp_path: Path) -> None:
    fn_dir = write_function(tmp_path, "no_such_entrypoint")
    fn = ServedFunction(fn_dir).start(expect_ready=False)
    assert fn.proc is not None
    code = fn.proc.wait(timeout=60)
    fn.terminate()
    assert code == ExitCode.CONFIG
    messages = " ".join(str(r.get("message")) for r in fn.log_records())
    assert "has no entrypoint 'no_such_entrypoint'" in messages
    # The reason, for whoever started the processor, is its last line on stdout.
    status = ExitStatus.parse(fn.stdout[-1])
    assert fn.stdout[-1].startswith(STATUS_PREFIX) and status is not None
    assert status.code == code and status.reason is Reason.HANDLER_LOAD
    assert "has no entrypoint 'no_such_entrypoint'" in status.detail


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    fn_dir = write_function(tmp_path, "text")
    (fn_dir / "forms.py").write_text("def handler(context, event):\n    return (\n")
    fn = ServedFunction(fn_dir).start(expect_ready=False)
    assert fn.proc is not None
    assert fn.proc.wait(timeout=60) == ExitCode.CONFIG
    fn.terminate()
    messages = " ".join(str(r.get("message")) for r in fn.log_records())
    assert "syntax error in forms.py" in messages
    status = ExitStatus.last_in(fn.stdout)
    assert status is not None and status.detail.startswith("syntax error in forms.py, line ")
