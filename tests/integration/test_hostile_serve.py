"""Over 5,000 malformed and hostile requests against a real ``tickrun serve``: nothing dies,
nothing answers 5xx, no body shows a traceback or a path, and the function serves afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import shutil
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import hostile
from tests.support.processes import ServedFunction

EXAMPLE = Path(__file__).resolve().parents[2] / "functions" / "examples" / "echo_headers"

# Nuclio's echo-headers handler (it copies the request's headers into its response) with short
# read timeouts, so truncated requests end in seconds; two worker processes share the port.
SPEC = """\
metadata:
  name: echo-headers
spec:
  handler: echo_headers:handler
  workers: 2
  triggers:
    http:
      kind: http
      maxWorkers: 16
      attributes:
        readHeaderTimeout: 2s
        readTimeout: 2s
"""


def _children(pid: int) -> set[int]:
    out: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        out.update(int(p) for p in text)
    return out


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - loopback
        return resp.status, resp.read()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ServedFunction]:
    shutil.copy(EXAMPLE / "echo_headers.py", tmp_path / "echo_headers.py")
    (tmp_path / "function.yaml").write_text(SPEC)
    fn = ServedFunction(tmp_path).start()
    yield fn
    fn.terminate()


def test_hostile_requests_get_4xx_and_the_server_lives_on(served: ServedFunction) -> None:
    assert served.proc is not None
    supervisor = served.proc.pid
    workers = _children(supervisor)
    assert len(workers) == 2

    requests = hostile.generate(count=5200)
    assert len(requests) >= 5000
    assert len(hostile.kinds(requests)) >= 15
    outcomes = hostile.send(requests, "127.0.0.1", served.port, concurrency=32, timeout_s=6.0)
    print("\n" + hostile.summary(outcomes))

    assert served.proc.poll() is None, "the supervisor died"
    assert _children(supervisor) == workers, "a worker died and was replaced"
    server_errors = [o for o in outcomes if o.status is not None and o.status >= 500]
    assert not server_errors, Counter((o.kind, o.status) for o in server_errors)
    leaked = [(o.kind, hostile.leaks(o.body)) for o in outcomes if hostile.leaks(o.body)]
    assert not leaked, leaked[:5]
    # The bulk is answered, not dropped: a malformed request gets a 4xx with a JSON error.
    statuses = Counter(o.status for o in outcomes)
    assert sum(n for s, n in statuses.items() if s is not None and 400 <= s < 500) > 2500
    assert statuses[None] < len(outcomes) // 10, hostile.summary(outcomes)

    status, body = _get(served.url + "/after")
    assert (status, body) == (201, b"response body")
    # Every malformed request logged at most one bounded line, and no secret reached the log.
    log = "".join(served.stderr)
    assert "Bearer" not in log and "Traceback" not in log
    assert max(len(line) for line in served.stderr) <= 1024


SLOW_SPEC = SPEC.replace("readHeaderTimeout: 2s", "readHeaderTimeout: 60s")
FD_LIMIT = 160  # each worker may then hold 160 - 64 client connections


@pytest.fixture
def low_fd_served(tmp_path: Path) -> Iterator[ServedFunction]:
    shutil.copy(EXAMPLE / "echo_headers.py", tmp_path / "echo_headers.py")
    (tmp_path / "function.yaml").write_text(SLOW_SPEC)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, hard))  # inherited by the replica
    try:
        fn = ServedFunction(tmp_path)
        fn.start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    yield fn
    fn.terminate()


async def _half_open(port: int, n: int) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    conns = []
    for _ in range(n):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # never finished
        conns.append((reader, writer))
    await asyncio.sleep(0.5)
    return conns


async def test_half_open_connections_past_the_fd_limit_do_not_lock_callers_out(
    low_fd_served: ServedFunction,
) -> None:
    conns = await _half_open(low_fd_served.port, 300)
    loop = asyncio.get_running_loop()
    for path in ("/healthz", "/work"):  # the processor's own path, then the function
        status, body = await loop.run_in_executor(None, _get, low_fd_served.url + path)
        assert status == 200 if path == "/healthz" else (status, body) == (201, b"response body")
    closed = 0
    for reader, writer in conns:
        with contextlib.suppress(TimeoutError):  # still open: the read times out
            closed += await asyncio.wait_for(reader.read(), 0.01) == b""
        writer.close()
    assert closed >= 300 - 2 * (FD_LIMIT - 64)  # the oldest half-open ones made room
    assert low_fd_served.proc is not None and low_fd_served.proc.poll() is None
    assert not any('"exit_code"' in line for line in low_fd_served.stderr), "a worker died"
