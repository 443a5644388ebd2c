"""The controller part of ``make demo``: start a controller on the embedded default (process
platform), deploy the example functions, invoke them through the gateway, clean up.

``python -m tickrun.controller.demo`` runs it alone; ``tickrun.demo`` can call :func:`main`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import queue
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from tickrun.functions.errors import PlatformError, TickrunError
from tickrun.functions.settings import CONTROLLER_URL, TOKEN
from tickrun.functions.source import resolve_function

from .client import ControllerClient

logger = logging.getLogger(__name__)

EXAMPLES = Path(__file__).resolve().parent.parent / "functions" / "examples"
if not EXAMPLES.exists():  # installed as a wheel
    import tickrun.functions

    EXAMPLES = Path(tickrun.functions.__path__[0]) / "examples"

# Every wait of the demo is bounded: a stuck step fails the demo with a message, never hangs it.
START_TIMEOUT_S = 60.0
READY_TIMEOUT_S = 180.0
SCALE_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0


def _controller_command(state: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "tickrun",
        "controller",
        "start",
        "--port",
        "0",
        "--state-dir",
        str(state),
        "--platform",
        "process",
    ]


def _start_controller(
    state: Path,
    token: str,
    *,
    timeout_s: float = START_TIMEOUT_S,
    command: Sequence[str] | None = None,
) -> tuple[subprocess.Popen[bytes], str]:
    """The controller process and its URL; the process is stopped again if it never got ready."""
    env = {**os.environ, TOKEN.name: token}
    env.pop(CONTROLLER_URL.name, None)
    log_path = state.parent / "controller.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            list(command or _controller_command(state)),
            stdout=subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    try:
        return proc, _ready_url(proc, timeout_s, log_path)
    except BaseException:
        _stop_controller(proc)
        raise


def _ready_url(proc: subprocess.Popen[bytes], timeout_s: float, log_path: Path) -> str:
    assert proc.stdout is not None
    stdout = proc.stdout
    lines: queue.Queue[bytes | None] = queue.Queue()

    # A thread reads stdout so the wait can time out; it keeps draining the pipe afterwards,
    # so the controller never blocks on a full pipe.
    def pump() -> None:
        with contextlib.suppress(OSError, ValueError):
            for line in stdout:
                lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, name="demo-controller-stdout", daemon=True).start()
    deadline = time.monotonic() + timeout_s
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise PlatformError(
                f"the controller did not start within {timeout_s:.0f} s; see {log_path}"
            )
        try:
            line = lines.get(timeout=remaining)
        except queue.Empty:
            continue
        if line is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
            raise PlatformError(
                f"the controller exited (code {proc.returncode}) before it was ready; "
                f"see {log_path}"
            )
        if line.startswith(b"{") and b'"ready"' in line:
            return str(json.loads(line)["url"])


def _stop_controller(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            logger.warning("the demo controller ignored SIGTERM; killing it")
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT_S)
    if proc.stdout is not None:
        proc.stdout.close()


def _delete_functions(client: ControllerClient) -> None:
    for fn in client.list_functions():
        client.delete_function(fn["name"])


def _stop_replicas(state: Path) -> None:
    """Replicas outlive a stopped controller by design; when the controller could not delete
    the functions, the demo stops the replicas it recorded itself (process groups checked by
    pid and start time, as the controller does)."""
    from .platforms.process import ProcessPlatform
    from .service import replica_ref
    from .settings import Settings
    from .store import Store

    settings = Settings(state_dir=state)
    if not (state / "tickrun.db").exists():
        return  # the controller never got as far as recording anything
    store = Store(settings.database_url)
    try:
        store.open()
        refs = [replica_ref(r) for r in store.list_replicas()]
    except TickrunError as exc:
        print(f"tickrun demo: cannot read the replicas to stop: {exc.message}", file=sys.stderr)
        return
    finally:
        store.close()
    platform = ProcessPlatform()

    async def stop_all() -> None:
        await asyncio.gather(*(platform.stop(ref, STOP_TIMEOUT_S) for ref in refs))

    asyncio.run(stop_all())


def _run(client: ControllerClient, url: str, examples: Sequence[str]) -> None:
    for name in examples:
        code_dir, spec = resolve_function(EXAMPLES / name)
        t1 = time.monotonic()
        result = client.deploy(spec, code_dir, platform="process")
        fn = client.wait_ready(
            spec.name, version=result["function"]["version"], timeout_s=READY_TIMEOUT_S
        )
        print(
            f"  deployed {spec.name:<6} → {url}{fn['url']}  "
            f"(ready in {time.monotonic() - t1:.2f} s, {fn['replicas']['ready']} "
            f"replica(s), function port {fn['port']})"
        )
    print()
    calls = [
        ("hello", "GET", "/?name=quant", None),
        ("hello", "POST", "/", json.dumps({"name": "BTCUSDT desk"}).encode()),
        ("echo", "POST", "/orders?side=buy", json.dumps({"qty": 0.5, "px": 97000}).encode()),
    ]
    for name, method, path, body in calls:
        if name not in examples:
            continue
        res = client.invoke(
            name,
            method=method,
            path=path,
            body=body,
            headers={"Content-Type": "application/json", "X-Request-Id": f"demo-{name}"},
        )
        print(
            f"$ tickrun invoke {name} -m {method} --path '{path}'"
            + (f" -b '{body.decode()}'" if body else "")
        )
        print(f"  {res.status}  request-id {res.headers.get('x-request-id')}")
        print(f"  {res.body.decode(errors='replace')[:200]}\n")
    if "hello" in examples:
        spec_data = client.export("hello")
        spec_data.setdefault("spec", {})["replicas"] = 2
        for key in ("minReplicas", "maxReplicas"):
            spec_data["spec"].pop(key, None)
        client.deploy(spec_data, None)
        t2 = time.monotonic()
        deadline = t2 + SCALE_TIMEOUT_S
        while (ready := client.get_function("hello")["replicas"]["ready"]) < 2:
            if time.monotonic() > deadline:
                raise PlatformError(
                    f"hello did not scale to 2 ready replicas within {SCALE_TIMEOUT_S:.0f} s "
                    f"({ready} ready); see `tickrun logs hello`"
                )
            time.sleep(0.05)
        print(
            f"  scaled hello to 2 replicas in {time.monotonic() - t2:.2f} s "
            "(spec update, no rebuild)"
        )
        ok = sum(client.invoke("hello").status == 200 for _ in range(4))
        print(f"  {ok}/4 calls through the gateway answered (balanced over both)\n")
    for fn in client.list_functions():
        r = fn["replicas"]
        print(
            f"  {fn['name']:<6} {fn['state']:<6} {fn['platform']:<8} "
            f"{r['ready']}/{r['desired']}  {fn['url']}"
        )


def main(examples: Sequence[str] = ("hello", "echo")) -> int:
    """0 when every step worked; 1 (with the reason on stderr) otherwise. The controller is
    stopped and no replica is left running either way."""
    work = Path(tempfile.mkdtemp(prefix="tickrun-demo-controller-"))
    state = work / "state"
    token = secrets.token_urlsafe(16)
    print("tickrun demo: controller on the embedded default (process platform)\n")
    proc: subprocess.Popen[bytes] | None = None
    client: ControllerClient | None = None
    failure: str | None = None
    deleted = False
    try:
        t0 = time.monotonic()
        proc, url = _start_controller(state, token)
        client = ControllerClient(url, token, timeout_s=REQUEST_TIMEOUT_S)
        print(f"  controller at {url} (started in {time.monotonic() - t0:.2f} s)")
        _run(client, url, examples)
    except TickrunError as exc:
        failure = exc.message
    finally:
        if client is not None:
            try:
                _delete_functions(client)
                deleted = True
            except TickrunError as exc:
                failure = failure or f"cleaning up: {exc.message}"
        if proc is not None:
            _stop_controller(proc)
        if not deleted:
            _stop_replicas(state)
        if failure is None:
            shutil.rmtree(work, ignore_errors=True)
        else:  # the folder stays: the controller's log explains most failures
            print(f"\ntickrun demo: error: {failure}", file=sys.stderr)
            print(f"tickrun demo: controller log: {work / 'controller.log'}", file=sys.stderr)
    if failure is not None:
        return 1
    print("\n  deleted the functions (no replica left running) and stopped the controller")
    return 0


if __name__ == "__main__":
    sys.exit(main())
