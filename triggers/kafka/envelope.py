"""The dead-letter envelope: what goes to the dead-letter topic when a record cannot go as is.

A record bigger than the dead-letter topic takes, one the broker refuses, or one the client
cannot even read (a corrupt batch, a header name that is not UTF-8) would otherwise be retried
forever and hold back every record behind it on its partition. Instead the dead-letter topic
gets a small JSON document that says where the record was and why it failed, and the partition
moves on. The original value is not in it (only its first bytes); the key and headers are, cut
to a bound, so the record can be found again in its source partition by topic and offset::

    {"envelope": "tickrun.kafka.dead-letter/v1", "reason": "too-large",
     "topic": "klines", "partition": 0, "offset": 41, "timestamp": 1700000000000,
     "size": 5242880, "record_size": 5242990,
     "key": {"size": 7, "text": "BTCUSDT", "truncated": false},
     "value": {"size": 5242880, "text": "[[1700000000000, 42298.61, ...", "truncated": true},
     "headers": [{"name": "source", "size": 4, "text": "feed", "truncated": false}],
     "headers_truncated": false,
     "error": "ValueError: ...", "dead_letter_error": "...", "attempts": 4,
     "function": "signals", "consumer_group": "g", "failed_at": "2026-12-04T16:55:28.921+00:00"}

``reason`` is ``too-large`` (for the topic, the producer or the broker), ``refused`` (the
dead-letter topic kept failing it for another reason) or ``unreadable`` (the client could not
decode it; then only topic, partition and offset are known). Byte strings are ``{"size",
"text" | "base64", "truncated"}``: ``text`` when the kept bytes are UTF-8, else ``base64``.
The envelope record carries the original key when that is small (so the dead-letter topic
keeps the key's partitioning), ``content-type: application/json`` and the same
``x-tickrun-*`` headers as a record dead-lettered as is, plus ``x-tickrun-envelope`` (the
reason).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

from .event import DLQ_PREFIX

SCHEMA = "tickrun.kafka.dead-letter/v1"
KIND_HEADER = DLQ_PREFIX + "envelope"
# Bounds of the parts copied from the record: the envelope stays tens of KB at most.
HEAD_BYTES = 1024  # of the value and of the key
HEADER_VALUE_BYTES = 512
HEADER_NAME_CHARS = 256
MAX_HEADERS = 32
# The key goes on the envelope record too when it is at most this big.
RECORD_KEY_BYTES = 1024
# The envelope is kept under the dead-letter topic's limit minus this (the record's headers).
HEADROOM_BYTES = 4096
MAX_ENVELOPE_BYTES = 64 * 1024


def _bytes_field(data: bytes, limit: int) -> dict[str, Any]:
    kept = data[:limit]
    out: dict[str, Any] = {"size": len(data)}
    try:
        out["text"] = kept.decode("utf-8")
    except UnicodeDecodeError as exc:
        if len(kept) < len(data) and exc.start >= len(kept) - 3:
            # The cut split a multi-byte character: keep the text before it.
            kept = kept[: exc.start]
            try:
                out["text"] = kept.decode("utf-8")
            except UnicodeDecodeError:
                out["base64"] = base64.b64encode(kept).decode("ascii")
        else:
            out["base64"] = base64.b64encode(kept).decode("ascii")
    out["truncated"] = len(kept) < len(data)
    return out


def _headers_field(headers: Any) -> tuple[list[dict[str, Any]], bool]:
    items = list(headers or ())
    out = []
    for name, raw in items[:MAX_HEADERS]:
        entry = {"name": str(name)[:HEADER_NAME_CHARS]}
        entry.update(_bytes_field(raw or b"", HEADER_VALUE_BYTES))
        out.append(entry)
    return out, len(items) > MAX_HEADERS


def envelope_document(
    record: Any,
    *,
    reason: str,
    error: str,
    dead_letter_error: str,
    attempts: int,
    function: str,
    group: str,
    size: int | None,
    record_size: int | None,
    full: bool = True,
) -> dict[str, Any]:
    """The envelope as a dict (``full=False``: without key, value head and headers)."""
    doc: dict[str, Any] = {
        "envelope": SCHEMA,
        "reason": reason,
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": record.timestamp,
        "size": size,
        "record_size": record_size,
    }
    key, value = record.key, record.value
    if full:
        doc["key"] = _bytes_field(key, HEAD_BYTES) if key is not None else None
        doc["value"] = _bytes_field(value, HEAD_BYTES) if value is not None else None
        doc["headers"], doc["headers_truncated"] = _headers_field(record.headers)
    else:
        doc["key"] = {"size": len(key), "omitted": True} if key is not None else None
        doc["value"] = {"size": len(value), "omitted": True} if value is not None else None
        doc["headers"], doc["headers_truncated"] = [], bool(record.headers)
    doc.update(
        error=error,
        dead_letter_error=dead_letter_error,
        attempts=attempts,
        function=function,
        consumer_group=group,
        failed_at=dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
    )
    return doc


def envelope_value(budget_bytes: int, **fields: Any) -> bytes:
    """The envelope's JSON bytes, within ``budget_bytes`` when at all possible: the key, value
    head and headers are dropped when the full form does not fit."""
    limit = max(min(budget_bytes - HEADROOM_BYTES, MAX_ENVELOPE_BYTES), 0)
    data = json.dumps(envelope_document(**fields), ensure_ascii=False).encode("utf-8")
    if len(data) > limit:
        short = envelope_document(**fields, full=False)
        data = json.dumps(short, ensure_ascii=False).encode("utf-8")
    return data


def envelope_key(key: bytes | None) -> bytes | None:
    return key if key is not None and len(key) <= RECORD_KEY_BYTES else None


def envelope_headers(meta: list[tuple[str, bytes]], reason: str) -> list[tuple[str, bytes]]:
    """The envelope record's headers: ``meta`` (the ``x-tickrun-*`` ones) and its kind."""
    return [
        ("content-type", b"application/json"),
        (KIND_HEADER, reason.encode("utf-8")),
        *meta,
    ]
