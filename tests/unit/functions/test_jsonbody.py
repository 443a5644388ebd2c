"""Event bodies decode to exactly what ``json.loads`` gives, fast path or not."""

from __future__ import annotations

import json
import math

import pytest

from tickrun.functions import jsonbody


@pytest.mark.parametrize(
    "raw",
    [
        b'{"open": "42298.61", "trades": 1234, "ok": true, "x": null}',
        b"[1, 2.5, -3e-7]",
        b'{"a": 1, "a": 2}',  # duplicate keys: the last wins in both
        b'{"big": 123456789012345678901234567890, "id": 9223372036854775808}',  # > 64 bits
        b'{"x": {"y": [123456789012345678901234, -98765432109876543210]}}',  # nested too
        b'[{"a": [1e300, -2.5e19]}]',  # huge floats that were floats stay floats
        b'{"v": NaN, "w": Infinity}',  # literals only the standard library takes
        '{"s": "\u00e9"}'.encode("utf-16"),  # UTF-16 with a BOM: only json.loads detects it
        '{"t": "caf\u00e9"}',
    ],
)
def test_same_values_as_json_loads(raw: bytes | str) -> None:
    got, expected = jsonbody.loads(raw), json.loads(raw)
    if isinstance(expected, dict) and "v" in expected:
        assert math.isnan(got["v"]) and got["w"] == math.inf
    else:
        assert got == expected
        assert type(got) is type(expected)


@pytest.mark.parametrize("raw", [b"{not json", b"", b'{"a": 1', b"\xff\xfe\x00"])
def test_invalid_json_raises_value_error(raw: bytes) -> None:
    with pytest.raises(ValueError):
        jsonbody.loads(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 5000 + b"]" * 5000,  # orjson stops at 1024 levels; json.loads raises RecursionError
        b'{"a":' * 2000 + b"1" + b"}" * 2000,
        b"[" * 200_000,  # unclosed as well: refused for its depth before its syntax
        b"9" * 4301,  # past sys.get_int_max_str_digits
        b'{"n": [1, -' + b"1" * 50_000 + b"]}",
    ],
)
def test_unsafe_json_is_refused_as_a_bad_request(raw: bytes) -> None:
    with pytest.raises(jsonbody.UnsafeJsonError) as info:
        jsonbody.loads(raw)
    # A ValueError too (Kafka keeps such records as bytes) and a 400 for the HTTP trigger.
    assert info.value.status == 400
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("raw", [b'{"s": "\xff"}', b"\xc0\xaf{}", b"\xed\xa0\x80"])
def test_invalid_utf8_is_not_json_and_not_unsafe(raw: bytes) -> None:
    with pytest.raises(ValueError) as info:
        jsonbody.loads(raw)
    assert not isinstance(info.value, jsonbody.UnsafeJsonError)


def test_nesting_within_limits_still_decodes() -> None:
    raw = b"[" * 500 + b"1" + b"]" * 500
    assert jsonbody.loads(raw) == json.loads(raw)
