"""Record → event mapping and the JSON decoding rule."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from tests.support.kafka_units import Record
from tickrun.triggers.kafka.event import (
    DLQ_PREFIX,
    dead_letter_headers,
    decode_value,
    timestamp_utc,
    to_event,
)

KLINE = b'{"open_time": 1704067200000, "close": "42298.61"}'


@pytest.mark.parametrize(
    ("value", "ctype", "body", "out_ctype"),
    [
        (KLINE, None, {"open_time": 1704067200000, "close": "42298.61"}, "application/json"),
        (b"  [1, 2]", None, [1, 2], "application/json"),
        (b"\n\t {}", None, {}, "application/json"),
        (b"   ", None, b"   ", "application/octet-stream"),
        (b"42", None, b"42", "application/octet-stream"),  # scalars stay bytes
        (b'"x"', None, b'"x"', "application/octet-stream"),
        (b"{not json", None, b"{not json", "application/octet-stream"),
        (b"\x00\x01", None, b"\x00\x01", "application/octet-stream"),
        (b"", None, b"", "application/octet-stream"),
        (None, None, b"", "application/octet-stream"),
        (b"42", "application/json", 42, "application/json"),
        (KLINE, "text/plain", KLINE, "text/plain"),  # the header wins
        (b'{"a":1}', "application/vnd.kline+json", {"a": 1}, "application/vnd.kline+json"),
        (b"{bad", "application/json", b"{bad", "application/json"),
    ],
)
def test_decode_rule(value: bytes | None, ctype: str | None, body: object, out_ctype: str) -> None:
    assert decode_value(value, ctype) == (body, out_ctype)


def test_timestamp_keeps_milliseconds_in_utc() -> None:
    ts = timestamp_utc(1704067259999)
    assert ts == dt.datetime(2024, 1, 1, 0, 0, 59, 999000, tzinfo=dt.UTC)
    assert ts.tzinfo is dt.UTC


def test_event_fields() -> None:
    rec = Record(
        "klines",
        3,
        1234,
        1704067200123,
        b"BTCUSDT",
        KLINE,
        [("source", b"binance"), ("blob", b"\xff\xfe"), ("empty", None)],
    )
    event = to_event(rec, "ticks")
    assert event.body == {"open_time": 1704067200000, "close": "42298.61"}
    assert event.key == b"BTCUSDT"
    assert event.headers == {"source": "binance", "blob": b"\xff\xfe", "empty": ""}
    assert (event.topic, event.shard_id, event.offset) == ("klines", 3, 1234)
    assert event.id == "klines/3/1234"
    assert event.timestamp == dt.datetime(2024, 1, 1, 0, 0, 0, 123000, tzinfo=dt.UTC)
    assert (event.trigger.kind, event.trigger.name) == ("kafka-cluster", "ticks")
    assert event.size == len(KLINE)


def test_events_have_exactly_nuclio_sdks_attributes_plus_key() -> None:
    # to_event stores a few fields and computes the rest on first read (it is hot): a new
    # nuclio-sdk attribute must show up here rather than be missing on Kafka events.
    from nuclio_sdk import Event

    event = to_event(Record("t", 0, 5, 1704067200123, None, b"{}", []), "ticks")
    assert isinstance(event, Event)
    nuclio = vars(Event())
    per_record = {"body", "content_type", "trigger", "id", "path", "size", "timestamp"}
    per_record |= {"shard_id", "offset", "topic"}
    for name, default in nuclio.items():
        if name not in per_record:
            assert getattr(event, name) == default, name
    # nuclio-sdk's vars()-based methods see every field, with the values a handler reads.
    decoded = json.loads(event.to_json())
    assert set(decoded) == set(nuclio) | {"key"}
    assert decoded["body"] == {} and decoded["content_type"] == "application/json"
    assert decoded["id"] == "t/0/5" and decoded["timestamp"] == str(event.timestamp)
    assert event.fields == {}
    assert event.fields is not to_event(Record("t", 0, 6, 0, None, b"", []), "x").fields


def test_lazy_fields_are_settable_and_computed_once() -> None:
    event = to_event(Record("t", 0, 5, 0, None, KLINE, [("h", b"v")]), "ticks")
    first = event.body
    assert event.body is first  # decoded once, then a plain attribute
    event.body = {"replaced": True}
    assert event.body == {"replaced": True}
    assert event.content_type == "application/json"  # still from the record
    event.headers["extra"] = "x"
    assert event.headers == {"h": "v", "extra": "x"}
    other = to_event(Record("t", 0, 6, 0, None, KLINE, []), "ticks")
    other.content_type = "text/plain"  # set before the body was read: body still decodes
    assert other.body == {"open_time": 1704067200000, "close": "42298.61"}


def test_a_record_without_a_timestamp_gets_its_arrival_time() -> None:
    before = dt.datetime.now(dt.UTC)
    event = to_event(Record("t", 0, 5, -1, None, b"", []), "ticks")
    assert before <= event.timestamp <= dt.datetime.now(dt.UTC)


def test_content_type_header_controls_decoding() -> None:
    rec = Record("t", 0, 0, 0, None, b"7", [("content-type", b"application/json")])
    assert to_event(rec, "k").body == 7


def test_dead_letter_headers_keep_originals_and_add_metadata() -> None:
    rec = Record("klines", 2, 99, 1704067200000, b"k", b"v", [("trace", b"abc")])
    headers = dead_letter_headers(rec, error="ValueError: bad", attempts=4, function="f", group="g")
    assert headers[0] == ("trace", b"abc")
    meta = {k.removeprefix(DLQ_PREFIX): v.decode() for k, v in headers[1:]}
    assert meta["error"] == "ValueError: bad"
    assert (meta["topic"], meta["partition"], meta["offset"]) == ("klines", "2", "99")
    assert meta["attempts"] == "4"
    assert meta["consumer-group"] == "g"


def test_record_fields_read_through_from_the_record_and_stay_settable() -> None:
    event = to_event(Record("t", 3, 5, 0, b"k", b"value", []), "ticks")
    assert (event.topic, event.path, event.shard_id, event.offset) == ("t", "t", 3, 5)
    assert (event.key, event.size) == (b"k", 5)
    event.offset = 9  # a plain attribute for a handler that sets it
    assert event.offset == 9 and event.shard_id == 3
