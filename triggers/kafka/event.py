"""Kafka records ↔ nuclio-sdk events, and the dead-letter record of a failed event.

Body decoding rule (the same outcome as the HTTP trigger for JSON, without guessing at other
payloads):

- a ``content-type`` record header decides when present: ``application/json`` (or any
  ``+json`` type) is JSON-decoded, anything else stays ``bytes``;
- without that header, a value whose first non-blank byte is ``{`` or ``[`` and that parses as
  JSON is decoded (market-data producers rarely set headers); every other value, including JSON
  scalars such as ``42`` or ``"x"``, stays ``bytes`` so a numeric id is never turned into an int;
- a value that fails to parse (including JSON nested too deep for the parser) stays ``bytes``;
  an empty or null value is ``b""``.

``event.content_type`` is the header's value, else ``application/json`` for decoded bodies and
``application/octet-stream`` for the rest.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from nuclio_sdk import Event, TriggerInfo

from tickrun.functions import jsonbody

KIND = "kafka-cluster"
JSON = "application/json"
OCTETS = "application/octet-stream"

# Headers tickrun adds to a dead-lettered record (prefixed so they never clash with the
# producer's own headers).
DLQ_PREFIX = "x-tickrun-"

_JSON_START = frozenset(b"{[")
_BLANK = b" \t\r\n"
_BLANK_BYTES = frozenset(_BLANK)


def _header_value(raw: bytes | None) -> str | bytes:
    if raw is None:
        return ""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


def decode_headers(headers: Sequence[tuple[str, bytes | None]] | None) -> dict[str, str | bytes]:
    """Record headers as a dict; UTF-8 values become ``str``, others stay ``bytes``."""
    return {k: _header_value(v) for k, v in headers or ()}


def decode_value(value: bytes | None, content_type: str | None) -> tuple[Any, str]:
    """The event body and content type for a record value (see the module docstring)."""
    if not value:
        return b"", content_type or OCTETS
    if content_type is not None:
        base = content_type.split(";", 1)[0].strip().lower()
        if base == JSON or base.endswith("+json"):
            try:
                return jsonbody.loads(value), content_type
            except (ValueError, RecursionError):  # RecursionError: nesting json gives up on
                return value, content_type
        return value, content_type
    first = value[0]
    if first in _BLANK_BYTES:
        stripped = value.lstrip(_BLANK)
        first = stripped[0] if stripped else 0
    if first in _JSON_START:
        try:
            return jsonbody.loads(value), JSON
        except (ValueError, RecursionError):
            return value, OCTETS
    return value, OCTETS


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def timestamp_utc(timestamp_ms: int | None) -> dt.datetime:
    """A record timestamp (ms since the epoch) as an aware UTC datetime, ms precision kept."""
    if timestamp_ms is None or timestamp_ms < 0:
        return dt.datetime.now(dt.UTC)
    # One timedelta addition: exact for milliseconds, and 3x cheaper than fromtimestamp().
    return _EPOCH + dt.timedelta(milliseconds=timestamp_ms)


def event_id(topic: str, partition: int, offset: int) -> str:
    return f"{topic}/{partition}/{offset}"


class _Once:
    """An attribute computed from the record on first read, then a plain (settable) one.

    A non-data descriptor: the value lands in the instance dict, which shadows it afterwards.
    """

    __slots__ = ("compute", "name")

    def __init__(self, compute: Any) -> None:
        self.compute = compute
        self.name = compute.__name__

    def __get__(self, event: Any, owner: type | None = None) -> Any:
        if event is None:
            return self
        return event.__dict__.setdefault(self.name, self.compute(event))


class _Field:
    """A record field, read through on each access: copying six of them into every event
    cost more than the rest of building it (most handlers read one or two). Settable like
    a plain attribute: a value set on the event shadows it (a non-data descriptor)."""

    __slots__ = ("attr",)

    def __init__(self, attr: str) -> None:
        self.attr = attr

    def __get__(self, event: Any, owner: type | None = None) -> Any:
        if event is None:
            return self
        return getattr(event._record, self.attr)


def _decode(event: KafkaEvent) -> tuple[Any, str]:
    record = event._record
    if not record.headers:  # the common case: no header lookup (and no headers dict) needed
        return decode_value(record.value, None)
    ctype = event.headers.get("content-type")
    return decode_value(record.value, ctype if isinstance(ctype, str) else None)


class KafkaEvent(Event):  # type: ignore[misc]
    """A nuclio-sdk ``Event`` for a Kafka record, plus ``key`` (the record key).

    Built once per record on the trigger's hot path, so it stores the record and the trigger
    only, keeps nuclio's constant fields on the class, reads the record's own fields (topic,
    partition, offset, key) through from it, and computes the rest (body, headers, size,
    timestamp, id) when a handler first reads them. ``vars()``-based nuclio-sdk code sees
    every field through :meth:`to_json`, which materialises them first.
    """

    method = None
    url = None
    num_shards = None
    type = None
    type_version = None
    version = None
    last_in_batch = False

    path = _Field("topic")
    topic = _Field("topic")
    shard_id = _Field("partition")
    offset = _Field("offset")
    key = _Field("key")

    @_Once
    def size(self) -> int:
        value = self._record.value
        return len(value) if value else 0

    @_Once
    def body(self) -> Any:
        body, ctype = _decode(self)
        self.__dict__.setdefault("content_type", ctype)
        return body

    @_Once
    def content_type(self) -> str:
        body, ctype = _decode(self)
        self.__dict__.setdefault("body", body)
        return ctype

    @_Once
    def headers(self) -> dict[str, str | bytes]:
        raw = self._record.headers
        return decode_headers(raw) if raw else {}

    @_Once
    def timestamp(self) -> dt.datetime:
        return timestamp_utc(self._record.timestamp)

    @_Once
    def id(self) -> str:
        return event_id(self.topic, self.shard_id, self.offset)

    @_Once
    def fields(self) -> dict[str, Any]:
        return {}

    def to_json(self) -> str:
        for name in (*EVENT_FIELDS, "key"):
            if name not in self.__dict__:
                self.__dict__[name] = getattr(self, name)
        return str(super().to_json())


EVENT_FIELDS = tuple(vars(Event()))
_new_event = KafkaEvent.__new__


def to_event(record: Any, trigger_name: str, trigger: TriggerInfo | None = None) -> KafkaEvent:
    """A nuclio-sdk ``Event`` (:class:`KafkaEvent`) for a kafka-python ``ConsumerRecord``.

    Besides nuclio's fields (``shard_id`` is the partition), ``event.key`` holds the record key
    (``bytes`` or ``None``). ``trigger`` lets a caller reuse one ``TriggerInfo`` per trigger.
    """
    event = _new_event(KafkaEvent)
    # tests/unit/triggers/kafka/test_kafka_event.py keeps the fields in step with nuclio-sdk;
    # the record's own fields are read through from it (KafkaEvent's _Field attributes).
    event._record = record
    event.trigger = trigger or TriggerInfo(KIND, trigger_name)
    timestamp_ms = record.timestamp
    if timestamp_ms is None or timestamp_ms < 0:
        event.timestamp = dt.datetime.now(dt.UTC)  # no broker time: when it arrived
    return event


def dead_letter_meta(
    record: Any, *, error: str, attempts: int, function: str, group: str
) -> list[tuple[str, bytes]]:
    """The ``x-tickrun-*`` headers: where the record came from and why it failed."""
    meta = {
        "error": error,
        "topic": record.topic,
        "partition": str(record.partition),
        "offset": str(record.offset),
        "timestamp": str(record.timestamp),
        "attempts": str(attempts),
        "function": function,
        "consumer-group": group,
        "failed-at": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
    }
    return [(DLQ_PREFIX + k, v.encode("utf-8")) for k, v in meta.items()]


def dead_letter_headers(
    record: Any, *, error: str, attempts: int, function: str, group: str
) -> list[tuple[str, bytes]]:
    """The original headers plus where the record came from and why it failed."""
    original = [(k, v if v is not None else b"") for k, v in record.headers or ()]
    meta = dead_letter_meta(record, error=error, attempts=attempts, function=function, group=group)
    return original + meta
