"""The host state a real Kubernetes node changes (tests/peers/k8snode.py), captured before it
starts and put back after it stops: sysctls kubelet and the CNI plugins set, paths kubelet
creates outside its root dir, cgroups, mounts, containerd shims. kubelet makes no iptables chains
here (makeIPTablesUtilChains: false): capture() records KUBE-* chains so a test sees if one stays.

Everything here is best effort on teardown (a failed step is logged, the next still runs), and
touches only what the node made: chains and paths that were absent before, mounts under the
node's own dir, shims of the node's own containerd socket.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

# What kubelet sets (protectKernelDefaults is off) and what the CNI bridge plugin may turn on.
SYSCTLS = (
    "net.ipv4.ip_forward",
    "net.ipv4.conf.all.route_localnet",
    "net.bridge.bridge-nf-call-iptables",
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
)
IPTABLES = ("iptables", "ip6tables")
TABLES = ("filter", "nat", "mangle", "raw")
# Paths kubelet, containerd and go-cni write whatever their root dirs are.
HOST_PATHS = (
    "/var/lib/kubelet",
    "/var/lib/cni",
    "/var/log/containers",
    "/var/log/pods",
    "/run/containerd",
    "/var/run/kubernetes",
    "/etc/kubernetes",
    "/opt/containerd",
    "/var/lib/containerd",
)
CGROUP_FS = Path("/sys/fs/cgroup")


# Only what a node makes is compared: other work on the host (podman builds, a CI run) adds and
# removes cgroups, links and chains of its own meanwhile.
NODE_PREFIXES = ("trnode", "tickrun-node-", "kubepods", "KUBE-")


@dataclass
class HostState:
    sysctls: dict[str, str] = field(default_factory=dict)
    # "iptables/nat" → kubelet's chains (KUBE-*) and rules naming a node bridge
    chains: dict[str, set[str]] = field(default_factory=dict)
    paths: set[str] = field(default_factory=set)
    # node bridges (trnode<n>) and the veths plugged into them
    links: set[str] = field(default_factory=set)
    # node cgroup roots (tickrun-node-*) and kubepods, as "<hierarchy>/<dir>"
    cgroups: set[str] = field(default_factory=set)


def _sysctl_path(key: str) -> Path:
    return Path("/proc/sys") / key.replace(".", "/")


def _chains_and_rules(cmd: str, table: str) -> set[str]:
    """kubelet's chains (KUBE-*) and any rule naming a node bridge, as ``iptables -S`` lines."""
    try:
        out = subprocess.run(
            [cmd, "-t", table, "-S"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return set()
    return {
        line
        for line in out.stdout.splitlines()
        if (line.startswith("-N ") and _ours(line.split()[1])) or " trnode" in line
    }


def _hierarchies() -> list[Path]:
    if not CGROUP_FS.is_dir():
        return []
    return sorted(p for p in CGROUP_FS.iterdir() if (p / "cgroup.procs").exists())


def _ours(name: str) -> bool:
    return name.startswith(NODE_PREFIXES)


def _node_links() -> set[str]:
    out = set()
    for link in Path("/sys/class/net").iterdir():
        with contextlib.suppress(OSError):
            master = (link / "master").resolve().name if (link / "master").exists() else ""
            if _ours(link.name) or _ours(master):
                out.add(link.name)
    return out


def capture() -> HostState:
    """What a node may change, now."""
    state = HostState()
    for key in SYSCTLS:
        with contextlib.suppress(OSError):
            state.sysctls[key] = _sysctl_path(key).read_text().strip()
    for cmd in IPTABLES:
        if shutil.which(cmd):
            for table in TABLES:
                state.chains[f"{cmd}/{table}"] = _chains_and_rules(cmd, table)
    state.paths = {p for p in HOST_PATHS if os.path.lexists(p)}
    state.links = _node_links()
    for h in _hierarchies():
        state.cgroups |= {f"{h.name}/{d.name}" for d in h.iterdir() if d.is_dir() and _ours(d.name)}
    return state


def other_process_named(comm: str) -> bool:
    """Whether a process called ``comm`` runs (someone else's node: leave shared state alone)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == comm:
                    return True
    return False


def restore(before: HostState, *, own_dir: Path, own_network: str) -> None:
    """Back to ``before`` for what a node made: ``own_dir`` is its work dir, ``own_network``
    its CNI network's name."""
    for key, value in before.sysctls.items():
        with contextlib.suppress(OSError):
            if _sysctl_path(key).read_text().strip() != value:
                _sysctl_path(key).write_text(value)
                logger.info("sysctl %s restored to %s", key, value)
    _remove_new_paths(before, own_dir, own_network)


def _remove_new_paths(before: HostState, own_dir: Path, own_network: str) -> None:
    # kubelet links each container's log into /var/log/containers, whatever podLogsDir says
    links = Path("/var/log/containers")
    if links.is_dir():
        for link in links.iterdir():
            with contextlib.suppress(OSError):
                if link.is_symlink() and os.readlink(link).startswith(f"{own_dir}/"):
                    link.unlink()
    # go-cni caches each sandbox's result as <network>-<id>-<ifname>; ours carry our network name
    results = Path("/var/lib/cni/results")
    if results.is_dir():
        for f in results.glob(f"{own_network}-*"):
            f.unlink(missing_ok=True)
    kubelet_gone = not other_process_named("kubelet")
    containerd_gone = not other_process_named("containerd")
    for path in HOST_PATHS:
        if path in before.paths or not os.path.lexists(path):
            continue
        if path == "/run/containerd" and not containerd_gone:
            continue
        if path != "/run/containerd" and not kubelet_gone:
            continue
        shutil.rmtree(path, ignore_errors=True)
        logger.info("removed %s (made by the node)", path)


def kill_shims(socket: Path) -> None:
    """Shims outlive their containerd; those of this node's socket (a unique temp path) go."""
    needle = f"-address\0{socket}\0".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes()
            if b"containerd-shim" in cmdline.split(b"\0", 1)[0] and needle in cmdline + b"\0":
                os.kill(int(entry.name), signal.SIGKILL)


def unmount_under(root: Path) -> None:
    """Lazily unmount everything below ``root`` (overlay rootfs, netns, shm, volumes), deepest
    first; a network namespace whose mount goes takes its veth with it."""
    prefix = str(root).rstrip("/") + "/"
    mounts = []
    with open("/proc/self/mounts", encoding="utf-8") as fh:
        for line in fh:
            target = line.split()[1].encode().decode("unicode_escape")
            if target.startswith(prefix):
                mounts.append(target)
    for target in sorted(mounts, reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True, check=False)


def make_cgroup(name: str) -> str:
    """``/name`` in every cgroup v1 hierarchy, the root kubelet puts its pods under, so they
    never mix with another node's. cpuset children start empty: copy the parent's CPUs/mems."""
    for h in _hierarchies():
        d = h / name
        d.mkdir(exist_ok=True)
        if (h / "cpuset.cpus").exists():
            for f in ("cpuset.cpus", "cpuset.mems"):
                (d / f).write_text((h / f).read_text())
    return f"/{name}"


def remove_cgroup(root: str, timeout_s: float = 10.0) -> None:
    """rmdir ``root`` and everything below it, leaves first, in every hierarchy; waits for
    processes that are still being killed."""
    deadline = time.monotonic() + timeout_s
    for h in _hierarchies():
        top = h / root.lstrip("/")
        if not top.is_dir():
            continue
        while True:
            dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
            for d in [*dirs, top]:
                with contextlib.suppress(OSError):
                    d.rmdir()
            if not top.exists() or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        if top.exists():
            logger.warning("cgroup %s is still busy; left in place", top)
