"""Driving wrk (Debian's package) from the benchmarks, and reading its report."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Sample:
    rps: float
    p50_ms: float
    p99_ms: float


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    if not m:
        raise ValueError(f"not a wrk latency: {text!r}")
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def _field(pattern: str, out: str) -> str:
    m = re.search(pattern, out, re.M)
    if m is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    return m.group(1)


def wrk(
    url: str,
    duration_s: int,
    connections: int,
    *,
    script: Path | None = None,
    headers: dict[str, str] | None = None,
) -> Sample:
    """One wrk run (1 thread, ``--latency``); refuses runs with any non-2xx answer."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration_s}s", "--latency"]
    if script is not None:
        cmd += ["-s", str(script)]
    for k, v in (headers or {}).items():
        cmd += ["-H", f"{k}: {v}"]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{url}: {errors.group(1)} non-2xx responses under load")
    return Sample(
        rps=float(_field(r"Requests/sec:\s+([\d.]+)", out)),
        p50_ms=_ms(_field(r"^\s+50%\s+(\S+)", out)),
        p99_ms=_ms(_field(r"^\s+99%\s+(\S+)", out)),
    )
