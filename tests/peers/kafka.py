"""A real single-node Apache Kafka broker (KRaft mode) for tests.

The jars come from Maven Central via ``deploy/peers/ensure.sh kafka``; this module only runs
them::

    broker = KafkaBroker().start()
    broker.create_topic("ticks", partitions=3)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers)
    ...
    broker.stop()
"""

from __future__ import annotations

import atexit
import base64
import logging
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from ._util import (
    ENSURE_SH,
    PeerProcess,
    PeerUnavailable,
    free_port,
    peers_cache,
    spawn,
    tail,
    versions,
    wait_for_port,
)

logger = logging.getLogger(__name__)

# Short enough for tests to use session_timeout_ms of ~6 s and rebalance in seconds; the broker
# default (6 s minimum) would reject anything shorter.
GROUP_MIN_SESSION_TIMEOUT_MS = 1000

_LOG4J = """\
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.org.apache.kafka.clients=WARN
log4j.logger.org.apache.kafka.common.utils.AppInfoParser=WARN
"""


def kafka_libs_dir() -> Path:
    """The broker classpath directory that ensure.sh populated (or $TICKRUN_KAFKA_LIBS)."""
    override = os.environ.get("TICKRUN_KAFKA_LIBS")
    if override:
        return Path(override)
    return peers_cache() / f"kafka-{versions()['KAFKA_VERSION']}" / "libs"


def _cluster_id() -> str:
    # Kafka's Uuid string form: url-safe base64 of 16 bytes without padding. Kafka itself
    # never hands out ids starting with '-' because CLI parsers would read them as options.
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def _leader(partition: dict[str, object]) -> int:
    # kafka-python 2.x names the field "leader", 3.x "leader_id".
    leader = partition.get("leader_id", partition.get("leader", -1))
    return leader if isinstance(leader, int) else -1


class KafkaBroker(PeerProcess):
    """One KRaft broker+controller on loopback, with its data in a temp dir.

    The constructor does no I/O; ``start()`` formats storage, launches the JVM and returns once
    a kafka-python client can fetch cluster metadata.
    """

    peer_name = "kafka"
    stop_grace_s = 20.0

    def __init__(
        self,
        *,
        libs_dir: Path | None = None,
        heap: str = "512m",
        startup_timeout: float = 60.0,
        extra_properties: dict[str, str] | None = None,
    ) -> None:
        self.libs_dir = libs_dir
        self.heap = heap
        self.startup_timeout = startup_timeout
        self.extra_properties = dict(extra_properties or {})
        self.port: int | None = None
        self.controller_port: int | None = None
        self.workdir: Path | None = None
        self.log_path: Path | None = None
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def bootstrap_servers(self) -> str:
        if self.port is None or self._proc is None:
            raise RuntimeError("KafkaBroker is not started")
        return f"127.0.0.1:{self.port}"

    def _describe(self) -> str:
        return f"kafka {versions()['KAFKA_VERSION']} broker up at {self.bootstrap_servers} (log: {self.log_path})"

    # -- topics ------------------------------------------------------------------------------

    def create_topic(
        self,
        name: str,
        partitions: int = 1,
        timeout: float = 30.0,
        configs: dict[str, str] | None = None,
    ) -> None:
        """Create a topic (``configs``: topic-level settings such as ``max.message.bytes``)
        and wait until every partition has a leader, so producing right after this call does
        not race the metadata propagation."""
        from kafka import KafkaAdminClient
        from kafka.admin import NewTopic

        admin = KafkaAdminClient(
            bootstrap_servers=self.bootstrap_servers, client_id="tickrun-tests"
        )
        try:
            admin.create_topics(
                [
                    NewTopic(
                        name=name,
                        num_partitions=partitions,
                        replication_factor=1,
                        topic_configs=configs or {},
                    )
                ],
                timeout_ms=int(timeout * 1000),
            )
            deadline = time.monotonic() + timeout
            while True:
                described = admin.describe_topics([name])
                parts = described[0].get("partitions", []) if described else []
                if len(parts) == partitions and all(_leader(p) >= 0 for p in parts):
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"topic {name!r} has no leaders after {timeout}s: {described}"
                    )
                time.sleep(0.1)
        finally:
            admin.close()

    # -- internals ---------------------------------------------------------------------------

    def _check_installation(self) -> Path:
        libs = self.libs_dir or kafka_libs_dir()
        version = versions()["KAFKA_VERSION"]
        jar = libs / f"kafka_{versions()['KAFKA_SCALA']}-{version}.jar"
        if not jar.is_file():
            raise PeerUnavailable(
                f"Kafka {version} jars not found ({jar} missing). Run `{ENSURE_SH} kafka` first."
            )
        if shutil.which("java") is None:
            raise PeerUnavailable(
                f"`java` is not on PATH (Java 17 needed). Run `{ENSURE_SH} kafka`."
            )
        return libs

    def _java(self, libs: Path, *args: str) -> list[str]:
        assert self.workdir is not None
        return [
            "java",
            f"-Xmx{self.heap}",
            # Single-node test broker on a 2-core box: serial GC and C1-only JIT cut startup CPU
            # (and thus test latency) far more than they cost in throughput.
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true",
            f"-Dlog4j.configuration=file:{self.workdir / 'log4j.properties'}",
            # Keeps the JVM's perf data and Kafka's default kafka.logs.dir out of shared places.
            "-XX:-UsePerfData",
            f"-Dkafka.logs.dir={self.workdir}",
            "-cp",
            str(libs / "*"),
            *args,
        ]

    def _write_config(self) -> Path:
        assert (
            self.workdir is not None and self.port is not None and self.controller_port is not None
        )
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.workdir / "data"),
            "num.partitions": "1",
            "auto.create.topics.enable": "true",
            "offsets.topic.replication.factor": "1",
            # One partition instead of 50: the first consumer group otherwise waits for 50
            # partition leaders to be elected.
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "1",
            "group.initial.rebalance.delay.ms": "0",
            "group.min.session.timeout.ms": str(GROUP_MIN_SESSION_TIMEOUT_MS),
            **self.extra_properties,
        }
        path = self.workdir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()), encoding="utf-8")
        (self.workdir / "log4j.properties").write_text(_LOG4J, encoding="utf-8")
        return path

    def _start_once(self, libs: Path) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="tickrun-kafka-"))
        self.port, self.controller_port = free_port(), free_port()
        while self.controller_port == self.port:
            self.controller_port = free_port()
        config = self._write_config()
        self.log_path = self.workdir / "broker.log"

        fmt = subprocess.run(
            self._java(
                libs, "kafka.tools.StorageTool", "format", "-t", _cluster_id(), "-c", str(config)
            ),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if fmt.returncode != 0:
            raise PeerUnavailable(
                f"kafka storage format failed (exit {fmt.returncode}):\n{fmt.stdout}\n{fmt.stderr}"
            )

        with self.log_path.open("ab") as log:
            self._proc = spawn(self._java(libs, "kafka.Kafka", str(config)), log=log)
        atexit.register(self.stop)
        self._wait_ready()

    def _wait_ready(self) -> None:
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaConfigurationError

        assert self._proc is not None and self.port is not None
        deadline = time.monotonic() + self.startup_timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise PeerUnavailable(
                    f"kafka broker exited with {self._proc.returncode} during startup; "
                    f"log tail ({self.log_path}):\n{self._log_tail()}"
                )
            # Probe the socket first: kafka-python's bootstrap blocks for seconds against a
            # closed port, which would stretch every poll of a JVM that is still booting.
            if not wait_for_port(self.port, 0.25):
                continue
            try:
                admin = KafkaAdminClient(
                    bootstrap_servers=self.bootstrap_servers,
                    client_id="tickrun-readiness",
                    request_timeout_ms=5000,
                )
                try:
                    # Brokers are listed only once the node is registered and unfenced, which
                    # is when topic creation and produce requests start to succeed.
                    if admin.describe_cluster().get("brokers"):
                        return
                finally:
                    admin.close()
            except KafkaConfigurationError:
                raise  # our bug, not a broker still booting
            except Exception as exc:  # the client raises a variety of errors while booting
                last_error = exc
            time.sleep(0.25)
        raise PeerUnavailable(
            f"kafka broker at {self.bootstrap_servers} not ready after {self.startup_timeout:.0f}s "
            f"(last client error: {last_error!r}); log tail ({self.log_path}):\n{self._log_tail()}"
        )

    def _log_tail(self) -> str:
        if self.log_path is None:
            return "(no log)"
        # Kafka dumps its ~300-line effective config at startup (tab-indented); it would push
        # the actual error out of the tail.
        lines = [ln for ln in tail(self.log_path, 400).splitlines() if not ln.startswith("\t")]
        return "\n".join(lines[-40:])
