"""Over 5,000 malformed and hostile requests against a real controller: its API with and without
the token, the ``/fn/`` gateway and a function port. Nothing dies, nothing answers 5xx, no body
shows a traceback or a path, the controller's log never holds the token (nor a line over 1 KB),
and everything serves normally afterwards. With each public front: the Python edge and HAProxy."""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.test_controller_harness import TOKEN, ControllerProc, cleanup
from tests.support import hostile
from tickrun.controller.haproxy.front import haproxy_binary
from tickrun.controller.settings import Settings
from tickrun.functions import settings as registry

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[2] / "functions" / "examples" / "echo_headers"
NAME = "echo-headers"
# Paths where no hostile method can destroy the deployed function (DELETE of a ghost is a 404).
API_PATHS = (
    "/api/functions",
    "/api/functions/ghost",
    "/api/functions/ghost/events?after=1",
    "/api/functions/ghost/logs",
    "/api/builds/none/log",
    "/api/runs",
    "/api/version",
    "/healthz",
)


@pytest.fixture(scope="module", params=["python", "haproxy"])
def deployed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ControllerProc, Any]]:
    front = str(request.param)
    if (
        front == "haproxy"
        and haproxy_binary(Settings.from_env({registry.PROXY.name: "auto"})) is None
    ):
        pytest.fail("haproxy is not installed (apt-get install haproxy; .ci/run installs it)")
    tmp = tmp_path_factory.mktemp(f"hostile-{front}")
    folder = tmp / "echo_headers"
    shutil.copytree(EXAMPLE, folder)
    ctl = ControllerProc(tmp / "state", {**os.environ, registry.PROXY.name: front}).start()
    try:
        ctl.client.deploy(yaml.safe_load((folder / "function.yaml").read_text()), folder)
        yield ctl, ctl.client.wait_ready(NAME, timeout_s=300)
    finally:
        cleanup(ctl)


def _replicas(ctl: ControllerProc) -> list[tuple[Any, Any]]:
    fn = ctl.client.get_function(NAME)
    return [(r["pid"], r["restarts"]) for r in fn["replicas"]["items"]]


def test_hostile_requests_get_4xx_and_the_controller_lives_on(
    deployed: tuple[ControllerProc, Any],
) -> None:
    ctl, fn = deployed
    assert ctl.proc is not None
    host, _, port_text = ctl.url.removeprefix("http://").rpartition(":")
    api_port, fn_port = int(port_text), int(fn["port"])
    replicas = _replicas(ctl)
    auth = f"Bearer {TOKEN}"
    targets = [
        ("api+token", api_port, hostile.generate(paths=API_PATHS, auth=auth, count=2000, seed=1)),
        ("api", api_port, hostile.generate(paths=API_PATHS, count=1000, seed=2)),
        (
            "fn-gateway",
            api_port,
            hostile.generate(
                paths=("/", "/x"), prefix=f"/fn/{NAME}", auth=auth, count=1000, seed=3
            ),
        ),
        ("function-port", fn_port, hostile.generate(paths=("/", "/x"), count=1200, seed=4)),
    ]
    assert sum(len(reqs) for _, _, reqs in targets) >= 5000
    started = time.monotonic()
    report = []
    for i, (label, port, reqs) in enumerate(targets):
        address = host if port == api_port else str(fn["port_host"])
        # Mangled tokens count as wrong ones, and the controller refuses an address after ten
        # a minute (auth.py): each barrage comes from a loopback address of its own, so the
        # checks below, from 127.0.0.1, see the controller as any other client would.
        source = f"127.0.0.{i + 2}" if address.startswith("127.") else None
        outcomes = hostile.send(reqs, address, port, concurrency=32, timeout_s=6.0, source=source)
        unanswered = Counter(o.kind for o in outcomes if o.status is None)
        report.append(f"{label}: {hostile.summary(outcomes)}; unanswered by kind: {unanswered}")
        server_errors = [o for o in outcomes if o.status is not None and o.status >= 500]
        assert not server_errors, (label, Counter((o.kind, o.status) for o in server_errors))
        leaked = [(o.kind, hostile.leaks(o.body)) for o in outcomes if hostile.leaks(o.body)]
        assert not leaked, (label, leaked[:5])
        statuses = Counter(o.status for o in outcomes)
        answered = sum(n for s, n in statuses.items() if s is not None and 400 <= s < 500)
        # The bulk is answered (a 4xx for most; the echo function takes any sane request), not
        # dropped; what stays unanswered is the truncated requests the sender gave up on.
        assert answered > len(outcomes) // 3, report[-1]
        assert statuses[None] < len(outcomes) // 10, report[-1]
        if label == "api":
            assert statuses[401] > len(outcomes) // 2  # no token: refused before any parsing
    print("\n" + "\n".join(report) + f"\n({time.monotonic() - started:.1f} s)")

    assert ctl.proc.poll() is None, "the controller died"
    assert _replicas(ctl) == replicas, "a replica died or restarted"
    # It serves normally afterwards: the API, /fn/ and the function port.
    assert [f["name"] for f in ctl.client.list_functions()] == [NAME]
    res = ctl.client.invoke(NAME, path="/after")
    assert (res.status, res.body) == (201, b"response body")
    log = ctl.log_path.read_text()
    assert TOKEN not in log
    tracebacks = Counter(
        (line[:200], line[-300:]) for line in log.splitlines() if "Traceback" in line
    )
    assert not tracebacks, tracebacks.most_common(5)
    assert max(len(line.encode()) for line in log.splitlines()) <= 1024
