"""Durations: Nuclio writes Go strings (``"10s"``, ``"1m30s"``); tickrun keeps seconds."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer

_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration_s(value: object) -> float:
    """Seconds from a number (taken as seconds) or a Go duration string."""
    if isinstance(value, bool):
        raise ValueError("a duration must be a number of seconds or a string such as '10s'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            raise ValueError("empty duration")
        try:
            seconds = float(text)
        except ValueError:
            pos = 0
            seconds = 0.0
            for match in _PART.finditer(text):
                if match.start() != pos:
                    break
                seconds += float(match.group(1)) * _UNIT_S[match.group(2)]
                pos = match.end()
            if pos != len(text):
                raise ValueError(
                    f"invalid duration {value!r}: use a Go duration such as '10s', '1m30s', '500ms'"
                ) from None
    else:
        raise ValueError("a duration must be a number of seconds or a string such as '10s'")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def format_duration(seconds: float) -> str:
    """A Go duration string Nuclio reads back (``10s``, ``0.5s``)."""
    return f"{int(seconds)}s" if float(seconds).is_integer() else f"{seconds:g}s"


DurationS = Annotated[
    float,
    BeforeValidator(parse_duration_s),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
]
"""A duration in seconds that also accepts Nuclio's Go duration strings."""
