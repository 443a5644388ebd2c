"""Mapping handler return values to responses, as nuclio-sdk does."""

from __future__ import annotations

import nuclio_sdk
import numpy as np
import pytest

from tickrun.functions.results import exception_result, to_result


def test_numpy_values_serialise() -> None:
    result = to_result({"p": np.float64(0.25), "n": np.int64(3), "a": np.array([1, 2])})
    assert result.json() == {"p": 0.25, "n": 3, "a": [1, 2]}


def test_none_is_empty_200() -> None:
    result = to_result(None)
    assert (result.status, result.body) == (200, b"")


def test_response_with_bytes_body_keeps_content_type() -> None:
    out = nuclio_sdk.Response(body=b"\x89PNG", content_type="image/png", status_code=200)
    result = to_result(out)
    assert result.body == b"\x89PNG" and result.content_type == "image/png"


def test_value_is_kept_for_publishing() -> None:
    assert to_result({"signal": 1}).value == {"signal": 1}
    assert to_result((201, {"ok": True})).value == {"ok": True}


def test_exception_with_response() -> None:
    result = exception_result(nuclio_sdk.ExceptionWithResponse(422, {"bad": "input"}))
    assert result.status == 422
    assert result.json() == {"bad": "input"}
    assert result.content_type == "application/json"


@pytest.mark.parametrize("status", ["201", 201])
def test_tuple_status_coerced(status: object) -> None:
    assert to_result((status, "x")).status == 201
