"""Smoke tests proving the real peers behave like the real things (they are the real things)."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import socket
import threading
import time
import uuid
import zipfile
from pathlib import Path

import pytest

from tests.peers import KafkaBroker, MinioServer, base_image, podman

# Short group timeouts so joins/rebalances take seconds (the broker allows down to 1 s).
_GROUP_TIMEOUTS = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}


# -- Kafka ------------------------------------------------------------------------------------


def _consume(consumer: object, want: int, timeout: float = 30.0) -> list[bytes]:
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():  # type: ignore[attr-defined]
            got.extend(r.value for r in records)
    return got


@pytest.mark.kafka
def test_kafka_produce_consume_and_commit(kafka_broker: KafkaBroker) -> None:
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    topic = f"peers-{uuid.uuid4().hex[:8]}"
    group = f"group-{uuid.uuid4().hex[:8]}"
    kafka_broker.create_topic(topic, partitions=2)

    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap_servers, acks="all")
    sent = [f"tick-{i}".encode() for i in range(10)]
    for i, value in enumerate(sent):
        producer.send(topic, key=str(i % 2).encode(), value=value)
    producer.flush(timeout=30)

    def consumer() -> KafkaConsumer:
        return KafkaConsumer(
            topic,
            bootstrap_servers=kafka_broker.bootstrap_servers,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            **_GROUP_TIMEOUTS,
        )

    first = consumer()
    try:
        received = _consume(first, len(sent))
        first.commit()
        committed = {p: first.committed(TopicPartition(topic, p)) for p in (0, 1)}
    finally:
        first.close()
    assert sorted(received) == sorted(sent)
    assert sum(offset or 0 for offset in committed.values()) == len(sent)

    # The group's committed offsets must be honoured: a new member sees only new messages.
    producer.send(topic, key=b"0", value=b"after-commit")
    producer.flush(timeout=30)
    producer.close()
    second = consumer()
    try:
        assert _consume(second, 1) == [b"after-commit"]
        assert _consume(second, 1, timeout=2.0) == []
    finally:
        second.close()


# -- MinIO ------------------------------------------------------------------------------------


@pytest.mark.minio
def test_minio_roundtrip_is_byte_exact(minio_server: MinioServer) -> None:
    client = minio_server.client()
    bucket = f"peers-{uuid.uuid4().hex[:8]}"
    client.make_bucket(bucket)
    # Larger than one 5 MiB part, so the multipart upload path is exercised as well.
    payload = os.urandom(6 * 1024 * 1024 + 13)
    client.put_object(
        bucket, "blob.bin", io.BytesIO(payload), len(payload), part_size=5 * 1024 * 1024
    )

    response = client.get_object(bucket, "blob.bin")
    try:
        data = response.read()
    finally:
        response.close()
        response.release_conn()
    assert hashlib.sha256(data).hexdigest() == hashlib.sha256(payload).hexdigest()
    assert client.stat_object(bucket, "blob.bin").size == len(payload)


@pytest.mark.minio
def test_minio_refuses_wrong_credentials(minio_server: MinioServer) -> None:
    from minio.error import S3Error

    bucket = f"peers-{uuid.uuid4().hex[:8]}"
    minio_server.client().make_bucket(bucket)
    minio_server.client().put_object(bucket, "k", io.BytesIO(b"secret"), 6)

    wrong_secret = minio_server.client(secret_key=minio_server.secret_key + "x")
    with pytest.raises(S3Error) as bad_secret:
        wrong_secret.get_object(bucket, "k")
    assert bad_secret.value.code in {"SignatureDoesNotMatch", "AccessDenied"}

    unknown_user = minio_server.client(access_key="nobody-" + uuid.uuid4().hex[:6])
    with pytest.raises(S3Error) as bad_user:
        unknown_user.list_buckets()
    assert bad_user.value.code in {"InvalidAccessKeyId", "AccessDenied"}


# -- podman -----------------------------------------------------------------------------------


def _run(env: dict[str, str], *args: str, timeout: float = 120.0) -> str:
    proc = podman("run", "--rm", "--init", *args, env=env, timeout=timeout, check=False)
    assert proc.returncode == 0, (
        f"podman run failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    )
    return proc.stdout


@pytest.mark.podman
def test_podman_runs_base_image_with_host_network(podman_env: dict[str, str]) -> None:
    # containers.conf puts containers in the host network namespace: a container must reach a
    # socket bound to the host's loopback, which is how replicas and tests talk.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]

        def answer() -> None:
            conn, _ = server.accept()
            with conn:
                conn.sendall(b"pong")

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        script = (
            "import resource, socket, sys\n"
            "print(sys.version.split()[0])\n"
            "print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
            f"print(socket.create_connection(('127.0.0.1', {port}), 5).recv(4).decode())\n"
        )
        out = _run(podman_env, base_image(), "python3", "-c", script).split()
        thread.join(timeout=5)
    assert out[0].startswith("3.11."), out
    assert out[1] == "1024", "default_ulimits from containers.conf not applied"
    assert out[2] == "pong"


def _probe_wheel(directory: Path) -> Path:
    """A minimal pure-Python wheel, so the offline install path needs no index at all."""
    files = {
        "tickrun_probe/__init__.py": b"VALUE = 'installed offline'\n",
        "tickrun_probe-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: tickrun-probe\nVersion: 1.0\n",
        "tickrun_probe-1.0.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: tickrun-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append("tickrun_probe-1.0.dist-info/RECORD,,")
    files["tickrun_probe-1.0.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
    path = directory / "tickrun_probe-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as whl:
        for name, data in files.items():
            whl.writestr(name, data)
    return path


@pytest.mark.podman
def test_podman_venv_and_offline_pip_install(podman_env: dict[str, str], tmp_path: Path) -> None:
    _probe_wheel(tmp_path)
    script = (
        "set -e; python3 -m venv /opt/venv; "
        "/opt/venv/bin/pip install -q --no-index --find-links /wheels tickrun-probe; "
        "/opt/venv/bin/python -c 'import sys, tickrun_probe; print(sys.prefix, tickrun_probe.VALUE)'"
    )
    out = _run(podman_env, "-v", f"{tmp_path}:/wheels:ro", base_image(), "sh", "-c", script)
    assert out.strip().splitlines()[-1] == "/opt/venv installed offline"
