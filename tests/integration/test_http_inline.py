"""Sync handlers run inline on a real ``tickrun serve`` worker (a plain Nuclio function.yaml: one
slot): the event timeout still ends a slow call with a 504 and the worker keeps serving, health
and metrics are answered while a call is slow, SIGTERM lets the call in flight finish, and
neither a raising handler nor one that ignores its timeout takes the replica down."""

from __future__ import annotations

import http.client
import json
import os
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.processes import ServedFunction

HANDLERS = """\
import os
import threading
import time


def handler(context, event):
    # Sleeps when asked: ?s=<seconds>.
    seconds = float(event.fields.get("s", "0"))
    if seconds:
        time.sleep(seconds)
    return {"pid": os.getpid(), "thread": threading.current_thread().name}


def boom(context, event):
    raise RuntimeError("handler failed on purpose")


def stubborn(context, event):
    # Swallows every interruption, as badly written code can: only a new worker ends it.
    if event.fields.get("s") is None:
        return {"pid": os.getpid()}
    end = time.monotonic() + 60
    while time.monotonic() < end:
        try:
            time.sleep(0.05)
        except BaseException:
            pass
    return "never"
"""


def _spec(handler: str, timeout: str | None) -> str:
    text = f"metadata:\n  name: inline\nspec:\n  handler: fn:{handler}\n"
    if timeout:
        text += f"  eventTimeout: {timeout}\n"
    return text


def _serve(path: Path, handler: str, timeout: str | None = None) -> ServedFunction:
    path.mkdir(parents=True, exist_ok=True)
    (path / "fn.py").write_text(HANDLERS)
    (path / "function.yaml").write_text(_spec(handler, timeout))
    return ServedFunction(path).start()


def _get(fn: ServedFunction, path: str, timeout_s: float = 30) -> tuple[int, bytes]:
    """A GET on a new connection (as a probe does)."""
    conn = http.client.HTTPConnection("127.0.0.1", fn.port, timeout=timeout_s)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(4) as ex:
        yield ex


def _restarts(fn: ServedFunction) -> int:
    return sum(1 for r in fn.log_records() if r.get("message") == "worker exited; restarting")


def test_event_timeout_is_504_and_the_worker_keeps_serving(tmp_path: Path) -> None:
    fn = _serve(tmp_path, "handler", timeout="300ms")
    try:
        status, body = _get(fn, "/?s=5")
        assert status == 504
        assert "timeout" in json.loads(body)["error"]
        status, body = _get(fn, "/")
        assert status == 200
        answer = json.loads(body)
        assert answer["thread"] == "MainThread"  # inline: no hop to a handler thread
        status, body = _get(fn, "/metrics")
        assert status == 200
        counts = dict(
            line.rsplit(" ", 1) for line in body.decode().splitlines() if "outcome=" in line
        )
        assert [v for k, v in counts.items() if 'outcome="timeout"' in k] == ["1.0"]
        assert _restarts(fn) == 0  # the call was interrupted, not the worker replaced
    finally:
        assert fn.terminate() == 0


def test_health_and_metrics_are_answered_during_a_slow_call(
    tmp_path: Path, pool: ThreadPoolExecutor
) -> None:
    fn = _serve(tmp_path, "handler")
    try:
        started = threading.Event()

        def slow() -> tuple[int, bytes]:
            started.set()
            return _get(fn, "/?s=4")

        slow_call: Future[tuple[int, bytes]] = pool.submit(slow)
        started.wait()
        # Give the call time to start: a probe connection the loop took before the call began
        # would wait for it (the loop's thread is running it); new ones go to the watch thread.
        threading.Event().wait(0.5)
        status, body = _get(fn, "/readyz")
        assert not slow_call.done()
        assert status == 200
        assert json.loads(body)["in_flight"] == 1  # answered while the call is running
        status, body = _get(fn, "/healthz")
        assert (status, json.loads(body)) == (200, {"status": "ok"})
        status, body = _get(fn, "/metrics")
        assert status == 200
        assert b"tickrun_events_in_flight" in body
        assert not slow_call.done()  # all answered while the handler was still running
        # A function request meanwhile waits for the one slot and is then served.
        queued = pool.submit(_get, fn, "/")
        assert slow_call.result()[0] == 200
        assert queued.result()[0] == 200
    finally:
        assert fn.terminate() == 0


def test_sigterm_lets_the_call_in_flight_finish_and_refuses_new_ones(
    tmp_path: Path, pool: ThreadPoolExecutor
) -> None:
    fn = _serve(tmp_path, "handler")
    assert fn.proc is not None
    slow_call = pool.submit(_get, fn, "/?s=2")
    threading.Event().wait(0.5)  # the call is under way (not a timing assertion)
    status, body = _get(fn, "/readyz")
    assert json.loads(body)["in_flight"] == 1
    os.kill(fn.proc.pid, signal.SIGTERM)
    status, body = slow_call.result()
    assert status == 200
    assert json.loads(body)["thread"] == "MainThread"
    assert fn.proc.wait(timeout=30) == 0
    with pytest.raises(OSError):  # refused: nothing listens on the port any more
        _get(fn, "/", timeout_s=5)
    fn.terminate()


def test_a_raising_handler_is_500_and_the_worker_goes_on(tmp_path: Path) -> None:
    fn = _serve(tmp_path, "boom")
    try:
        for _ in range(3):
            status, body = _get(fn, "/")
            assert status == 500
            assert "on purpose" not in body.decode()  # the type is named, never the message
        assert _get(fn, "/healthz")[0] == 200
        assert _restarts(fn) == 0
    finally:
        assert fn.terminate() == 0


def test_a_handler_ignoring_its_timeout_gets_the_worker_replaced(tmp_path: Path) -> None:
    fn = _serve(tmp_path, "stubborn", timeout="200ms")
    try:
        first_pid = json.loads(_get(fn, "/")[1])["pid"]
        with pytest.raises((OSError, http.client.HTTPException)):
            _get(fn, "/?s=1")  # the worker exits under it: the connection is cut
        # The supervisor starts a new worker, which serves.
        for _ in range(100):
            try:
                status, body = _get(fn, "/", timeout_s=5)
            except OSError:
                threading.Event().wait(0.1)
                continue
            if status == 200:
                break
        assert status == 200
        assert json.loads(body)["pid"] != first_pid
        assert _restarts(fn) == 1
    finally:
        assert fn.terminate() == 0
