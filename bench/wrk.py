"""Driving wrk (Debian's package) from the benchmarks, and reading its report."""

from __future__ import annotations

import re
import shutil
import statistics
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


def median(samples: list[Sample]) -> Sample:
    """Per-figure medians over rounds (a single slow round does not decide the result)."""
    return Sample(
        statistics.median(s.rps for s in samples),
        statistics.median(s.p50_ms for s in samples),
        statistics.median(s.p99_ms for s in samples),
    )


def print_table(rows: list[tuple[str, Sample]], width: int = 22) -> None:
    """req/s, p50 and p99 per row, then each row's ratio to the last one (the baseline)."""
    print(f"{'':<{width}}{'req/s':>12}{'p50 ms':>10}{'p99 ms':>10}")
    for name, s in rows:
        print(f"{name:<{width}}{s.rps:>12,.0f}{s.p50_ms:>10.2f}{s.p99_ms:>10.2f}")
    base_name, b = rows[-1]
    for name, s in rows[:-1]:
        label = f"ratio vs {base_name}"
        print(
            f"{label:<{width}}{s.rps / b.rps:>11.2f}x{s.p50_ms / b.p50_ms:>9.2f}x"
            f"{s.p99_ms / b.p99_ms:>9.2f}x   ({name})"
        )
