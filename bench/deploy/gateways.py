"""The gateway rows of ``bench.deploy``: ``/fn/`` and the function port beside the replica
directly, measured in the same run with wrk, with the CPU each process spent per request, so a
ratio under its goal says where the time went. Every round measures each target beside its own
measurement of the replica directly, back to back, the first of the pair alternating; a row is
judged on the median of its rounds' ratios, as ``bench.http`` and ``bench.kafka`` judge theirs.

On a small machine the gateway, the replica and wrk share the cores: a request through a gateway
costs its CPU on top of the replica's, so the ratio is bounded by about
``(replica + wrk) / (replica + wrk + gateway)`` CPU per request. The CPU rows make that bound
visible. When HAProxy (Debian's package) is on PATH, the same replica behind HAProxy (L7 with a
token ACL and least-connections balancing; L4 TCP) is measured too, as a reference for what a C
data path would give on this machine; it is not tickrun's data path.
"""

from __future__ import annotations

import contextlib
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench.rounds import in_turn
from bench.wrk import wrk

Row = Callable[[str, str, str, str, str], None]
Procs = list[psutil.Process]
Target = tuple[str, str, str, Procs | None, Procs, dict[str, str] | None, str]
GOAL_FN = 0.8
GOAL_PORT = 0.9


@dataclass
class Measured:
    rps: float = 0.0
    # CPU microseconds a request, of the proxy in the middle (None: no proxy), the replica, wrk.
    proxy_us: float | None = None
    replica_us: float = 0.0
    wrk_us: float = 0.0
    # Of the proxy's CPU, the part its second process spent (the controller behind HAProxy).
    side_us: float | None = None


def _cpu_s(procs: list[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            t = proc.cpu_times()
            total += t.user + t.system
    return total


def _tree(pid: int) -> list[psutil.Process]:
    proc = psutil.Process(pid)
    return [proc, *proc.children(recursive=True)]


def listener_pid(port: int) -> int | None:
    """The process listening on 127.0.0.1:``port`` (the replica, also inside a host-network
    container)."""
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
            return int(conn.pid)
    return None


def _children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def measure(
    url: str,
    duration_s: int,
    connections: int,
    *,
    proxy: list[psutil.Process] | None,
    replica: list[psutil.Process],
    headers: dict[str, str] | None = None,
) -> Measured:
    side = (proxy or [])[1:]
    p0, r0, w0, s0 = _cpu_s(proxy or []), _cpu_s(replica), _children_cpu_s(), _cpu_s(side)
    sample = wrk(url, duration_s, connections, headers=headers)
    p1, r1, w1, s1 = _cpu_s(proxy or []), _cpu_s(replica), _children_cpu_s(), _cpu_s(side)
    n = max(sample.rps * duration_s, 1.0)
    return Measured(
        rps=sample.rps,
        proxy_us=(p1 - p0) / n * 1e6 if proxy is not None else None,
        replica_us=(r1 - r0) / n * 1e6,
        wrk_us=(w1 - w0) / n * 1e6,
        side_us=(s1 - s0) / n * 1e6 if side else None,
    )


HAPROXY_CFG = """\
global
    maxconn 4096
    nbthread 1
defaults
    timeout connect 2s
    timeout client 30s
    timeout server 30s
frontend l7
    mode http
    bind 127.0.0.1:{l7}
    option http-keep-alive
    http-request deny deny_status 401 unless {{ req.hdr(authorization) -m str "Bearer {token}" }}
    http-request del-header authorization
    default_backend replicas_http
frontend l4
    mode tcp
    bind 127.0.0.1:{l4}
    default_backend replicas_tcp
backend replicas_http
    mode http
    balance leastconn
    http-reuse always
    server r1 127.0.0.1:{replica}
backend replicas_tcp
    mode tcp
    balance leastconn
    server r1 127.0.0.1:{replica}
"""


@contextlib.contextmanager
def haproxy(replica_port: int, token: str, ports: tuple[int, int]) -> Iterator[int | None]:
    """HAProxy in front of the replica (its pid), or None when HAProxy is not installed."""
    exe = shutil.which("haproxy") or (
        "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None
    )
    if exe is None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="tickrun-bench-haproxy-") as tmp:
        cfg = Path(tmp) / "haproxy.cfg"
        l7, l4 = ports
        cfg.write_text(HAPROXY_CFG.format(l7=l7, l4=l4, replica=replica_port, token=token))
        proc = subprocess.Popen(
            [exe, "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            time.sleep(0.3)
            yield proc.pid if proc.poll() is None else None
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def _median(samples: list[Measured]) -> Measured:
    """The round with the median req/s (its CPU figures with it)."""
    return sorted(samples, key=lambda m: m.rps)[(len(samples) - 1) // 2]


def _rounds(ratios: list[float]) -> str:
    return " ".join(f"{r:.2f}" for r in ratios)


def verdict(ratio: float, goal: float) -> str:
    return f"goal >= {goal}x {'met' if ratio >= goal else 'NOT met'}"


def cpu_note(m: Measured) -> str:
    proxy = f"proxy {m.proxy_us:.0f}, " if m.proxy_us is not None else ""
    return f"CPU us/req: {proxy}replica {m.replica_us:.0f}, wrk {m.wrk_us:.0f}"


@dataclass
class Front:
    """The same function on a second controller that runs with HAProxy in front
    (``TICKRUN_PROXY=haproxy``): its /fn/ URL, its own replica, the HAProxy and controller
    processes (the proxy CPU is both: cold requests and the runtime API are the controller's)."""

    gateway: str
    direct: str
    replica_port: int
    haproxy_pid: int
    controller_pid: int


def haproxy_child(controller_pid: int) -> int | None:
    for proc in psutil.Process(controller_pid).children():
        with contextlib.suppress(psutil.Error):
            if proc.name() == "haproxy":
                return int(proc.pid)
    return None


def gateway_rows(
    platform: str,
    *,
    direct: str,
    gateway: str,
    port_url: str,
    controller_pid: int,
    replica_port: int,
    token: str,
    free_port: Callable[[], int],
    duration_s: int,
    connections: int,
    rounds: int,
    row: Row,
    front: Front | None = None,
) -> None:
    """Print the function port and /fn/ rows (and the HAProxy references) for one platform;
    with ``front``, also /fn/ through the controller's own HAProxy (the data path with
    TICKRUN_PROXY=haproxy) beside its replica directly."""
    auth = {"Authorization": f"Bearer {token}"}
    pid = listener_pid(replica_port)
    replica = _tree(pid) if pid is not None else []
    controller = [psutil.Process(controller_pid)]  # not its children: they are the replicas
    hp_ports = (free_port(), free_port())
    with haproxy(replica_port, token, hp_ports) as hp_pid:
        hp = [psutil.Process(hp_pid)] if hp_pid is not None else None
        results: dict[str, list[Measured]] = {k: [] for k in ("d", "g", "p", "h7", "h4", "fd", "f")}
        paired: dict[str, list[float]] = {k: [] for k in ("g", "p", "h7", "h4", "f")}
        front_replica: list[psutil.Process] = []
        front_proxy: list[psutil.Process] = []
        if front is not None:
            fpid = listener_pid(front.replica_port)
            front_replica = _tree(fpid) if fpid is not None else []
            front_proxy = [psutil.Process(front.haproxy_pid), psutil.Process(front.controller_pid)]

        # (key, its direct key, URL, proxy processes, replica processes, headers, direct URL)
        targets: list[Target] = [
            ("g", "d", gateway, controller, replica, auth, direct),
            ("p", "d", port_url, controller, replica, None, direct),
        ]
        if hp is not None:
            targets.append(
                ("h7", "d", f"http://127.0.0.1:{hp_ports[0]}/", hp, replica, auth, direct)
            )
            targets.append(
                ("h4", "d", f"http://127.0.0.1:{hp_ports[1]}/", hp, replica, None, direct)
            )
        if front is not None:
            targets.append(
                ("f", "fd", front.gateway, front_proxy, front_replica, auth, front.direct)
            )

        # Each target beside its own measurement of the replica directly, back to back, the
        # first of the pair alternating (bench.rounds): a single row on this machine moves by
        # more between minutes than any gateway change, so the ratio is judged on the pairs.
        for r in range(rounds):
            for key, base, url, proxy, procs, headers, direct_url in targets:
                sides = {
                    key: (url, proxy, headers),
                    base: (direct_url, None, None),
                }
                for which in in_turn(r, base, key):
                    side_url, side_proxy, side_headers = sides[which]
                    results[which].append(
                        measure(
                            side_url,
                            duration_s,
                            connections,
                            proxy=side_proxy,
                            replica=procs,
                            headers=side_headers,
                        )
                    )
                # Both sides of this pair measured: the ratio is of the pair, whichever went first.
                paired[key].append(results[key][-1].rps / results[base][-1].rps)
    mid = {k: _median(v) for k, v in results.items() if v}
    d = mid["d"]
    print(
        f"  [{platform}] replica directly: {d.rps:.0f} req/s (median of {len(results['d'])}); "
        f"{cpu_note(d)}"
    )
    for key, label, goal, what in (
        ("p", "function port (L4)", GOAL_PORT, "splice, per-connection balancing"),
        ("g", "/fn/ gateway (L7)", GOAL_FN, "token check, per-request balancing"),
        ("h4", "ref: HAProxy L4 (not used)", GOAL_PORT, "tcp mode, leastconn"),
        ("h7", "ref: HAProxy L7 (not used)", GOAL_FN, "token ACL, leastconn, http-reuse"),
    ):
        if key not in mid:
            continue
        m = mid[key]
        ratio = statistics.median(paired[key])
        row(
            f"{label} req/s ({platform})",
            f"{m.rps:.0f}",
            f"{d.rps:.0f}",
            f"{ratio:.2f}x",
            f"{verdict(ratio, goal)} ({what}; baseline: the replica directly; "
            f"rounds {_rounds(paired[key])})",
        )
        print(f"  {'':<36} {cpu_note(m)}")
    if "f" in mid and "fd" in mid:
        m, fd = mid["f"], mid["fd"]
        ratio = statistics.median(paired["f"])
        row(
            f"/fn/ via the controller's HAProxy ({platform})",
            f"{m.rps:.0f}",
            f"{fd.rps:.0f}",
            f"{ratio:.2f}x",
            f"{verdict(ratio, GOAL_FN)} (TICKRUN_PROXY=haproxy: token, per-request balancing; "
            f"baseline: that controller's replica directly; rounds {_rounds(paired['f'])})",
        )
        side = m.side_us or 0.0
        print(
            f"  {'':<36} {cpu_note(m)} (proxy: HAProxy {(m.proxy_us or 0.0) - side:.0f} "
            f"+ controller {side:.0f})"
        )
