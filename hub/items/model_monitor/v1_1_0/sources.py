"""model_monitor 1.1.0: where prediction records come from and where alerts go.

- :func:`read_predictions`: every JSON record of a Kafka topic from its start to its current
  end (kafka-python, as paper_trader's report job reads its pnl topic; a message is one record,
  a JSON Lines batch of them, or model_server 1.3's compact stream: :func:`message_records`),
  flattened by :func:`records_frame`: ``{"features": {...}, "probability", "prediction",
  "model_version", "open_time", …}`` → one row with the feature columns beside the others.
- :func:`post_webhook`: an HTTP POST of the alert as JSON with a timeout; a failure is returned
  (and logged by the caller), never raised, so a down webhook does not fail the monitor run.
- :func:`publish`: the alert as one JSON record on a Kafka topic.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from typing import Any

import pandas as pd

logger = logging.getLogger(__name__)


def broker_list(brokers: str | None, env: str | None) -> list[str]:
    raw = brokers or env or ""
    return [b.strip() for b in raw.split(",") if b.strip()]


def read_predictions(
    brokers: list[str], topic: str, timeout_s: float = 30.0
) -> list[dict[str, Any]]:
    """The JSON object records of ``topic`` from its start to its end when read (non-JSON
    records are skipped). A topic that does not exist is a ValueError."""
    from kafka import KafkaConsumer
    from kafka.structs import TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=brokers, enable_auto_commit=False, consumer_timeout_ms=500
    )
    records: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    try:
        partitions = consumer.partitions_for_topic(topic)
        while not partitions and time.monotonic() < deadline:
            time.sleep(0.2)
            partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise ValueError(f"topic {topic!r} does not exist")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        while any(consumer.position(tp) < end[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic!r} took longer than {timeout_s}s")
            for batch in consumer.poll(timeout_ms=500).values():
                for rec in batch:
                    records.extend(message_records(rec.value))
    finally:
        consumer.close()
    return records


def read_jsonl_dir(directory: str) -> list[dict[str, Any]]:
    """Every JSON object record of model_server's JSONL sink directory (``MONITOR_DIR``):
    ``*.jsonl`` files in name order (model_server names them by process, start time and
    sequence), one record a line; a line still being written (no newline yet) or not JSON is
    skipped. A missing directory is a ValueError."""
    from pathlib import Path

    root = Path(directory)
    if not root.is_dir():
        raise ValueError(f"predictions_dir {directory!r} is not a directory")
    out: list[dict[str, Any]] = []
    for path in sorted(root.glob("*.jsonl")):
        data = path.read_bytes()
        end = data.rfind(b"\n")
        if end >= 0:
            out.extend(message_records(data[: end + 1]))
    return out


STREAM_VERSION = 2  # model_server 1.3's compact predictions stream


def _p1(p: Any) -> float | None:
    """P(class 1) of one row's probability entry (class probabilities, or one number)."""
    if p is None:
        return None
    if isinstance(p, list | tuple):
        return None if not p or p[-1] is None else float(p[-1])
    return float(p)


def _request_records(features: Any, item: list[Any]) -> list[dict[str, Any]]:
    """One record per row of a version-2 request line."""
    request_id, when, latency, version, rows, outputs, probabilities, open_times = item
    out = []
    for i, row in enumerate(rows):
        names = features if features is not None else [str(j) for j in range(len(row))]
        out.append(
            {
                "features": dict(zip(names, row, strict=False)),
                "probability": None if probabilities is None else _p1(probabilities[i]),
                "prediction": outputs[i],
                "model_version": version,
                "open_time": None if open_times is None else open_times[i],
                "request_id": None if request_id is None else str(request_id),
                "latency_ms": latency,
                "time": when,
            }
        )
    return out


def message_records(value: Any) -> list[dict[str, Any]]:
    """The prediction records of one message value or JSONL chunk: one JSON record, a JSON
    Lines batch of them (model_server 1.2), or model_server 1.3's compact stream (a header
    ``{"predictions": 2, "features": [...]}`` then one line per request, expanded to a record
    per row). Lines that are none of these are skipped; a malformed request line loses only
    itself."""
    if value is None or not isinstance(value, bytes | str):
        return []
    try:
        one = json.loads(value)
    except ValueError:
        pass  # not one record: lines
    else:
        return [one] if isinstance(one, dict) and "predictions" not in one else []
    out: list[dict[str, Any]] = []
    features: Any = None
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
                out.append(item)
        elif isinstance(item, list) and seen_header and len(item) == 8:
            try:
                out.extend(_request_records(features, item))
            except (TypeError, IndexError, ValueError):
                continue
    return out


def records_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Prediction records → a table: the ``features`` mapping's keys as columns (a null
    feature becomes NaN) beside the record's other scalar fields, sorted by ``open_time``
    when every row has one."""
    rows = []
    for rec in records:
        feats = rec.get("features")
        row = {k: v for k, v in rec.items() if k != "features" and not isinstance(v, dict | list)}
        if isinstance(feats, dict):
            row.update({str(k): (float("nan") if v is None else v) for k, v in feats.items()})
        rows.append(row)
    frame = pd.DataFrame(rows)
    if "open_time" in frame.columns and frame["open_time"].notna().all():
        frame = frame.sort_values("open_time", kind="stable").reset_index(drop=True)
    return frame


def post_webhook(url: str, payload: dict[str, Any], timeout_s: float = 5.0) -> tuple[bool, str]:
    """(delivered, detail): POST ``payload`` as JSON; a 2xx status is delivered."""
    if not url.startswith(("http://", "https://")):
        return False, f"not an http(s) URL: {url!r}"
    body = json.dumps(payload, default=str).encode()
    req = urllib.request.Request(  # noqa: S310 (http(s) only, checked above)
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310 (checked above)
            status = int(resp.status)
    except urllib.error.HTTPError as err:
        return False, f"HTTP {err.code}"
    except (OSError, ValueError) as err:  # refused, timed out, bad host
        return False, f"{type(err).__name__}: {err}"
    return 200 <= status < 300, f"HTTP {status}"


def publish(
    brokers: list[str], topic: str, payload: dict[str, Any], timeout_s: float = 10.0
) -> tuple[bool, str]:
    """(delivered, detail): ``payload`` as one JSON record on ``topic``."""
    try:
        from kafka import KafkaProducer

        producer = KafkaProducer(
            bootstrap_servers=brokers, request_timeout_ms=int(timeout_s * 1000)
        )
        try:
            meta = producer.send(topic, json.dumps(payload, default=str).encode()).get(
                timeout=timeout_s
            )
        finally:
            producer.close(timeout=timeout_s)
    except Exception as err:  # any client failure is reported, not raised
        return False, f"{type(err).__name__}: {err}"
    return True, f"{topic}[{meta.partition}]@{meta.offset}"
