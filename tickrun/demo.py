"""`make demo`: tickrun's main job on the embedded default, end to end, on this machine.

Serves the example functions with the processor (worker processes on one port, no container
runtime, no Kubernetes) and invokes them over HTTP, printing what a user needs to see.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "functions" / "examples"
if not EXAMPLES.exists():  # installed as a wheel: examples ship inside the package
    import tickrun.functions

    EXAMPLES = Path(tickrun.functions.__file__).resolve().parent / "examples"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _call(
    method: str, url: str, body: bytes | None = None, ctype: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=body, method=method)  # noqa: S310 - loopback
    if ctype:
        req.add_header("Content-Type", ctype)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback only
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


LOG_DIR = Path(os.environ.get("TICKRUN_DEMO_DIR", ".tickrun/demo"))


def _serve(path: Path, workers: int) -> tuple[subprocess.Popen[str], str]:
    port = _free_port()
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = (LOG_DIR / f"{path.name}.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tickrun",
            "serve",
            str(path),
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--log-format",
            "json",
        ],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    assert proc.stdout is not None
    started = time.monotonic()
    for line in proc.stdout:
        if '"event": "ready"' in line:
            break
    else:
        raise SystemExit(f"{path.name} did not start (exit code {proc.wait()})")
    print(
        f"  served {path.name:<6} at http://127.0.0.1:{port} with {workers} worker process(es)"
        f" — ready in {time.monotonic() - started:.2f}s"
    )
    return proc, f"http://127.0.0.1:{port}"


def main() -> None:
    print("tickrun demo — embedded default (process workers, no container runtime)\n")
    procs = []
    try:
        hello, hello_url = _serve(EXAMPLES / "hello", workers=2)
        procs.append(hello)
        echo, echo_url = _serve(EXAMPLES / "echo", workers=1)
        procs.append(echo)
        print()
        calls = [
            ("GET", f"{hello_url}/?name=quant", None, None),
            (
                "POST",
                f"{hello_url}/",
                json.dumps({"name": "BTCUSDT desk"}).encode(),
                "application/json",
            ),
            (
                "POST",
                f"{echo_url}/orders?side=buy",
                json.dumps({"qty": 0.5, "px": 97000}).encode(),
                "application/json",
            ),
            ("POST", f"{hello_url}/", b"x" * 2_000_000, "application/octet-stream"),
        ]
        for method, url, body, ctype in calls:
            status, headers, payload = _call(method, url, body, ctype)
            shown = payload.decode(errors="replace")
            print(
                f"$ {method} {url.split('//', 1)[1]}" + (f"  ({len(body):,} bytes)" if body else "")
            )
            print(f"  {status}  request-id {headers.get('X-Request-Id')}")
            print(f"  {shown[:200]}\n")
        time.sleep(1.2)  # workers publish their event counts once a second
        _, _, metrics = _call("GET", f"{hello_url}/metrics")
        lines = [
            ln
            for ln in metrics.decode().splitlines()
            if ln.startswith("tickrun_events_total") and not ln.endswith(" 0.0")
        ]
        print("$ GET /metrics (hello, summed over its workers)")
        for ln in lines:
            print(f"  {ln}")
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=40)
    print(f"\nstopped cleanly (SIGTERM drains in-flight requests); JSON logs in {LOG_DIR}/")


if __name__ == "__main__":
    main()
