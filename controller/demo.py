"""The controller part of ``make demo``: start a controller on the embedded default (process
platform), deploy the example functions, invoke them through the gateway, clean up.

``python -m tickrun.controller.demo`` runs it alone; ``tickrun.demo`` can call :func:`main`.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from tickrun.functions.source import resolve_function

from .client import ControllerClient

EXAMPLES = Path(__file__).resolve().parent.parent / "functions" / "examples"
if not EXAMPLES.exists():  # installed as a wheel
    import tickrun.functions

    EXAMPLES = Path(tickrun.functions.__path__[0]) / "examples"


def _start_controller(state: Path, token: str) -> tuple[subprocess.Popen[bytes], str]:
    env = dict(os.environ, TICKRUN_TOKEN=token)
    env.pop("TICKRUN_CONTROLLER_URL", None)
    log = (state.parent / "controller.log").open("ab")
    proc = subprocess.Popen(
        [
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
        ],
        stdout=subprocess.PIPE,
        stderr=log,
        env=env,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith(b"{") and b'"ready"' in line:
            return proc, str(json.loads(line)["url"])
    raise SystemExit(f"the controller did not start; see {state.parent / 'controller.log'}")


def main(examples: Sequence[str] = ("hello", "echo")) -> int:
    work = Path(tempfile.mkdtemp(prefix="tickrun-demo-controller-"))
    token = secrets.token_urlsafe(16)
    print("tickrun demo: controller on the embedded default (process platform)\n")
    t0 = time.monotonic()
    proc, url = _start_controller(work / "state", token)
    client = ControllerClient(url, token)
    print(f"  controller at {url} (started in {time.monotonic() - t0:.2f} s)")
    try:
        for name in examples:
            code_dir, spec = resolve_function(EXAMPLES / name)
            t1 = time.monotonic()
            result = client.deploy(spec.to_yaml_dict(), code_dir, platform="process")
            fn = client.wait_ready(spec.name, version=result["function"]["version"])
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
            spec = client.export("hello")
            spec.setdefault("spec", {})["replicas"] = 2
            for key in ("minReplicas", "maxReplicas"):
                spec["spec"].pop(key, None)
            client.deploy(spec, None)
            t2 = time.monotonic()
            while client.get_function("hello")["replicas"]["ready"] < 2:
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
    finally:
        for fn in client.list_functions():
            client.delete_function(fn["name"])
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    print("\n  deleted the functions (no replica left running) and stopped the controller")
    return 0


if __name__ == "__main__":
    sys.exit(main())
