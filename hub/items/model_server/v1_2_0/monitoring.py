"""model_server 1.2.0: every prediction recorded to a monitoring sink, off the request path.

A request hands :meth:`Recorder.record` one tuple (request id, time, rows, outputs,
probabilities, latency, open times); that is an append to a bounded deque, nothing is
serialized on the request path. A background thread drains the queue in batches, turns each row
into one record in hub://model_monitor's format::

    {"features": {name: value}, "probability": P(class 1) | null, "prediction": output,
     "model_version": "...", "open_time": ms | null, "request_id": "...", "latency_ms": ...,
     "time": ms since the epoch}

and writes them to the sink:

- :class:`KafkaSink` (``MONITOR_TOPIC`` + ``MONITOR_BROKERS``): a kafka-python producer,
  asynchronous sends batched by ``linger_ms``; failed deliveries are counted and logged;
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
import os
import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# (request id, time ms, rows in feature order, outputs, probabilities or None, latency ms,
#  open times or None)
Entry = tuple[Any, int, Any, list[Any], Any, float, Any]


try:  # tickrun's own dependency; ~10x faster than json, and NaN/inf become null
    import orjson

    def _dumps(record: dict[str, Any]) -> bytes:
        line: bytes = orjson.dumps(
            record, default=str, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE
        )
        return line

except ImportError:  # an exported copy run elsewhere

    def _dumps(record: dict[str, Any]) -> bytes:
        # Strict JSON as orjson writes it: a NaN/inf feature is null (read back as NaN).
        feats = record["features"]
        record["features"] = {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in feats.items()
        }
        return json.dumps(record, default=str).encode() + b"\n"


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
        for line in lines:
            if self._file is None or self._size >= self.rotate_bytes:
                self.close()
                self._open()
            self._file.write(line)
            self._size += len(line)
        if self._file is not None:
            self._file.flush()  # readable by a monitor job as soon as a batch is written

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class KafkaSink:
    """Records produced to ``topic``; the producer batches them (``linger_ms``)."""

    def __init__(self, brokers: Sequence[str], topic: str, recorder: Recorder) -> None:
        from kafka import KafkaProducer

        self.topic = topic
        self._recorder = recorder
        self.producer = KafkaProducer(
            bootstrap_servers=list(brokers),
            linger_ms=20,
            batch_size=256 << 10,
            acks=1,
            max_block_ms=5000,  # a down broker blocks this thread only, and not for long
            bootstrap_timeout_ms=5000,
            retries=3,
        )

    def _failed(self, exc: BaseException) -> None:
        self._recorder.count_failure(exc)

    def write(self, lines: list[bytes]) -> None:
        for line in lines:
            self.producer.send(self.topic, line.rstrip(b"\n")).add_errback(self._failed)

    def close(self) -> None:
        self.producer.flush(timeout=10)
        self.producer.close(timeout=10)


class Recorder:
    """A bounded queue of predictions and the thread that writes them to a sink.

    The queue is a ``deque``: an append is atomic under the GIL and costs a fraction of a
    ``queue.Queue.put`` (no lock, no condition to notify), which matters at ~100 µs a request.
    The thread polls it every ``poll_s`` when idle, so records reach the sink within that."""

    def __init__(
        self,
        sink_factory: Any,
        features: Sequence[str] | None,
        model_version: str,
        max_queue: int = 10000,
        batch: int = 64,
        poll_s: float = 0.02,
    ) -> None:
        self.features = list(features) if features else None
        self.model_version = model_version
        self._sink_factory = sink_factory
        self._sink: Any = None
        self._queue: deque[Entry] = deque()
        self._max = max(1, int(max_queue))
        self._batch = max(1, int(batch))
        self._poll_s = poll_s
        self._lock = threading.Lock()
        self._stop = threading.Event()
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
        self._queue.append(
            (
                request_id,
                int(time.time() * 1000),
                rows,
                outputs,
                probabilities,
                latency_ms,
                open_times,
            )
        )

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
        request_id, at, rows, outputs, probabilities, latency_ms, open_times = entry
        names = self.features
        rid = None if request_id is None else str(request_id)
        latency = round(latency_ms, 4)
        lines = []
        for i, row in enumerate(rows):
            feats = (
                dict(zip(names, row, strict=False))
                if names is not None
                else {str(j): v for j, v in enumerate(row)}
            )
            proba = None
            if probabilities is not None:
                p = probabilities[i]
                proba = float(p[-1]) if isinstance(p, list | tuple) else float(p)
            rec = {
                "features": feats,
                "probability": proba,
                "prediction": outputs[i],
                "model_version": self.model_version,
                "open_time": None if open_times is None else open_times[i],
                "request_id": rid,
                "latency_ms": latency,
                "time": at,
            }
            lines.append(_dumps(rec))
        return lines

    def _take(self) -> list[Entry]:
        entries: list[Entry] = []
        popleft = self._queue.popleft
        while len(entries) < self._batch:
            try:
                entries.append(popleft())
            except IndexError:
                break
        return entries

    def _run(self) -> None:
        while True:
            self._busy = True
            entries = self._take()
            if not entries:
                self._busy = False
                if self._stop.wait(self._poll_s) and not self._queue:
                    break
                continue
            lines: list[bytes] = []
            for entry in entries:
                try:
                    lines.extend(self.encode(entry))
                except Exception as exc:  # an odd output type: that entry only is lost
                    self.count_failure(exc)
            try:
                if self._sink is None:
                    self._sink = self._sink_factory(self)
                self._sink.write(lines)
                self.recorded += len(lines)
                # Hand the GIL back between short batches: the request loop waits at most one
                # batch (~0.3 ms) for it, not the interpreter's 5 ms switch interval.
                time.sleep(0)
            except Exception as exc:
                self.count_failure(exc, len(lines))
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
        """Wait until every queued prediction was handed to the sink; True when done."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self._queue and not self._busy:
                time.sleep(self._poll_s)  # the thread may have just taken the last entry
                if not self._queue and not self._busy:
                    return True
            time.sleep(0.005)
        return False

    def close(self, timeout_s: float = 10.0) -> None:
        """Write what is queued, close the sink, stop the thread."""
        self._stop.set()
        self._thread.join(timeout_s)


def recorder_from_env(
    features: Sequence[str] | None, model_version: str, env: Any = None
) -> Recorder | None:
    """The recorder the environment asks for: Kafka when MONITOR_TOPIC and MONITOR_BROKERS are
    set, else JSONL when MONITOR_DIR is set, else None (monitoring off)."""
    env = os.environ if env is None else env
    topic = env.get("MONITOR_TOPIC")
    brokers = [b.strip() for b in (env.get("MONITOR_BROKERS") or "").split(",") if b.strip()]
    queue_size = int(env.get("MONITOR_QUEUE") or 10000)
    if topic and brokers:
        return Recorder(
            lambda rec: KafkaSink(brokers, topic, rec), features, model_version, queue_size
        )
    directory = env.get("MONITOR_DIR")
    if directory:
        rotate = int(float(env.get("MONITOR_ROTATE_MB") or 64) * (1 << 20))
        sink = JsonlSink(directory, rotate)  # made now: an unwritable directory fails init
        return Recorder(lambda rec: sink, features, model_version, queue_size)
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
