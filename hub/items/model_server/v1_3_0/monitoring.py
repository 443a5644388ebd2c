"""model_server 1.3.0: every prediction recorded to a monitoring sink for a fixed ~1 us a request.

1.2 wrote one self-describing record per prediction, feature names and all; encoding that cost
~3-5 us a record on the request path and the flush thread's share of the same core came on top:
bench/serving --monitoring measured 0.84-0.89x of monitoring off. 1.3 writes the same facts in
a compact form, the *predictions stream* (version 2), JSON Lines:

- a header line ``{"predictions": 2, "features": [name, …]}`` opens every JSONL file and every
  Kafka message (and comes again if the feature names change);
- then one line per request: ``[request_id, time_ms, latency_ms, model_version, rows, outputs,
  probabilities | null, open_times | null]`` — ``rows`` in the header's feature order, one
  output (and one probability entry: the class probabilities, or one number) per row.

A request's line is one ``orjson.dumps`` of references it already holds (~1 us for a 27-feature
row, numpy arrays included) and one append to a bounded ``deque``. Bytes are not tracked by the
GC, so nothing queued makes the interpreter collect more often. A thread wakes every
``MONITOR_FLUSH_MS`` (default 200) and hands everything queued to the sink in one write:

- :class:`KafkaSink` (``MONITOR_TOPIC`` + ``MONITOR_BROKERS``): a shipper process (this file,
  ``--ship``) produces with confluent-kafka when installed, else kafka-python
  (``MONITOR_KAFKA_CLIENT`` chooses), each message a header plus request lines, up to 256 KiB;
  failed deliveries are counted (per request line) and logged;
- :class:`JsonlSink` (``MONITOR_DIR``): files ``predictions-<pid>-<start>-<n>.jsonl``, a new
  one once one reaches ``MONITOR_ROTATE_MB`` (default 64).

:func:`expand` turns a stream (either version: 1.2's records pass through) back into
hub://model_monitor's records ``{"features": {name: value}, "probability", "prediction",
"model_version", "open_time", "request_id", "latency_ms", "time"}``; model_monitor 1.1 reads
both versions, :func:`read_jsonl` reads a JSONL directory. A full queue drops the request and
counts it; a sink that raises is counted and logged: monitoring never fails a request.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

STREAM_VERSION = 2

try:  # tickrun's own dependency; NaN/inf become null, numpy arrays are written natively
    import orjson

    _OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE

    def _line(item: Any) -> bytes:
        out: bytes = orjson.dumps(item, default=str, option=_OPTIONS)
        return out

except ImportError:  # an exported copy run where orjson is not installed

    def _finite(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None  # strict JSON, as orjson writes it
        if isinstance(v, list | tuple):
            return [_finite(x) for x in v]
        if hasattr(v, "tolist"):
            return _finite(v.tolist())
        return v

    def _line(item: Any) -> bytes:
        return json.dumps(_finite(item), default=str).encode() + b"\n"


def header(features: Sequence[str] | None) -> bytes:
    return json.dumps({"predictions": STREAM_VERSION, "features": features}).encode() + b"\n"


_HEADER_START = b'{"predictions"'  # a request line is a JSON array: "[" first


class JsonlSink:
    """Request lines appended to rotated JSON Lines files in ``directory``, each file opening
    with the stream header."""

    def __init__(self, directory: str | Path, rotate_bytes: int = 64 << 20) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.rotate_bytes = max(1, int(rotate_bytes))
        self._stem = f"predictions-{os.getpid()}-{int(time.time() * 1000)}"
        self._index = 0
        self._file: Any = None
        self._size = 0
        self._header = b""

    def _open(self, head: bytes) -> None:
        self._index += 1
        path = self.directory / f"{self._stem}-{self._index:05d}.jsonl"
        self._file = path.open("ab")
        self._file.write(head)
        self._size = len(head)
        self._header = head

    def write(self, head: bytes, lines: list[bytes]) -> None:
        if self._file is not None and head != self._header:
            self._file.write(head)  # the feature names changed: a new header, same file
            self._header = head
        i, n = 0, len(lines)
        while i < n:
            if self._file is None or self._size >= self.rotate_bytes:
                self.close()
                self._open(head)
            # The lines up to the rotation size go in one write (a whole batch, usually).
            j, room = i, self.rotate_bytes - self._size
            while j < n and (j == i or room > 0):
                room -= len(lines[j])
                j += 1
            data = b"".join(lines[i:j])
            self._file.write(data)
            self._size += len(data)
            i = j
        if self._file is not None:
            self._file.flush()  # readable by a monitor job as soon as a batch is written

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


Report = Callable[[int, int, str], None]  # (0 delivered | 1 failed, request lines, detail)


class _KafkaPython:
    """The shipper's producer on kafka-python (always installed with model_server)."""

    def __init__(self, brokers: Sequence[str], topic: str, compression: str | None) -> None:
        from kafka import KafkaProducer

        self.topic = topic
        self._producer = KafkaProducer(
            bootstrap_servers=list(brokers),
            linger_ms=50,
            batch_size=1 << 20,
            max_request_size=4 << 20,
            acks=1,
            max_block_ms=5000,  # a down broker blocks the shipper only, and not for long
            bootstrap_timeout_ms=5000,
            retries=3,
            compression_type=compression,
        )

    def send(self, value: bytes, count: int, report: Report) -> None:
        future = self._producer.send(self.topic, value)
        future.add_callback(lambda _meta: report(0, count, "-"))
        future.add_errback(lambda exc: report(1, count, _describe(exc)))

    def close(self) -> None:
        self._producer.flush(timeout=10)
        self._producer.close(timeout=10)


class _Confluent:
    """The shipper's producer on confluent-kafka (librdkafka) when it is installed: ~1 us of
    CPU a KiB against kafka-python's ~2.5-3 (bench/serving's Kafka row). Delivery reports are
    served by a polling thread, so a failure is reported while the server sends nothing."""

    def __init__(self, brokers: Sequence[str], topic: str, compression: str | None) -> None:
        from confluent_kafka import Producer

        self.topic = topic
        self._producer = Producer(
            {
                "bootstrap.servers": ",".join(brokers),
                "linger.ms": 50,
                "acks": 1,
                "message.max.bytes": 4 << 20,
                "message.timeout.ms": 10000,  # a down broker fails deliveries in 10 s, not 5 min
                "compression.type": compression or "none",
                "log_level": 3,  # errors only on the replica's stderr
            }
        )
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.2)

    def send(self, value: bytes, count: int, report: Report) -> None:
        def delivered(err: Any, _msg: Any) -> None:
            if err is None:
                report(0, count, "-")
            else:
                report(1, count, f"KafkaError: {err}")

        while True:
            try:
                self._producer.produce(self.topic, value, on_delivery=delivered)
                return
            except BufferError:  # librdkafka's queue is full: wait for deliveries
                self._producer.poll(0.1)

    def close(self) -> None:
        self._producer.flush(10)
        self._stop.set()
        self._poller.join(5)


CLIENTS = ("auto", "confluent-kafka", "kafka-python")


def _producer(brokers: Sequence[str], topic: str, compression: str | None, client: str) -> Any:
    """``client``: confluent-kafka, kafka-python, or auto (confluent-kafka when installed)."""
    if client == "auto":
        try:
            import confluent_kafka  # noqa: F401
        except ImportError:
            client = "kafka-python"
    if client == "kafka-python":
        return _KafkaPython(brokers, topic, compression)
    return _Confluent(brokers, topic, compression)


_FRAME = struct.Struct(">II")  # payload bytes, request lines in it


class KafkaSink:
    counts_deliveries = True

    """Request lines produced to ``topic`` by a *shipper*: a child process running this file
    (``python monitoring.py --ship``) that owns the kafka-python producer. Each message is the
    stream header and as many request lines as fit in ``message_bytes`` (at least one); the
    sink hands the child length-prefixed messages on a pipe.

    Why a process: with the producer in the serving process, its I/O thread's GIL hand-offs
    cost the request loop ~10 us a request (measured in bench/serving: the serving thread's
    CPU per request rose by that much while the producer's threads used little themselves).
    The child reports delivered and failed request lines on its stdout; a reader thread adds
    them to the recorder's ``recorded`` and ``failed`` (``counts_deliveries``: a line counts as
    recorded once the broker has it, not when it enters the pipe). A dead child fails the
    write, which the recorder counts; the next batch starts a new one."""

    counts_deliveries = True

    def __init__(
        self,
        brokers: Sequence[str],
        topic: str,
        recorder: Recorder,
        message_bytes: int = 256 << 10,
        compression: str | None = None,
        client: str = "auto",
    ) -> None:
        if client not in CLIENTS:
            raise ValueError(f"MONITOR_KAFKA_CLIENT={client!r}: expected one of {CLIENTS}")
        self.topic = topic
        self.message_bytes = max(1, int(message_bytes))
        self._recorder = recorder
        config = json.dumps(
            {"brokers": list(brokers), "topic": topic, "compression": compression, "client": client}
        )
        self._child = subprocess.Popen(
            [sys.executable, "-u", os.path.abspath(__file__), "--ship", config],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        if hasattr(fcntl, "F_SETPIPE_SZ"):  # a whole message in the pipe at once (Linux)
            with contextlib.suppress(OSError):
                fcntl.fcntl(self._child.stdin, fcntl.F_SETPIPE_SZ, 1 << 20)
        self._reader = threading.Thread(target=self._read_status, daemon=True)
        self._reader.start()

    def _read_status(self) -> None:
        delivered = failed = 0
        for line in self._child.stdout:  # type: ignore[union-attr]
            try:
                ok, bad, detail = line.decode().rstrip("\n").split(" ", 2)
                ok_n, bad_n = int(ok), int(bad)
            except ValueError:
                continue
            if ok_n > delivered:
                self._recorder.count_delivered(ok_n - delivered)
                delivered = ok_n
            if bad_n > failed:
                self._recorder.count_failure(RuntimeError(detail), bad_n - failed)
                failed = bad_n

    def write(self, head: bytes, lines: list[bytes]) -> None:
        out = self._child.stdin
        i, n = 0, len(lines)
        while i < n:
            j, size = i, len(head)
            while j < n and (j == i or size + len(lines[j]) <= self.message_bytes):
                size += len(lines[j])
                j += 1
            out.write(_FRAME.pack(size, j - i))  # type: ignore[union-attr]
            out.write(head)  # type: ignore[union-attr]
            out.write(b"".join(lines[i:j]))  # type: ignore[union-attr]
            i = j
        out.flush()  # type: ignore[union-attr]

    def close(self) -> None:
        """The shipper flushes its producer and exits when its stdin closes."""
        with contextlib.suppress(OSError):
            self._child.stdin.close()  # type: ignore[union-attr]
        try:
            self._child.wait(20)
        except subprocess.TimeoutExpired:
            self._child.kill()
            self._child.wait()
        self._reader.join(5)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _ship(config: dict[str, Any]) -> None:
    """The shipper's loop: frames from stdin to the topic; a ``<delivered> <failed> <detail>``
    line (running totals, in request lines) on stdout after each delivery or failure."""
    topic = config["topic"]
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    lock = threading.Lock()
    counts = [0, 0]  # delivered, failed request lines

    def report(index: int, count: int, detail: str = "-") -> None:
        with lock:
            counts[index] += count
            line = f"{counts[0]} {counts[1]} {detail}".replace("\n", " ")
            stdout.write(line.encode() + b"\n")
            stdout.flush()

    producer = None
    while True:
        head = stdin.read(_FRAME.size)
        if len(head) < _FRAME.size:
            break  # the server closed the pipe: flush and exit
        size, count = _FRAME.unpack(head)
        value = stdin.read(size)
        try:
            if producer is None:
                producer = _producer(
                    config["brokers"], topic, config.get("compression"), config["client"]
                )
            producer.send(value, count, report)
        except Exception as exc:  # no broker within max_block_ms, a closed producer
            report(1, count, _describe(exc))
            producer = None
    if producer is not None:
        producer.close()


class Recorder:
    """A bounded queue of encoded requests and the thread that writes them to a sink.

    The thread wakes every ``flush_s`` (or when :meth:`flush`/:meth:`close` asks) and writes
    what is queued (at most ``batch`` requests a write) in one sink write: a few wake-ups a
    second, each a join of ready bytes, so its share of the serving core stays small."""

    def __init__(
        self,
        sink_factory: Any,
        features: Sequence[str] | None,
        model_version: str,
        max_queue: int = 10000,
        batch: int = 8192,
        flush_s: float = 0.2,
    ) -> None:
        self.features = list(features) if features else None
        self.model_version = model_version
        self._header = header(self.features)
        self._sink_factory = sink_factory
        self._sink: Any = None
        self._queue: deque[bytes] = deque()
        self._max = max(1, int(max_queue))
        self._batch = max(1, int(batch))
        self._flush_s = max(0.001, float(flush_s))
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.recorded = 0
        self.dropped = 0
        self.failed = 0
        self._last_log = 0.0
        self._busy = False
        self._thread = threading.Thread(target=self._run, name="model-monitor", daemon=True)
        self._thread.start()

    def set_features(self, features: Sequence[str] | None) -> None:
        """A hot-swapped model with other feature names: the new header goes in the queue, so
        the lines queued before it keep the old one."""
        self.features = list(features) if features else None
        self._queue.append(header(self.features))

    def record(
        self,
        request_id: Any,
        rows: Any,
        outputs: Any,
        probabilities: Any,
        latency_ms: float,
        open_times: Any = None,
    ) -> None:
        """Queue one request's predictions; never blocks, never raises."""
        if len(self._queue) >= self._max:
            self.dropped += 1
            return
        try:
            line = _line(
                (
                    request_id,
                    time.time_ns() // 1_000_000,
                    round(latency_ms, 4),
                    self.model_version,
                    rows,
                    outputs,
                    probabilities,
                    open_times,
                )
            )
        except Exception as exc:  # an odd output type: this request's records only are lost
            self.count_failure(exc)
            return
        self._queue.append(line)

    def stats(self) -> dict[str, int]:
        return {
            "recorded": self.recorded,
            "dropped": self.dropped,
            "failed": self.failed,
            "queued": len(self._queue),
        }

    def count_delivered(self, n: int) -> None:
        with self._lock:
            self.recorded += n

    def count_failure(self, exc: BaseException, n: int = 1) -> None:
        with self._lock:
            self.failed += n
        now = time.monotonic()
        if now - self._last_log > 10:  # a broken sink logs every 10 s, not per request
            self._last_log = now
            logger.warning("monitoring sink failed (%d requests so far): %r", self.failed, exc)

    def _take(self) -> list[bytes]:
        n = min(len(self._queue), self._batch)
        popleft = self._queue.popleft
        return [popleft() for _ in range(n)]  # only this thread pops: n are there

    def _run(self) -> None:
        while True:
            self._busy = True
            lines = self._take()
            if not lines:
                self._busy = False
                if self._stop.is_set():
                    break
                self._wake.wait(self._flush_s)
                self._wake.clear()
                continue
            start = 0
            for i, line in enumerate(lines):
                if line.startswith(_HEADER_START):  # set_features: a new header from here on
                    self._write(lines[start:i])
                    self._header, start = line, i + 1
            self._write(lines[start:])
        self._busy = False
        self._reset_sink()

    def _write(self, lines: list[bytes]) -> None:
        if not lines:
            return
        try:
            if self._sink is None:
                self._sink = self._sink_factory(self)
            self._sink.write(self._header, lines)
            if not getattr(self._sink, "counts_deliveries", False):
                self.count_delivered(len(lines))
        except Exception as exc:
            self.count_failure(exc, len(lines))
            self._reset_sink()

    def _reset_sink(self) -> None:
        sink, self._sink = self._sink, None  # made again for the next batch
        if sink is not None:
            try:
                sink.close()
            except Exception as exc:
                logger.warning("closing the monitoring sink failed: %r", exc)

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Write what is queued now; True when every queued request reached the sink."""
        deadline = time.monotonic() + timeout_s
        self._wake.set()
        while time.monotonic() < deadline:
            if not self._queue and not self._busy:
                time.sleep(0.01)  # the thread may have just taken the last entry
                if not self._queue and not self._busy:
                    return True
            self._wake.set()
            time.sleep(0.005)
        return False

    def close(self, timeout_s: float = 10.0) -> None:
        """Write what is queued, close the sink, stop the thread."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout_s)


def recorder_from_env(
    features: Sequence[str] | None, model_version: str, env: Any = None
) -> Recorder | None:
    """The recorder the environment asks for: Kafka when MONITOR_TOPIC and MONITOR_BROKERS are
    set, else JSONL when MONITOR_DIR is set, else None (monitoring off). MONITOR_QUEUE bounds
    the queue (requests), MONITOR_FLUSH_MS is how often the thread writes (default 200)."""
    env = os.environ if env is None else env
    topic = env.get("MONITOR_TOPIC")
    brokers = [b.strip() for b in (env.get("MONITOR_BROKERS") or "").split(",") if b.strip()]
    queue_size = int(env.get("MONITOR_QUEUE") or 10000)
    flush_s = float(env.get("MONITOR_FLUSH_MS") or 200) / 1000.0
    compression = env.get("MONITOR_COMPRESSION") or None
    if compression == "none":
        compression = None
    client = env.get("MONITOR_KAFKA_CLIENT") or "auto"
    if client not in CLIENTS:  # refused at start-up, not by every batch
        raise ValueError(f"MONITOR_KAFKA_CLIENT={client!r}: expected one of {CLIENTS}")
    if topic and brokers:
        return Recorder(
            lambda rec: KafkaSink(brokers, topic, rec, compression=compression, client=client),
            features,
            model_version,
            queue_size,
            flush_s=flush_s,
        )
    directory = env.get("MONITOR_DIR")
    if directory:
        rotate = int(float(env.get("MONITOR_ROTATE_MB") or 64) * (1 << 20))
        sink = JsonlSink(directory, rotate)  # made now: an unwritable directory fails init
        return Recorder(lambda rec: sink, features, model_version, queue_size, flush_s=flush_s)
    return None


# --- reading the stream back -----------------------------------------------------------------


def _p1(p: Any) -> float | None:
    """P(class 1) of one row's probability entry (class probabilities, or one number)."""
    if p is None:
        return None
    if isinstance(p, list | tuple):
        return None if not p or p[-1] is None else float(p[-1])
    return float(p)


def _records(features: Sequence[str] | None, item: list[Any]) -> Iterable[dict[str, Any]]:
    request_id, when, latency, version, rows, outputs, probabilities, open_times = item
    for i, row in enumerate(rows):
        names = features if features is not None else [str(j) for j in range(len(row))]
        yield {
            "features": dict(zip(names, row, strict=False)),
            "probability": None if probabilities is None else _p1(probabilities[i]),
            "prediction": outputs[i],
            "model_version": version,
            "open_time": None if open_times is None else open_times[i],
            "request_id": None if request_id is None else str(request_id),
            "latency_ms": latency,
            "time": when,
        }


def expand(value: bytes | str) -> list[dict[str, Any]]:
    """The prediction records of a stream chunk (a JSONL file's whole lines, or one Kafka
    message): version-2 request lines after their header become one record per row; 1.2's
    one-record lines pass through. Lines that are neither (or not JSON) are skipped."""
    out: list[dict[str, Any]] = []
    features: Sequence[str] | None = None
    seen_header = False
    for line in value.splitlines():
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict):
            if item.get("predictions") == STREAM_VERSION:
                features, seen_header = item.get("features"), True
            else:
                out.append(item)  # a 1.2 record
        elif isinstance(item, list) and seen_header and len(item) == 8:
            try:
                out.extend(_records(features, item))
            except (TypeError, IndexError, ValueError):
                continue  # a malformed request line loses that line only
    return out


def read_jsonl(directory: str | Path) -> list[dict[str, Any]]:
    """Every record of a JSONL sink's directory, file by file in name order (for
    model_monitor: ``records_frame(read_jsonl(dir))`` is its table of predictions)."""
    out: list[dict[str, Any]] = []
    for path in sorted(Path(directory).glob("predictions-*.jsonl")):
        data = path.read_bytes()
        end = data.rfind(b"\n")  # a line still being written is not read
        if end >= 0:
            out.extend(expand(data[: end + 1]))
    return out


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--ship":
    _ship(json.loads(sys.argv[2]))
