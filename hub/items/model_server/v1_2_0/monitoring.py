"""model_server 1.2.0: every prediction recorded to a monitoring sink, off the request path.

A request hands :meth:`Recorder.record` one tuple (request id, time, rows, outputs,
probabilities, latency, open times); that is an append to a bounded deque, nothing is copied or
serialized on the request path. A background thread wakes every ``MONITOR_FLUSH_MS`` (default
200), takes everything queued, turns each row into one record in hub://model_monitor's format::

    {"features": {name: value}, "probability": P(class 1) | null, "prediction": output,
     "model_version": "...", "open_time": ms | null, "request_id": "...", "latency_ms": ...,
     "time": ms since the epoch}

and writes them to the sink in one write:

- :class:`KafkaSink` (``MONITOR_TOPIC`` + ``MONITOR_BROKERS``): a kafka-python producer,
  asynchronous sends, each message value a JSON Lines batch of records (up to 256 KiB; one
  record is a one-line batch); failed deliveries are counted (per record) and logged;
- :class:`JsonlSink` (``MONITOR_DIR``): JSON Lines files ``predictions-<pid>-<start>-<n>.jsonl``
  in that directory, a new file once one reaches ``MONITOR_ROTATE_MB`` (default 64).

A full queue drops the request's records and counts them; a sink that raises is counted and
logged, never raised: monitoring never fails or slows a request. ``stats()`` gives the counters.
:func:`read_jsonl` reads a JSONL sink's directory back as records for model_monitor.
"""

from __future__ import annotations

import json
import logging
import math
import operator
import os
import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# (request id, time.time(), rows in feature order, outputs, probabilities or None, latency ms,
#  open times or None): references to what the request already holds, nothing copied.
Entry = tuple[Any, float, Any, list[Any], Any, float, Any]


try:  # tickrun's own dependency; ~10x faster than json, and NaN/inf become null
    import orjson

    _NUMPY = orjson.OPT_SERIALIZE_NUMPY

    def _row_json(row: Any) -> bytes | None:
        """``[v1,v2,…]`` of one row, as orjson writes each value in a record."""
        out: bytes = orjson.dumps(row, default=str, option=_NUMPY)
        return out

    def _dumps(record: dict[str, Any]) -> bytes:
        line: bytes = orjson.dumps(
            record, default=str, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE
        )
        return line

except ImportError:  # an exported copy run elsewhere

    def _row_json(row: Any) -> bytes | None:
        return None  # no fast path: records are built as dicts

    def _dumps(record: dict[str, Any]) -> bytes:
        # Strict JSON as orjson writes it: a NaN/inf feature is null (read back as NaN).
        feats = record["features"]
        record["features"] = {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in feats.items()
        }
        return json.dumps(record, default=str).encode() + b"\n"


_newlines = operator.methodcaller("count", b"\n")
_TAIL = len(b'{"features":null,')  # what a record with features=None starts with


def _p1(p: Any) -> float:
    """P(class 1) of one row's probabilities (a list/array of class probabilities, or one)."""
    if isinstance(p, (list, tuple)):  # the usual [P(0), P(1)]; an exception costs ~1 us
        return float(p[-1])
    try:
        return float(p)
    except TypeError:  # an array of class probabilities
        return float(p[-1])


class JsonlSink:
    """Records appended to rotated JSON Lines files in ``directory``."""

    def __init__(self, directory: str | Path, rotate_bytes: int = 64 << 20) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.rotate_bytes = max(1, int(rotate_bytes))
        self._stem = f"predictions-{os.getpid()}-{int(time.time() * 1000)}"
        self._index = 0
        self._file: Any = None
        self._size = 0

    def _open(self) -> None:
        self._index += 1
        path = self.directory / f"{self._stem}-{self._index:05d}.jsonl"
        self._file = path.open("ab")
        self._size = 0

    def write(self, lines: list[bytes]) -> None:
        i, n = 0, len(lines)
        while i < n:
            if self._file is None or self._size >= self.rotate_bytes:
                self.close()
                self._open()
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


class KafkaSink:
    """Records produced to ``topic``, many to a message: each value is a JSON Lines batch of up
    to ``message_bytes`` (one record is a one-line batch; model_monitor reads both). A send per
    record cost the producer ~20 us of Python a record, more than encoding it."""

    def __init__(
        self,
        brokers: Sequence[str],
        topic: str,
        recorder: Recorder,
        message_bytes: int = 256 << 10,
    ) -> None:
        from kafka import KafkaProducer

        self.topic = topic
        self.message_bytes = max(1, int(message_bytes))
        self._recorder = recorder
        self.producer = KafkaProducer(
            bootstrap_servers=list(brokers),
            linger_ms=50,
            batch_size=1 << 20,
            max_request_size=4 << 20,
            acks=1,
            max_block_ms=5000,  # a down broker blocks this thread only, and not for long
            bootstrap_timeout_ms=5000,
            retries=3,
        )

    def write(self, lines: list[bytes]) -> None:
        i, n = 0, len(lines)
        while i < n:
            j, size = i, 0
            while j < n and (j == i or size + len(lines[j]) <= self.message_bytes):
                size += len(lines[j])
                j += 1
            value = b"".join(lines[i:j])
            count = value.count(b"\n")  # an item is one request's records
            future = self.producer.send(self.topic, value)
            future.add_errback(lambda exc, count=count: self._recorder.count_failure(exc, count))
            i = j

    def close(self) -> None:
        self.producer.flush(timeout=10)
        self.producer.close(timeout=10)


class Recorder:
    """A bounded queue of predictions and the thread that writes them to a sink.

    A small request (up to ``inline_rows`` rows, the usual one-row call) is encoded on the
    request path (~3 us a record with orjson) and queued as one ``bytes``; a bigger one is
    queued as a tuple of references and encoded by the thread. Measured in bench/serving, the
    queued references cost more than encoding them: ~6 container objects a request, kept alive
    for the flush interval, survive the young GC generations and make the interpreter run full
    collections over the whole heap (models and libraries) several times a second. Bytes are
    not tracked by the GC. Either way an append to a ``deque`` (atomic under the GIL, no lock).

    The thread wakes every ``flush_s`` (or when :meth:`flush`/:meth:`close` asks), takes what
    is queued (at most ``batch`` requests a write) and hands it to the sink in one write: a
    few wake-ups a second, not one per few dozen records (each takes the GIL from the request
    loop, two thread switches)."""

    def __init__(
        self,
        sink_factory: Any,
        features: Sequence[str] | None,
        model_version: str,
        max_queue: int = 10000,
        batch: int = 8192,
        flush_s: float = 0.2,
        inline_rows: int = 32,
    ) -> None:
        self.features = list(features) if features else None
        self.model_version = model_version
        self._sink_factory = sink_factory
        self._sink: Any = None
        self._queue: deque[bytes | Entry] = deque()
        self._width = len(self.features or ())
        self._template: bytes | None = None
        if self.features and _row_json([0]) is not None:
            keys = (
                json.dumps(str(n), ensure_ascii=False).encode().replace(b"%", b"%%")
                for n in self.features
            )
            self._template = b'{"features":{' + b",".join(k + b":%b" for k in keys) + b"},"
        self._inline = int(inline_rows)
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

    def record(
        self,
        request_id: Any,
        rows: Any,
        outputs: list[Any],
        probabilities: Any,
        latency_ms: float,
        open_times: Any = None,
    ) -> None:
        """Queue one request's predictions; never blocks, never raises."""
        if len(self._queue) >= self._max:
            self.dropped += 1
            return
        entry = (request_id, time.time(), rows, outputs, probabilities, latency_ms, open_times)
        try:
            if len(rows) <= self._inline:
                self._queue.append(b"".join(self.encode(entry)))
                return
        except Exception as exc:  # an odd output type: this request's records only are lost
            self.count_failure(exc)
            return
        self._queue.append(entry)

    def stats(self) -> dict[str, int]:
        return {
            "recorded": self.recorded,
            "dropped": self.dropped,
            "failed": self.failed,
            "queued": len(self._queue),
        }

    def count_failure(self, exc: BaseException, n: int = 1) -> None:
        with self._lock:
            self.failed += n
        now = time.monotonic()
        if now - self._last_log > 10:  # a broken sink logs every 10 s, not per record
            self._last_log = now
            logger.warning("monitoring sink failed (%d records so far): %r", self.failed, exc)

    def encode(self, entry: Entry) -> list[bytes]:
        """One JSON line per row of the entry.

        With feature names, the ``features`` object is not built as a dict: the row is written
        as a JSON array by orjson (the same value text a dict would get) and its values are
        put in a template of the names, ``{"features":{"a":%b,"b":%b,…},`` — half the cost of
        a dict per record (measured: ~6.5 -> ~3 us for 27 features). A row whose array does
        not split into one value per name (a string value holding a comma) takes the dict."""
        request_id, at, rows, outputs, probabilities, latency_ms, open_times = entry
        names = self.features
        template = self._template
        rid = None if request_id is None else str(request_id)
        latency = round(latency_ms, 4)
        when = int(at * 1000)
        lines = []
        for i, row in enumerate(rows):
            rec = {
                "features": None,
                "probability": None if probabilities is None else _p1(probabilities[i]),
                "prediction": outputs[i],
                "model_version": self.model_version,
                "open_time": None if open_times is None else open_times[i],
                "request_id": rid,
                "latency_ms": latency,
                "time": when,
            }
            if template is not None:
                array = _row_json(row)
                if array is not None:
                    values = array[1:-1].split(b",")
                    if len(values) == self._width:
                        # rec's own text after "features":null, → the record's other fields
                        lines.append(template % tuple(values) + _dumps(rec)[_TAIL:])
                        continue
            rec["features"] = (
                dict(zip(names, row, strict=False))
                if names is not None
                else {str(j): v for j, v in enumerate(row)}
            )
            lines.append(_dumps(rec))
        return lines

    def _take(self) -> list[bytes | Entry]:
        n = min(len(self._queue), self._batch)
        popleft = self._queue.popleft
        return [popleft() for _ in range(n)]  # only this thread pops: n are there

    def _run(self) -> None:
        while True:
            self._busy = True
            entries = self._take()
            if not entries:
                self._busy = False
                if self._stop.is_set():
                    break
                self._wake.wait(self._flush_s)
                self._wake.clear()
                continue
            lines: list[bytes] = []
            for entry in entries:
                if isinstance(entry, bytes):
                    lines.append(entry)
                    continue
                try:
                    lines.append(b"".join(self.encode(entry)))
                except Exception as exc:  # an odd output type: that entry only is lost
                    self.count_failure(exc)
            count = sum(map(_newlines, lines))  # an item holds one request's records
            try:
                if self._sink is None:
                    self._sink = self._sink_factory(self)
                self._sink.write(lines)
                self.recorded += count
            except Exception as exc:
                self.count_failure(exc, count)
                self._reset_sink()
        self._busy = False
        self._reset_sink()

    def _reset_sink(self) -> None:
        sink, self._sink = self._sink, None  # made again for the next batch
        if sink is not None:
            try:
                sink.close()
            except Exception as exc:
                logger.warning("closing the monitoring sink failed: %r", exc)

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Write what is queued now; True when every queued prediction reached the sink."""
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
    if topic and brokers:
        return Recorder(
            lambda rec: KafkaSink(brokers, topic, rec),
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


def read_jsonl(directory: str | Path) -> list[dict[str, Any]]:
    """Every record of a JSONL sink's directory, file by file in name order (for
    model_monitor: ``records_frame(read_jsonl(dir))`` is its table of predictions)."""
    out: list[dict[str, Any]] = []
    for path in sorted(Path(directory).glob("predictions-*.jsonl")):
        with path.open("rb") as f:
            for line in f:
                if line.strip():
                    out.append(json.loads(line))
    return out
