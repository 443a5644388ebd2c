"""One real Kubernetes node for tests: Debian's containerd + runc + CNI bridge plugin and a kubelet
(built by ``deploy/peers/ensure.sh k8s-node`` from the control plane's source tree), joined to a
:class:`~tests.peers.k8s.KubeControlPlane` started with ``real_nodes=True``::

    plane = KubeControlPlane(nodes=0, real_nodes=True).start()
    node = KubeNode(plane).start()         # returns once the node is Ready
    node.load_image("localhost/tickrun/fn:abc", podman_env())
    ...                                    # pods really run; the host reaches them by pod IP
    node.stop()                            # the host as it was (hoststate.capture())

Containers really run (readiness probes, pod logs, HTTP to the pod IP). Rules this follows on
these machines: traffic stays here (the pods get no route past their own /24, no nameserver, and
a DROP rule stops anything forwarded off the bridge), the host is restored on stop (sysctls,
bridge and rule, mounts, cgroups, paths kubelet creates outside its root dir), and only
processes this node started are signalled (containerd's shims: by this node's socket path).
Must run as root.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from . import hoststate
from ._util import (
    ENSURE_SH,
    PeerProcess,
    PeerUnavailable,
    free_port,
    peers_cache,
    spawn,
    tail,
    versions,
)
from ._util import terminate as terminate_group
from .ociimage import one_file_image

if TYPE_CHECKING:
    from .k8s import KubeControlPlane

logger = logging.getLogger(__name__)

PAUSE_IMAGE = "localhost/tickrun/pause:1"
# Pod subnets are 10.246.<n>.0/24, one per live node; the first free <n> is taken.
_SUBNET_BASE = "10.246.{}.0/24"
_HOST_TOOLS = ("containerd", "containerd-shim-runc-v2", "ctr", "runc", "iptables", "ip")
_CNI_PLUGINS = Path("/usr/lib/cni")
_APT = "containerd runc containernetworking-plugins iptables"


def node_dir() -> Path:
    """What ensure.sh built: bin/kubelet and bin/pause."""
    return peers_cache() / f"k8s-node-{versions()['KUBERNETES_VERSION']}"


def _run(*argv: str, timeout: float = 60.0, stdin: bytes | None = None) -> str:
    try:
        proc = subprocess.run(list(argv), input=stdin, capture_output=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PeerUnavailable(f"{argv[0]} failed: {exc}") from exc
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()[-500:]
        raise PeerUnavailable(f"`{' '.join(argv[:4])} ...` exited {proc.returncode}: {err}")
    return proc.stdout.decode(errors="replace")


class KubeNode(PeerProcess):
    """containerd + kubelet as node ``name`` of ``plane``, pods on a bridge of their own.

    The constructor does no I/O. ``start()`` claims a free 10.246.<n>.0/24 and bridge
    ``trnode<n>``, starts containerd and kubelet in a temp dir and returns once the node is
    Ready; ``.ip`` is the node's address on the bridge, ``.subnet`` the pods'. ``registries``:
    ``host:port`` of plain-http registries (on loopback) containerd may pull from.
    """

    peer_name = "kubelet"
    stop_grace_s = 15.0

    def __init__(
        self,
        plane: KubeControlPlane,
        *,
        name: str = "tickrun-node",
        labels: Mapping[str, str] | None = None,
        registries: Sequence[str] = (),
        directory: Path | None = None,
        startup_timeout: float = 120.0,
    ) -> None:
        self.plane = plane
        self.name = name
        self.labels = dict(labels or {})
        self.registries = list(registries)
        self.directory = directory
        self.startup_timeout = startup_timeout
        self.workdir: Path | None = None
        self.startup_seconds: float | None = None
        self.subnet: ipaddress.IPv4Network | None = None
        self.bridge = ""
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._before: hoststate.HostState | None = None
        self._cgroup_root = ""

    @property
    def ip(self) -> str:
        if self.subnet is None:
            raise RuntimeError("KubeNode is not started")
        return str(self.subnet.network_address + 1)

    @property
    def containerd_socket(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "containerd.sock"

    def ctr(self, *args: str, stdin: bytes | None = None, timeout: float = 120.0) -> str:
        """``ctr`` against this node's containerd, in the namespace the kubelet uses."""
        sock = str(self.containerd_socket)
        return _run("ctr", "-a", sock, "-n", "k8s.io", *args, stdin=stdin, timeout=timeout)

    def load_image(self, image: str, podman_env: Mapping[str, str]) -> float:
        """Copy ``image`` from tickrun's podman store (``podman_env``) into this node's
        containerd, as a registry pull would; returns the seconds it took."""
        t0 = time.monotonic()
        # docker-archive: uncompressed layers, so neither side spends seconds on gzip
        with tempfile.TemporaryFile() as archive:
            saved = subprocess.run(
                ["podman", "save", "--format", "docker-archive", image],
                stdout=archive,
                stderr=subprocess.PIPE,
                env=dict(podman_env),
                timeout=300,
                check=False,
            )
            if saved.returncode != 0:
                err = saved.stderr.decode(errors="replace").strip()[-500:]
                raise PeerUnavailable(f"podman save {image} failed: {err}")
            archive.seek(0)
            sock = str(self.containerd_socket)
            loaded = subprocess.run(
                ["ctr", "-a", sock, "-n", "k8s.io", "images", "import", "-"],
                stdin=archive,
                capture_output=True,
                timeout=300,
                check=False,
            )
        if loaded.returncode != 0:
            err = loaded.stderr.decode(errors="replace").strip()[-500:]
            raise PeerUnavailable(f"ctr images import {image} failed: {err}")
        return time.monotonic() - t0

    def running_tasks(self) -> list[str]:
        """Ids of the containers (sandboxes included) with a running task in containerd."""
        rows = [line.split() for line in self.ctr("tasks", "ls").splitlines()[1:]]
        return sorted(r[0] for r in rows if len(r) >= 3 and r[2] == "RUNNING")

    def stop(self) -> None:
        atexit.unregister(self.stop)
        w = self.workdir
        if w is not None:
            terminate_group(self._procs.pop("kubelet", None), grace=self.stop_grace_s)
            self._kill_pods()
            terminate_group(self._procs.pop("containerd", None), grace=self.stop_grace_s)
            hoststate.kill_shims(self.containerd_socket)
            hoststate.unmount_under(w)
            if self._cgroup_root:
                hoststate.remove_cgroup(self._cgroup_root)
            if self._before is not None:
                hoststate.restore(self._before, own_dir=w, own_network=self._net_name())
        if self.bridge:
            with contextlib.suppress(PeerUnavailable):
                _run("iptables", "-t", "mangle", "-D", *self._drop_rule())
            with contextlib.suppress(PeerUnavailable):
                _run("ip", "link", "del", self.bridge)
        self._procs.clear()
        self.bridge, self.subnet = "", None
        super().stop()

    def _describe(self) -> str:
        return f"node {self.name} Ready at {self.ip} (pods {self.subnet}, {self.workdir})"

    # -- internals ---------------------------------------------------------------------------

    def _net_name(self) -> str:
        return f"tickrun-{self.bridge}"

    def _drop_rule(self) -> list[str]:
        # Anything a pod sends that the host would forward off the bridge is dropped.
        return ["FORWARD", "-i", self.bridge, "!", "-o", self.bridge, "-j", "DROP"]

    def _check_installation(self) -> Path:
        if os.geteuid() != 0:
            raise PeerUnavailable("a real Kubernetes node must run as root")
        root = self.directory or node_dir()
        missing = [b for b in ("kubelet", "pause") if not os.access(root / "bin" / b, os.X_OK)]
        missing += [t for t in _HOST_TOOLS if shutil.which(t) is None]
        missing += [p for p in ("bridge", "host-local") if not (_CNI_PLUGINS / p).exists()]
        if missing:
            raise PeerUnavailable(
                f"real node incomplete (no {', '.join(missing)}; apt packages: {_APT}). "
                f"Run `{ENSURE_SH} k8s-node` first."
            )
        return root

    def _claim_bridge(self) -> None:
        """The first 10.246.<n>.0/24 no route uses, with bridge trnode<n> (made here, so a
        parallel node that raced for the same <n> fails `ip link add` and takes the next)."""
        routes = _run("ip", "-4", "route", "show")
        for n in range(256):
            subnet = ipaddress.IPv4Network(_SUBNET_BASE.format(n))
            bridge = f"trnode{n}"
            used = any(
                subnet.overlaps(ipaddress.IPv4Network(r.split()[0], strict=False))
                for r in routes.splitlines()
                if r and r.split()[0][0].isdigit()
            )
            if used:
                continue
            try:
                _run("ip", "link", "add", bridge, "type", "bridge")
            except PeerUnavailable:
                continue
            self.bridge, self.subnet = bridge, subnet
            return
        raise PeerUnavailable("no free 10.246.<n>.0/24 for the node's pods")

    def _start_once(self, root: Path) -> None:
        self.workdir = w = Path(tempfile.mkdtemp(prefix="tickrun-node-"))
        deadline = time.monotonic() + self.startup_timeout
        self._before = hoststate.capture()
        atexit.register(self.stop)
        self._claim_bridge()
        _run("ip", "addr", "add", f"{self.ip}/24", "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")
        chain, *rule = self._drop_rule()
        _run("iptables", "-t", "mangle", "-I", chain, "1", *rule)
        self._write_cni(w)
        self._write_containerd_config(w)
        self._launch("containerd", ["containerd", "--config", str(w / "containerd.toml")])
        self._wait("containerd", deadline, lambda: bool(self.ctr("version", timeout=5)))
        self.ctr("images", "import", "-", stdin=one_file_image(root / "bin" / "pause", PAUSE_IMAGE))
        self._cgroup_root = hoststate.make_cgroup(w.name)
        self._write_kubelet_config(w)
        self._launch("kubelet", [
            str(root / "bin" / "kubelet"), "--config", str(w / "kubelet.yaml"),
            "--kubeconfig", str(self.plane.kubeconfig_path),
            "--root-dir", str(w / "kubelet"), "--cert-dir", str(w / "kubelet" / "pki"),
            "--hostname-override", self.name, "--node-ip", self.ip,
            *(["--node-labels", ",".join(f"{k}={v}" for k, v in self.labels.items())]
              if self.labels else []),
        ])  # fmt: skip
        self._wait(f"node {self.name} Ready", deadline, self._node_ready)

    def _write_cni(self, w: Path) -> None:
        assert self.subnet is not None
        for sub in ("net.d", "ipam"):
            (w / "cni" / sub).mkdir(parents=True)
        # isGateway false: the plugin neither gives the pods a default route nor turns on
        # ip_forward; they reach only their /24, where the node's address answers probes.
        conf = {
            "cniVersion": "1.0.0",
            "name": self._net_name(),
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge,
                    "isGateway": False,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": str(self.subnet), "gateway": self.ip}]],
                        "dataDir": str(w / "cni" / "ipam"),
                    },
                }
            ],
        }
        (w / "cni" / "net.d" / "10-node.conflist").write_text(json.dumps(conf), encoding="utf-8")

    def _write_containerd_config(self, w: Path) -> None:
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        # restrict_oom_score_adj: without CAP_SYS_RESOURCE (these machines) every sandbox fails
        # with "can't get final child's PID from pipe". The opt plugin would write /opt/containerd.
        text = f"""version = 2
root = "{w}/containerd-root"
state = "{w}/containerd-state"
[grpc]
  address = "{w}/containerd.sock"
[ttrpc]
  address = "{w}/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{w}/containerd-opt"
[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
  [{cri}.cni]
    bin_dir = "{_CNI_PLUGINS}"
    conf_dir = "{w}/cni/net.d"
  [{cri}.registry]
    config_path = "{w}/certs.d"
"""
        (w / "containerd.toml").write_text(text, encoding="utf-8")
        # Test registries on loopback speak plain http; containerd would try https first.
        for host in self.registries:
            d = w / "certs.d" / host
            d.mkdir(parents=True)
            (d / "hosts.toml").write_text(
                f'server = "http://{host}"\n\n[host."http://{host}"]\n'
                '  capabilities = ["pull", "resolve"]\n',
                encoding="utf-8",
            )

    def _write_kubelet_config(self, w: Path) -> None:
        # Pods get a resolver file with no nameserver: nothing in a test pod sends DNS anywhere.
        (w / "resolv.conf").write_text("search cluster.local\noptions ndots:1\n", encoding="utf-8")
        (w / "pod-logs").mkdir()
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            # cgroup v1 (hybrid) and no systemd here
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": self._cgroup_root,
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "address": self.ip,
            "port": 10250,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": free_port(),
            # the API server reaches pods/log anonymously (tests only: the node IP is private
            # to this host, but anything on it may read logs or exec into the test pods)
            "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
            "authorization": {"mode": "AlwaysAllow"},
            "failSwapOn": False,
            "makeIPTablesUtilChains": False,
            "serializeImagePulls": False,
            # never garbage-collect the loaded images (no registry to pull them back from)
            "imageGCHighThresholdPercent": 100,
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "nodefs.inodesFree": "1%",
            },
            "podLogsDir": str(w / "pod-logs"),
            "resolvConf": str(w / "resolv.conf"),
            "registerNode": True,
        }
        (w / "kubelet.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")

    def _launch(self, name: str, argv: list[str]) -> None:
        assert self.workdir is not None
        with (self.workdir / f"{name}.log").open("ab") as log:
            self._procs[name] = spawn(argv, log=log, cwd=self.workdir)

    def _wait(self, what: str, deadline: float, probe: Any) -> None:
        assert self.workdir is not None
        last = "no answer yet"
        while True:
            for name, proc in self._procs.items():
                if proc.poll() is not None:
                    log = self.workdir / f"{name}.log"
                    raise PeerUnavailable(
                        f"{name} exited with {proc.returncode} while waiting for {what}; "
                        f"log tail ({log}):\n{tail(log)}"
                    )
            try:
                if probe():
                    return
            except Exception as exc:  # any client/transport error means "not yet"
                last = f"{type(exc).__name__}: {exc}"[:300]
            if time.monotonic() > deadline:
                logs = "\n".join(
                    f"--- {n}:\n{tail(self.workdir / f'{n}.log', 15)}" for n in self._procs
                )
                raise PeerUnavailable(f"timed out waiting for {what} ({last})\n{logs}")
            time.sleep(0.2)

    def _node_ready(self) -> bool:
        from kubernetes import client

        with self.plane.admin_client() as api:
            node = client.CoreV1Api(api).read_node(self.name)
        conds = node.status.conditions if node.status else None
        return any(c.type == "Ready" and c.status == "True" for c in conds or [])

    def _kill_pods(self) -> None:
        """Every container of this containerd, killed and removed: the kubelet is gone, so
        nothing would stop them (the sandboxes' network namespaces go with their mounts)."""
        if self.workdir is None or not self.containerd_socket.exists():
            return
        procs = self._procs.get("containerd")
        if procs is None or procs.poll() is not None:
            return
        with contextlib.suppress(PeerUnavailable):
            for task in self.running_tasks():
                with contextlib.suppress(PeerUnavailable):
                    self.ctr("tasks", "kill", "-a", "-s", "SIGKILL", task, timeout=10)
            deadline = time.monotonic() + 10
            while self.running_tasks() and time.monotonic() < deadline:
                time.sleep(0.1)
            for task in self.ctr("tasks", "ls", "-q").split():
                with contextlib.suppress(PeerUnavailable):
                    self.ctr("tasks", "rm", "-f", task, timeout=10)
            for container in self.ctr("containers", "ls", "-q").split():
                with contextlib.suppress(PeerUnavailable):
                    self.ctr("containers", "rm", container, timeout=10)
