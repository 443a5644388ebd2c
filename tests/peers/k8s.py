"""A real Kubernetes control plane on loopback for tests: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, and kwok playing the nodes.

The binaries are built from the Go module proxy by ``deploy/peers/ensure.sh k8s``; this module
only runs them::

    kube = KubeControlPlane().start()
    api = kube.admin_client()              # kubernetes.client.ApiClient, cluster-admin
    kubernetes.client.AppsV1Api(api).create_namespaced_deployment(...)
    kube.stop()

Deployments, ReplicaSets, Pods (Running and Ready within a second, simulated by kwok: no
container runs, so no pod logs or exec), Services, RBAC and ServiceAccount tokens are real.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import logging
import os
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ._util import (
    ENSURE_SH,
    PeerProcess,
    PeerUnavailable,
    free_port,
    peers_cache,
    spawn,
    tail,
    terminate,
    versions,
)

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

logger = logging.getLogger(__name__)

SERVICE_CIDR = "10.96.0.0/16"
# Names the API server's certificate must carry for in-cluster clients and for 127.0.0.1.
_APISERVER_SANS = ",".join(
    ["IP:127.0.0.1", "IP:10.96.0.1", "DNS:localhost", "DNS:kubernetes"]
    + ["DNS:kubernetes.default", "DNS:kubernetes.default.svc"]
    + ["DNS:kubernetes.default.svc.cluster.local"]
)
_ISSUER = "https://kubernetes.default.svc.cluster.local"
# The stage-file lifecycles make a fake node Ready and a pod Running/Ready within a second.
_NODE_LABELS = {"type": "kwok", "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}
_BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
# Loopback probes must not go through an https_proxy from the environment.
_NO_PROXY_HANDLER = urllib.request.ProxyHandler({})


def k8s_dir() -> Path:
    """What ensure.sh built: bin/ and kwok-stages.yaml (or $TICKRUN_K8S_DIR)."""
    override = os.environ.get("TICKRUN_K8S_DIR")
    if override:
        return Path(override)
    return peers_cache() / f"k8s-{versions()['KUBERNETES_VERSION']}"


def helm_binary() -> Path:
    """The helm ensure.sh built beside the control plane (the chart tests use it)."""
    return k8s_dir() / "bin" / "helm"


def api_client(kubeconfig: Path) -> ApiClient:
    """A ``kubernetes.client.ApiClient`` for a kubeconfig file; the caller closes it."""
    from kubernetes import config

    api: ApiClient = config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
    return api


def _openssl(*args: str, cwd: Path) -> None:
    try:
        subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)
    except FileNotFoundError as exc:
        raise PeerUnavailable(f"openssl is not installed. Run `{ENSURE_SH} k8s`.") from exc
    except subprocess.CalledProcessError as exc:
        err = exc.stderr.decode(errors="replace").strip()
        raise PeerUnavailable(f"openssl {args[0]} failed: {err}") from exc


def _make_pki(d: Path) -> None:
    """A CA, the API server's serving cert, an admin client cert (group system:masters) and the
    ServiceAccount token signing key pair. EC keys: generating RSA ones costs seconds per start."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-days", "2", "-keyout", "ca.key", "-out", "ca.crt",
             "-subj", "/CN=tickrun-test-ca", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
             cwd=d)  # fmt: skip
    leaves = {
        "apiserver": ("/CN=kube-apiserver", "serverAuth", _APISERVER_SANS),
        "admin": ("/O=system:masters/CN=tickrun-test-admin", "clientAuth", ""),
    }
    for name, (subject, usage, sans) in leaves.items():
        ext = [
            "basicConstraints=CA:FALSE",
            "keyUsage=critical,digitalSignature,keyEncipherment",
            f"extendedKeyUsage={usage}",
        ] + ([f"subjectAltName={sans}"] if sans else [])
        (d / f"{name}.ext").write_text("\n".join(ext) + "\n", encoding="utf-8")
        _openssl("req", "-new", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", subject, cwd=d)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext",
                 "-out", f"{name}.crt", cwd=d)  # fmt: skip
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "sa.key", cwd=d)
    _openssl("ec", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=d)


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(path: Path, *, server: str, ca: Path, user: dict[str, str]) -> Path:
    """A one-context kubeconfig (mode 600: it holds a credential)."""
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "tickrun-test",
                "cluster": {"server": server, "certificate-authority-data": _b64(ca)},
            }
        ],
        "users": [{"name": "user", "user": user}],
        "contexts": [
            {"name": "tickrun-test", "context": {"cluster": "tickrun-test", "user": "user"}}
        ],
        "current-context": "tickrun-test",
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        yaml.safe_dump(doc, fh)
    return path


class KubeControlPlane(PeerProcess):
    """etcd + kube-apiserver (RBAC) + controller-manager + scheduler + kwok with ``nodes`` fake
    nodes, all on free 127.0.0.1 ports, state in a temp dir. ``nodes=0, real_nodes=True``: no
    kwok, and the API server reaches kubelets by their InternalIP (tests/peers/k8snode.py).

    The constructor does no I/O; ``start()`` returns once the API server is ready, the
    ``default`` ServiceAccount exists (Pods need it) and every node is Ready.
    """

    peer_name = "kubernetes"
    stop_grace_s = 15.0

    def __init__(
        self,
        *,
        nodes: int = 2,
        real_nodes: bool = False,
        directory: Path | None = None,
        startup_timeout: float = 120.0,
    ) -> None:
        if nodes < 0:
            raise ValueError("nodes must be >= 0")
        if real_nodes and nodes:
            # kwok manages every node: it would take a real node's pods over
            raise ValueError("real_nodes needs nodes=0 (no kwok)")
        self.nodes = nodes
        self.real_nodes = real_nodes
        self.directory = directory
        self.startup_timeout = startup_timeout
        self.workdir: Path | None = None
        self.startup_seconds: float | None = None
        self.server: str | None = None
        # In start order; stop() walks it backwards, so etcd goes after the API server (the
        # other way round the API server hangs ~15 s on its storage).
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def kubeconfig_path(self) -> Path:
        """The cluster-admin kubeconfig (client certificate in group system:masters)."""
        if self.workdir is None or self.server is None:
            raise RuntimeError("KubeControlPlane is not started")
        return self.workdir / "admin.kubeconfig"

    def admin_client(self) -> ApiClient:
        """A cluster-admin ``kubernetes.client.ApiClient``; close it (or use ``with``)."""
        return api_client(self.kubeconfig_path)

    def service_account_kubeconfig(
        self, namespace: str, name: str, *, expiration_s: int = 3600
    ) -> Path:
        """A kubeconfig that authenticates as an existing ServiceAccount, with a token from the
        TokenRequest API: what a pod running as that ServiceAccount would get."""
        from kubernetes import client

        with self.admin_client() as api:
            request = client.AuthenticationV1TokenRequest(
                spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=expiration_s)
            )
            answer = client.CoreV1Api(api).create_namespaced_service_account_token(
                name, namespace, request
            )
        token = answer.status.token if answer.status else None
        if not token:
            raise PeerUnavailable(f"TokenRequest for {namespace}/{name} returned no token")
        assert self.workdir is not None and self.server is not None
        return write_kubeconfig(
            self.workdir / f"sa-{namespace}-{name}.kubeconfig",
            server=self.server,
            ca=self.workdir / "ca.crt",
            user={"token": token},
        )

    def rss_bytes(self) -> dict[str, int]:
        """Resident memory of each running component (for the cost figures in the README)."""
        rss: dict[str, int] = {}
        for name, proc in self._procs.items():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        rss[name] = int(line.split()[1]) * 1024
        return rss

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until the API server is ready, the controllers made the ``default``
        ServiceAccount, and every node is Ready; raises PeerUnavailable otherwise."""
        from kubernetes import client

        deadline = time.monotonic() + (self.startup_timeout if timeout is None else timeout)
        self._wait("kube-apiserver /readyz", deadline, self._apiserver_ready)
        with self.admin_client() as api:
            core = client.CoreV1Api(api)

            def default_sa() -> bool:
                return bool(core.list_namespaced_service_account("default").items)

            def nodes_ready() -> bool:
                ready = [
                    n for n in core.list_node().items if n.status and _is_ready(n.status.conditions)
                ]
                return len(ready) >= self.nodes

            self._wait("the default ServiceAccount", deadline, default_sa)
            self._wait(f"{self.nodes} Ready node(s)", deadline, nodes_ready)

    def stop(self) -> None:
        atexit.unregister(self.stop)
        for name in reversed(list(self._procs)):
            terminate(self._procs.pop(name), grace=self.stop_grace_s)
        super().stop()
        self.server = None

    def _describe(self) -> str:
        return f"kubernetes up at {self.server} with {self.nodes} kwok node(s) ({self.workdir})"

    # -- internals ---------------------------------------------------------------------------

    def _check_installation(self) -> Path:
        root = self.directory or k8s_dir()
        missing = [b for b in _BINARIES if not os.access(root / "bin" / b, os.X_OK)]
        if missing or not (root / "kwok-stages.yaml").is_file():
            what = ", ".join(missing) or "kwok-stages.yaml"
            raise PeerUnavailable(
                f"Kubernetes peer incomplete in {root} (no {what}). Run `{ENSURE_SH} k8s` first."
            )
        return root

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
                    f"--- {n}:\n{tail(self.workdir / f'{n}.log', 10)}" for n in self._procs
                )
                raise PeerUnavailable(f"timed out waiting for {what} ({last})\n{logs}")
            time.sleep(0.2)

    def _apiserver_ready(self) -> bool:
        assert self.workdir is not None
        ctx = ssl.create_default_context(cafile=str(self.workdir / "ca.crt"))
        ctx.load_cert_chain(str(self.workdir / "admin.crt"), str(self.workdir / "admin.key"))
        opener = urllib.request.build_opener(
            _NO_PROXY_HANDLER, urllib.request.HTTPSHandler(context=ctx)
        )
        try:
            with opener.open(f"{self.server}/readyz", timeout=2) as resp:
                return bool(resp.status == 200)
        except urllib.error.HTTPError:
            return False

    def _start_once(self, root: Path) -> None:
        bin_dir = root / "bin"
        self.workdir = w = Path(tempfile.mkdtemp(prefix="tickrun-k8s-"))
        deadline = time.monotonic() + self.startup_timeout
        _make_pki(w)
        etcd_port, etcd_peer, api_port = free_port(), free_port(), free_port()
        etcd_url, peer_url = f"http://127.0.0.1:{etcd_port}", f"http://127.0.0.1:{etcd_peer}"
        self.server = f"https://127.0.0.1:{api_port}"
        atexit.register(self.stop)
        self._launch("etcd", [
            str(bin_dir / "etcd"), "--name", "tickrun-test", "--data-dir", str(w / "etcd"),
            "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
            "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", f"tickrun-test={peer_url}",
            # a throwaway store: fsync would only make every write wait for the disk
            "--unsafe-no-fsync", "--log-level", "warn",
        ])  # fmt: skip
        self._wait("etcd /health", deadline, lambda: _http_ok(f"{etcd_url}/health"))
        self._launch("kube-apiserver", [
            str(bin_dir / "kube-apiserver"), "--etcd-servers", etcd_url,
            "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
            "--secure-port", str(api_port), "--cert-dir", str(w),
            "--tls-cert-file", str(w / "apiserver.crt"),
            "--tls-private-key-file", str(w / "apiserver.key"),
            "--client-ca-file", str(w / "ca.crt"),
            "--service-account-issuer", _ISSUER, "--service-account-key-file", str(w / "sa.pub"),
            "--service-account-signing-key-file", str(w / "sa.key"),
            "--service-cluster-ip-range", SERVICE_CIDR,
            # the Service "kubernetes" would point at 127.0.0.1, which pods must never reach
            "--endpoint-reconciler-type", "none",
            "--authorization-mode", "Node,RBAC", "--allow-privileged=true", "--profiling=false",
            # pods/log, exec: by the node's IP (kwok's are loopback), never a node name through
            # the system resolver, which would send a DNS query off this machine
            "--kubelet-preferred-address-types", "InternalIP",
        ])  # fmt: skip
        self._wait("kube-apiserver /readyz", deadline, self._apiserver_ready)
        write_kubeconfig(
            self.kubeconfig_path,
            server=self.server,
            ca=w / "ca.crt",
            user={
                "client-certificate-data": _b64(w / "admin.crt"),
                "client-key-data": _b64(w / "admin.key"),
            },
        )
        kubeconfig = str(self.kubeconfig_path)
        # --secure-port 0: no serving port, so parallel test sessions never clash on a fixed one
        self._launch("kube-controller-manager", [
            str(bin_dir / "kube-controller-manager"), "--kubeconfig", kubeconfig,
            "--secure-port", "0", "--leader-elect=false", "--controllers", "*",
            "--service-account-private-key-file", str(w / "sa.key"),
            "--root-ca-file", str(w / "ca.crt"),
            "--cluster-signing-cert-file", str(w / "ca.crt"),
            "--cluster-signing-key-file", str(w / "ca.key"),
            "--use-service-account-credentials=false",
        ])  # fmt: skip
        self._launch("kube-scheduler", [
            str(bin_dir / "kube-scheduler"), "--kubeconfig", kubeconfig,
            "--secure-port", "0", "--leader-elect=false",
        ])  # fmt: skip
        if self.nodes:
            self._start_kwok(root, kubeconfig)
        self.wait_ready(max(1.0, deadline - time.monotonic()))

    def _start_kwok(self, root: Path, kubeconfig: str) -> None:
        bin_dir = root / "bin"
        self._launch("kwok", [
            str(bin_dir / "kwok"), "--kubeconfig", kubeconfig,
            "--config", str(root / "kwok-stages.yaml"),
            "--manage-all-nodes=true", "--cidr", "10.244.0.0/16", "--node-ip", "127.0.0.1",
            "--node-lease-duration-seconds", "40",
        ])  # fmt: skip
        self._create_nodes()

    def _create_nodes(self) -> None:
        from kubernetes import client

        with self.admin_client() as api:
            core = client.CoreV1Api(api)
            for i in range(self.nodes):
                name = f"kwok-node-{i}"
                core.create_node(
                    client.V1Node(
                        metadata=client.V1ObjectMeta(
                            name=name,
                            labels={**_NODE_LABELS, "kubernetes.io/hostname": name},
                            annotations={
                                "kwok.x-k8s.io/node": "fake",
                                "node.alpha.kubernetes.io/ttl": "0",
                            },
                        )
                    )
                )


def _is_ready(conditions: list[Any] | None) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in conditions or [])


def _http_ok(url: str) -> bool:
    opener = urllib.request.build_opener(_NO_PROXY_HANDLER)
    with opener.open(url, timeout=2) as resp:
        return bool(resp.status == 200)
